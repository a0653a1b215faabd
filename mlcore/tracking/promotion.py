"""The champion/challenger gate: a pure decision on one test metric."""
from __future__ import annotations

from typing import NamedTuple


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


class Decision(NamedTuple):
    alias: str  # 'champion' or 'challenger'
    reason: str  # one line: why


def decide(metric: str, new_value: float, champion_value: float | None, min_delta: float,
           baseline_value: float | None = None, require_beat_baseline: bool = True) -> Decision:
    """The gate with the baseline first: with `require_beat_baseline` the new value must be
    strictly above `baseline_value` (a tie never promotes) before `decide_alias` compares it with
    the champion; below it the model is 'challenger', even when there is no champion yet.
    Without `require_beat_baseline` (or without a baseline value) it is `decide_alias` alone."""
    if require_beat_baseline and baseline_value is not None and not new_value > baseline_value:
        relation = "below" if new_value < baseline_value else "tied with"
        sign = "<" if new_value < baseline_value else "="
        return Decision("challenger", f"{relation} baseline: {metric} {new_value:.4f} {sign} baseline "
                                      f"{baseline_value:.4f}")
    alias = decide_alias(new_value, champion_value, min_delta)
    if champion_value is None:
        reason = f"no champion yet: {metric} {new_value:.4f}"
    else:
        verb = "beats" if alias == "champion" else "does not beat"
        reason = (f"{verb} the champion: {metric} {new_value:.4f} vs {champion_value:.4f}"
                  + (f" + min_delta {min_delta:g}" if min_delta else ""))
    if baseline_value is not None:
        reason += f"; baseline {baseline_value:.4f}" + ("" if require_beat_baseline else " (not required)")
    return Decision(alias, reason)
