"""prepare's result for either modality: which one the data is (prepare.modality, or decided
from the input), the cleaned rows, the splits, and their report."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mlcore.config import PrepareConfig
from mlcore.data import cleaning


@dataclass
class Prepared:
    modality: str  # "text" or "image"
    reason: str  # why: "prepare.modality", or what in the input decided it
    cleaned: cleaning.CleanResult
    splits: dict[str, pd.DataFrame]

    def report(self) -> dict:
        """reports/data_report.json."""
        if self.modality == "image":
            from mlcore.data import images
            body = images.image_report(self.splits, self.cleaned.stats)
        else:
            body = cleaning.report(self.splits, self.cleaned.unlabelled, self.cleaned.stats)
        return {"modality": self.modality, "modality_reason": self.reason} | body

    def summary(self) -> dict:
        """The flat numbers the prepare run logs."""
        if self.modality == "image":
            from mlcore.data import images
            return images.image_summary(self.splits, self.cleaned)
        return cleaning.summary(self.splits, self.cleaned)


def prepare(p: PrepareConfig) -> Prepared:
    """Read, clean and split prepare.input as text or images."""
    from mlcore.data import images  # Pillow only when the data may be images

    modality, reason = images.detect_modality(p)
    if modality == "image":
        return Prepared(modality, reason, *images.prepare_image_splits(p))
    return Prepared(modality, reason, *cleaning.prepare_splits(p))
