"""One image file's bytes to the stored pixels: the one conversion that prepare, serving and batch
scoring share, so that a model sees in use exactly the pixels it was trained on."""
from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mlcore.errors import UserError, os_reason

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Modes without colour: a dataset of only these is stored with one channel.
GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_SIXTEEN_BIT = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_ALPHA = {"RGBA", "RGBa", "LA", "La", "PA"}
MAX_AUTO_SIZE = 256
# Pillow has no common base class for a damaged, truncated or hostile file; these are what its
# decoders raise on one (SyntaxError: "broken PNG file", struct.error: short headers).
_BROKEN = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error,
           ZeroDivisionError, Image.DecompressionBombError, Image.DecompressionBombWarning)
FIX = "Replace the file with a complete PNG, JPEG, BMP, GIF, WebP or TIFF image, or delete it."


def stored_mode(channels: int) -> str:
    if channels not in (1, 3):
        raise UserError(f"images are stored with 1 (grey) or 3 (RGB) channels, not {channels}.")
    return "L" if channels == 1 else "RGB"


def _why(err: BaseException) -> str:
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return (f"it has more pixels than Pillow's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS = "
                f"{Image.MAX_IMAGE_PIXELS}), so it is refused unread ({err})")
    if isinstance(err, UnidentifiedImageError):
        return "it is not an image file that Pillow can read"
    if isinstance(err, OSError) and err.errno:  # the file system refused, not the decoder
        return os_reason(err)
    text = " ".join(str(err).split()) or type(err).__name__
    return f"it is truncated or damaged ({text[:200]})"


def _open(data: bytes | Path, source: str, load: bool) -> Image.Image:
    """Opened, and with `load` verified and decoded; every failure a UserError naming `source`."""
    try:
        with warnings.catch_warnings():
            # Between MAX_IMAGE_PIXELS and twice that Pillow only warns; refuse those files alike.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if not load:
                return Image.open(data)  # reads the header only: size and mode
            with Image.open(io.BytesIO(data)) as im:
                im.verify()  # checksums and structure (PNG), before any pixel is decoded
            im = Image.open(io.BytesIO(data))
            im.load()
            # A phone photo stores its rotation as a tag: apply it, as every viewer does.
            ImageOps.exif_transpose(im, in_place=True)
            return im
    except _BROKEN as err:
        raise UserError(f"{source}: could not be read as an image: {_why(err)}. {FIX}") from None


def probe(path: Path, source: str) -> tuple[int, int, str]:
    """(width, height, mode) from the header alone: cheap, for choosing the stored size and channels."""
    with _open(path, source, load=False) as im:
        return im.width, im.height, im.mode


def _to_mode(im: Image.Image, channels: int) -> Image.Image:
    """The stored mode: transparency composited on white, 16-bit grey scaled to 8 bits, and
    palette, CMYK and other colour spaces converted by Pillow."""
    if im.mode in _SIXTEEN_BIT:
        # 65535 is white: (v + 128) // 257 maps 0..65535 onto 0..255, rounded.
        wide = np.clip(np.asarray(im), 0, 65535).astype(np.uint32)
        im = Image.fromarray(((wide + 128) // 257).astype(np.uint8), "L")
    elif im.mode in _ALPHA or "transparency" in im.info:
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    target = stored_mode(channels)
    return im if im.mode == target else im.convert(target)


def fit(im: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    """Resized so that it covers `size` (height, width), its short side onto the target, then
    centre-cropped: bilinear with reducing_gap None, so the same input gives the same pixels."""
    if size is None or im.size == (size[1], size[0]):
        return im
    height, width = size
    scale = max(width / im.width, height / im.height)
    new = (max(width, round(im.width * scale)), max(height, round(im.height * scale)))
    im = im.resize(new, Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (new[0] - width) // 2, (new[1] - height) // 2
    return im.crop((left, top, left + width, top + height))


def as_array(im: Image.Image, channels: int) -> np.ndarray:
    """uint8 height × width × channels, C-contiguous."""
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8).reshape(im.height, im.width, channels))


def decode_image(data: bytes, channels: int, size: tuple[int, int] | None, source: str) -> np.ndarray:
    """An image file's bytes as uint8 height × width × channels (1: grey "L", 3: "RGB"), resized and
    centre-cropped to `size` (height, width) when given. A corrupt, truncated, non-image or
    decompression-bomb file raises a UserError naming `source`."""
    im = _open(data, source, load=True)
    try:
        return as_array(fit(_to_mode(im, channels), size), channels)
    except _BROKEN as err:  # a file whose header and checksums pass can still fail to convert
        raise UserError(f"{source}: could not be read as an image: {_why(err)}. {FIX}") from None


def choose_size(sizes: list[tuple[int, int]], image_size: int | str) -> int:
    """The stored square side from the (width, height) of every image: prepare.image_size, or for
    auto the native size when all images share one square size up to 256 px, else the median
    short side (at most 256): big enough to keep detail, small enough to train on a CPU."""
    if image_size != "auto":
        return int(image_size)
    distinct = set(sizes)
    if len(distinct) == 1:
        width, height = next(iter(distinct))
        if width == height <= MAX_AUTO_SIZE:
            return width
    return min(MAX_AUTO_SIZE, int(np.median([min(s) for s in sizes])))
