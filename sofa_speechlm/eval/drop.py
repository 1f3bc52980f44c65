"""Average performance drop of a variant against its baseline (the SOFA paper's geometric mean).

    drop = (prod_i variant_i / baseline_i) ** (1 / n) - 1     over lower-is-better metrics i = 1..n

A geometric mean, so a metric that doubles and one that halves cancel, whatever their scales.
"""

from __future__ import annotations

import math
from typing import Sequence

# The stage-6 metrics the drop averages over (all lower is better), in the paper's column order.
DROP_METRICS = ("text_ppl", "speech_ppl", "asr_wer", "tts_cer")


def performance_drop(baseline: Sequence[float], variant: Sequence[float]) -> float:
    """The average drop as a fraction (2.1119 for the paper's OPT-350m vanilla W4A4 SmoothQuant row)."""
    baseline, variant = list(baseline), list(variant)
    if len(baseline) != len(variant) or not baseline:
        raise ValueError(f"performance_drop needs two equally long, non-empty metric lists, got {len(baseline)} and {len(variant)}")
    for name, values in (("baseline", baseline), ("variant", variant)):
        for value in values:
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"performance_drop: {name} metric {value!r} is not a positive finite number")
    log_ratio = sum(math.log(v / b) for b, v in zip(baseline, variant)) / len(baseline)
    return math.exp(log_ratio) - 1.0


def metric_drop(baseline: dict, variant: dict, metrics: Sequence[str] = DROP_METRICS) -> tuple[float | None, list[str]]:
    """(drop, metric names used) over the `metrics` both score dicts have; (None, []) when none is shared."""
    shared = [m for m in metrics if m in baseline and m in variant]
    if not shared:
        return None, []
    return performance_drop([baseline[m] for m in shared], [variant[m] for m in shared]), shared
