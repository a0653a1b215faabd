"""The champion/challenger gate: a pure decision on one test metric."""
from __future__ import annotations


def decide_alias(new_value: float, champion_value: float | None, min_delta: float) -> str:
    """'champion' when there is none or the new model beats it by at least min_delta, else 'challenger'."""
    if champion_value is None:
        return "champion"
    return "champion" if new_value >= champion_value + min_delta and new_value > champion_value else "challenger"
