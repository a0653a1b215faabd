"""Scoring the chunks a run has not finished yet, with any `predict(DataFrame) -> DataFrame`."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mlcore.errors import UserError
from mlcore.scoring.store import ChunkStore

# predict gets a one-column frame ({"text": [...]}, or {"image": [bytes]}) and returns one row per
# input: `label` and, from a classifier that gives them, one `score_<class>` column per class.
Predict = Callable[[pd.DataFrame], pd.DataFrame | pd.Series]
# The model's input frame for a chunk's values (texts, or image paths).
Frame = Callable[[list], pd.DataFrame]


def text_frame(texts: list) -> pd.DataFrame:
    return pd.DataFrame({"text": pd.Series(texts, dtype=object)})


@dataclass(frozen=True)
class Progress:
    chunks: int
    resumed: int  # chunks a killed run had finished
    scored_rows: int  # rows scored by this run (not resumed)
    seconds: float

    @property
    def rows_per_s(self) -> float | None:
        return self.scored_rows / self.seconds if self.scored_rows and self.seconds > 0 else None


def as_results(out: pd.DataFrame | pd.Series, n: int, where: str) -> pd.DataFrame:
    """The model's answer for n texts as a frame with a `label` column, or a UserError saying
    what kind of model it needs (the URI's, named in `where`)."""
    if isinstance(out, pd.Series):  # a model without scores: labels only
        out = out.rename("label").to_frame()
    if not isinstance(out, pd.DataFrame) or "label" not in out.columns or len(out) != n:
        raise UserError(f"{where}: the model returned {type(out).__name__} "
                        f"{list(getattr(out, 'columns', []))} of {len(out) if hasattr(out, '__len__') else '?'} rows "
                        f"for {n} texts; batch scoring needs a classifier whose predict(df, params="
                        f"{{'return_scores': True}}) returns a 'label' column, one row per text.")
    return out.reset_index(drop=True)


def score_chunks(texts: pd.Series, plan: list[np.ndarray], store: ChunkStore, predict: Predict,
                 where: str, progress: bool = True, frame: Frame = text_frame) -> Progress:
    """Score each chunk of `plan` not yet in `store` (opened: ChunkStore.open) and save it there as
    soon as it is done. `texts` is indexed by row position; `where` names the model in errors;
    `frame` makes the model's input from a chunk's values."""
    done = store.finished()
    todo = [i for i in range(len(plan)) if i not in done]
    resumed_rows = sum(len(plan[i]) for i in done if i < len(plan))
    quiet = {} if progress else {"disable": True}  # else TQDM_DISABLE decides, as everywhere
    bar = tqdm(total=len(texts), initial=resumed_rows, unit="row", desc="scoring", mininterval=1.0, **quiet)
    start, scored = time.perf_counter(), 0
    with bar:
        for index in todo:
            rows = plan[index]
            batch = frame(texts.loc[rows].tolist())
            store.save(index, rows, as_results(predict(batch), len(rows), where))
            scored += len(rows)
            bar.update(len(rows))
    return Progress(len(plan), len(done), scored, time.perf_counter() - start)


def result_columns(results: pd.DataFrame, predict: Callable[[], Predict], where: str,
                   frame: Frame = text_frame) -> list[str]:
    """The columns the model answers with (`label`, then its scores): from the saved results, or,
    when there are none (every row bad, or an empty input), from the model's answer to no rows,
    so an output's columns do not depend on its rows."""
    if len(results.columns):
        return list(results.columns)
    return list(as_results(predict()(frame([])), 0, where).columns)
