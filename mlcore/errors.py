"""User-facing errors: printed as one paragraph, no traceback, non-zero exit.

Two boundaries, so that errors are not caught case by case:
- `reading(path, what, fix)` wraps every read of a user's file (data, params, checkpoint): any
  decoder, decompressor, parser or OS failure inside becomes a UserError naming the file;
  `path_problem(path)` says, before anything opens a path, why the OS would refuse it;
- `entry_point` wraps every command's main(): a UserError is printed as its one paragraph with
  exit code 2; anything else is a bug, shown with its traceback, one line saying so, and a copy
  in logs/errors.log.
"""
from __future__ import annotations

import datetime
import errno
import functools
import logging
import os
import stat
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

BUG_LOG = Path("logs/errors.log")


class UserError(Exception):
    """Bad input that the user can fix: a file, key, column or row is wrong."""

    exit_code = 2


def _decode_errors() -> tuple[type[BaseException], ...]:
    """Everything a reader of a damaged, truncated, mis-encoded or mis-named file raises.
    Imported lazily: the optional decoders may be absent, and this module stays import-light."""
    import lzma
    import zipfile
    import zlib

    found: list[type[BaseException]] = [
        OSError,  # unreadable, a directory, bad gzip (BadGzipFile), a truncated read
        EOFError,  # bz2/lzma/gzip streams cut short
        ValueError,  # UnicodeDecodeError, JSON, pandas' ParserError/EmptyDataError, ArrowInvalid
        zlib.error, lzma.LZMAError, zipfile.BadZipFile,
        ImportError,  # pandas: "Missing optional dependency 'zstandard'" for a .zst file
    ]
    for module, name in [("yaml", "YAMLError"), ("pyarrow", "ArrowException"),
                         ("zstandard", "ZstdError"), ("safetensors", "SafetensorError")]:
        try:
            found.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, UnicodeDecodeError):
        text = (f"it is not {err.encoding} text (byte {err.object[err.start:err.start + 1]!r} at "
                f"offset {err.start})")
    elif isinstance(err, EOFError):
        text = f"the compressed stream ends early, so the file is truncated ({text})"
    return text if len(text) <= 300 else text[:297] + "..."


@contextmanager
def reading(path: str | Path, what: str, fix: str) -> Iterator[None]:
    """Any failure to read or decode `path` inside the block becomes one UserError:
    '<path>: could not be read as <what>: <cause>. <fix>'. A UserError raised inside passes as it is."""
    try:
        yield
    except UserError:
        raise
    except _decode_errors() as err:
        raise UserError(f"{path}: could not be read as {what}: {_short(err)}. {fix}") from None


def path_problem(path: str | Path, expect: str = "file") -> str | None:
    """Why the operating system will not let a reader have `path` as a `expect` ("file", or "dir"
    with every file under it), as '<culprit>: <reason>'; None when it will, and when nothing is
    there at all (the readers say "not found", with their own advice)."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):  # the link is there, what it points at is not
            return f"{path}: a symbolic link to {os.readlink(path)!r}, which does not exist (a broken link)"
        return None
    except OSError as err:
        return f"{path}: {os_reason(err, 'get to it through the folders on its path')}"
    if stat.S_ISDIR(info.st_mode) != (expect == "dir"):
        return f"{path}: " + ("is a directory, not a file" if expect == "file" else "is a file, not a directory")
    if expect == "dir":
        return _tree_problem(path)
    return _file_problem(path, info)


def _file_problem(path: Path, info: os.stat_result) -> str | None:
    if not stat.S_ISREG(info.st_mode):
        return f"{path}: not a regular file (a pipe, socket or device)"
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as err:
        return f"{path}: {os_reason(err, 'read it')}"
    return None


def _tree_problem(top: Path) -> str | None:
    """The first file or folder under `top` that cannot be listed, reached or read."""
    refused: list[OSError] = []
    # Broken and looping links are listed as files; links to folders are not walked into.
    for folder, _dirs, files in os.walk(top, onerror=refused.append):
        for name in files:
            if problem := path_problem(Path(folder) / name, "file"):
                return problem
    if refused:
        return f"{refused[0].filename}: {os_reason(refused[0], 'list it')}"
    return None


def os_reason(err: OSError, action: str = "read it") -> str:
    """An OS error in words, e.g. 'a loop of symbolic links ([Errno 40] ...)'."""
    reasons = {
        errno.ELOOP: "a loop of symbolic links, which the system gives up following",
        errno.ENOTDIR: "a part of its path is a file, not a directory",
        errno.EACCES: f"permission denied: this user (uid {os.getuid()}) may not {action}",
        errno.EPERM: f"operation not permitted: this user (uid {os.getuid()}) may not {action}",
    }
    code = f"[Errno {err.errno}] {err.strerror}" if err.errno else str(err)
    return f"{reasons[err.errno]} ({code})" if err.errno in reasons else code


def entry_point(main: Callable[..., int]) -> Callable[..., int]:
    """The one boundary between a command and its user (stage CLIs, the flow, data and deploy CLIs)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return err.exit_code
        except Exception as err:  # noqa: BLE001 - the boundary: everything else is a bug
            log = _log_bug(err)
            traceback.print_exc()
            print(f"error: this is a bug in the pipeline, not a problem with your data or params "
                  f"({type(err).__name__}). The traceback is above{f' and in {log}' if log else ''}; "
                  f"please report it with that file and your params.yaml.", file=sys.stderr)
            return 1

    return wrapper


def _log_bug(err: Exception) -> Path | None:
    try:
        BUG_LOG.parent.mkdir(parents=True, exist_ok=True)
        with BUG_LOG.open("a", encoding="utf-8") as log:
            log.write(f"--- {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')} "
                      f"{' '.join(sys.argv)}\n{''.join(traceback.format_exception(err))}")
        return BUG_LOG
    except OSError:
        return None


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a failed run's exception with its traceback; for bad input the
    one-paragraph message is the whole story, so the traceback is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], UserError):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_user_error_tracebacks(loggers: tuple[str, ...] = ("prefect.task_runs", "prefect.flow_runs")) -> None:
    """Drop the traceback from these loggers' records of a UserError (once per logger)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTracebackForUserErrors) for f in logger.filters):
            logger.addFilter(_NoTracebackForUserErrors())
