"""The champion/challenger gate: a pure decision on one test metric."""
from __future__ import annotations


def decide_alias(new_value: float, champion_value: float | None, min_delta: float) -> str:
    """'champion' when there is none yet or the new value beats the champion's by at least
    `min_delta` (higher is better), else 'challenger'.

    A tie never promotes: with `min_delta` 0 the new value must be strictly higher, so an
    equal score leaves the current champion its alias and the new model is 'challenger'.
    """
    if champion_value is None:
        return "champion"
    bar = champion_value + min_delta
    # min_delta 0 (or too small to move it) leaves the bar at the champion's value: it must be beaten outright.
    beats = new_value > champion_value if bar <= champion_value else new_value >= bar
    return "champion" if beats else "challenger"
