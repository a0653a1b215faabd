"""MLflow's advice that does not apply here, kept out of the users' output."""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

TYPE_HINTS = "type hints to the `predict` method"


@contextlib.contextmanager
def without_type_hint_advice() -> Iterator[None]:
    """MLflow advises type hints on predict() whenever the model is logged or loaded, from a
    warnings filter context of its own that `filterwarnings` cannot reach. Our predict() takes
    DataFrames, Series and lists on purpose (its signature documents the input), so the advice
    is dropped where it is shown; every other warning is shown as usual."""
    with warnings.catch_warnings():
        shown = warnings.showwarning
        warnings.showwarning = lambda message, *rest, **kw: (
            None if TYPE_HINTS in str(message) else shown(message, *rest, **kw))
        yield
