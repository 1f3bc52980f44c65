"""The average performance drop of design.md, checked against the SOFA paper's tables."""

import pytest

from sofa_speechlm.eval import performance_drop
from sofa_speechlm.eval.drop import metric_drop


def test_paper_row_opt350m_vanilla_w4a4_smoothquant():
    drop = performance_drop([13.13, 43.10, 8.42, 17.56], [36.74, 75.38, 40.17, 70.53])
    assert round(100 * drop, 2) == 211.19


def test_paper_table2_lora_row_over_three_metrics():
    # OPT-350m vanilla LoRA against vanilla Full (Table 2: 163.00%), no TTS column.
    assert round(100 * performance_drop([13.13, 43.10, 8.42], [17.87, 51.65, 93.91]), 2) == 163.00


def test_no_change_is_zero_and_improvement_is_negative():
    assert performance_drop([2.0, 3.0], [2.0, 3.0]) == pytest.approx(0.0)
    assert performance_drop([2.0, 4.0], [1.0, 2.0]) == pytest.approx(-0.5)


def test_metric_drop_uses_only_shared_metrics():
    drop, used = metric_drop({"text_ppl": 10.0, "asr_wer": 5.0}, {"text_ppl": 20.0, "tts_cer": 3.0})
    assert used == ["text_ppl"] and drop == pytest.approx(1.0)
    assert metric_drop({"text_ppl": 1.0}, {"asr_wer": 1.0}) == (None, [])


@pytest.mark.parametrize("baseline, variant", [([1.0], [1.0, 2.0]), ([], []), ([0.0], [1.0]), ([1.0], [float("nan")])])
def test_bad_input(baseline, variant):
    with pytest.raises(ValueError, match="performance_drop"):
        performance_drop(baseline, variant)
