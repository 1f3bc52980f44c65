"""bin.report over a made-up experiment dir: the paper's Table 10 rows, missing and malformed scores,
reference rows, latency, outliers, compare mode, the tokenizer-PTQ section; RESULTS.md and results.json agree."""

import json
from pathlib import Path

import numpy as np
import pytest

from sofa_speechlm.bin import report
from sofa_speechlm.eval.report import DROP_METRICS, ScoresError, fmt_drop, fmt_metric, read_scores

# OPT-350m rows of the SOFA paper's Table 10: (attention, variant, method, setting, metrics)
TABLE10 = [
    ("softmax", "fp", None, "W16A16", (13.13, 43.10, 8.42, 17.56)),
    ("softmax", "smoothquant_w8a8", "smoothquant", "W8A8", (13.17, 43.14, 8.47, 17.71)),
    ("softmax", "smoothquant_w4a4", "smoothquant", "W4A4", (36.74, 75.38, 40.17, 70.53)),
    ("sofa", "fp", None, "W16A16", (13.47, 43.34, 9.81, 17.31)),
    ("sofa", "smoothquant_w4a4", "smoothquant", "W4A4", (23.48, 62.17, 36.22, 40.83)),
]
EXPECTED_DROPS = {("softmax", "smoothquant_w8a8"): "0.46%", ("softmax", "smoothquant_w4a4"): "211.19%", ("sofa", "smoothquant_w4a4"): "116.02%"}


def lm_name(attention, finetune="full"):
    return f"lm_opt350m_{'sofa' if attention == 'sofa' else 'vanilla'}_{finetune}"


def write_scores(expdir: Path, attention, variant, method, setting, metrics, finetune="full", **extra):
    lm = lm_name(attention, finetune)
    lm_dir = expdir / lm
    (lm_dir / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
    (lm_dir / "config.yaml").write_text("lm: sofa_opt\n")
    if variant != "fp":
        (lm_dir / "ptq" / variant).mkdir(parents=True, exist_ok=True)
        (lm_dir / "ptq" / variant / ".done").write_text("")
    scores = {
        "lm": lm, "variant": variant, "attention": attention, "finetune": finetune, "model_type": "opt",
        "method": method, "setting": setting, "execution": "fp" if variant == "fp" else "simulated",
        "metrics": dict(zip(DROP_METRICS, metrics)), "not_computed": {},
        "subsets": {"asr": {"scored": 50, "of": 50}, "tts": {"scored": 20, "of": 50}},
        "decoding": {"asr_beam_size": 1, "whisper_model": "tiny.en"}, **extra,
    }
    path = lm_dir / "eval" / variant / "scores.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scores))
    return path


def write_outliers(expdir: Path, attention, peak):
    out = expdir / lm_name(attention) / "eval" / "fp"
    layers = [peak / 4, peak / 2, peak]
    per_layer = {m: {"max_inf_norm": layers, "mean_kurtosis": [3.0, 5.0, 9.0]} for m in ("text", "speech", "speech+text")}
    summary = {m: {"max_inf_norm": peak, "max_inf_norm_module": "layers.2.fc2", "mean_kurtosis": 5.5, "max_kurtosis": 9.0, "sequences": 4}
               for m in ("text", "speech", "speech+text")}
    tokens = ["<sos/eos>", "<startofspeech>", "\u2581\u4e00", "\u4e01", "<generatetext>", "\u2581cat"]
    weights = np.tril(np.ones((6, 6))) / np.arange(1, 7)[:, None] * (0.9 if attention == "sofa" else 1.0)
    np.savez_compressed(out / "attention_maps.npz", asr=weights.astype(np.float32))
    (out / "outliers.json").write_text(json.dumps({
        "lm": lm_name(attention), "variant": "fp", "attention": attention, "finetune": "full", "model_type": "opt",
        "num_layers": 3, "per_layer": per_layer, "summary": summary, "modules": {},
        "attention_maps": {"file": "attention_maps.npz", "layer": 2, "tasks": {"asr": {"utt_id": "u1", "tokens": tokens}}},
    }))


@pytest.fixture
def expdir(tmp_path):
    exp = tmp_path / "exp"
    for attention, variant, method, setting, metrics in TABLE10:
        latency = {"latency": {"ms_per_token_bs1": 10.0 if variant == "fp" else 8.0, "execution": "real"}} if attention == "sofa" else {}
        write_scores(exp, attention, variant, method, setting, metrics, **latency)
    # TTS CER not computed for one variant; a variant never evaluated; a file of another schema
    path = write_scores(exp, "sofa", "smoothquant_w8a8", "smoothquant", "W8A8", (13.50, 43.39, 9.88, 17.38))
    scores = json.loads(path.read_text())
    del scores["metrics"]["tts_cer"]
    scores["not_computed"] = {"tts_cer": "no Whisper model at /nowhere"}
    path.write_text(json.dumps(scores))
    (exp / lm_name("sofa") / "ptq" / "rtn_w4a16").mkdir(parents=True)
    (exp / lm_name("sofa") / "ptq" / "rtn_w4a16" / ".done").write_text("")
    bad = exp / lm_name("softmax") / "eval" / "omniquant_w4a4" / "scores.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"model": "x", "wer": 3.0}))
    for name, cer in (("ground_truth", 4.2), ("resynthesis", 9.7)):
        ref = exp / "eval" / "reference" / name / "scores.json"
        ref.parent.mkdir(parents=True)
        ref.write_text(json.dumps({"lm": None, "variant": name, "metrics": {"tts_cer": cer}, "subsets": {"tts": {"scored": 20, "of": 50}}}))
    write_outliers(exp, "sofa", 7.46)
    write_outliers(exp, "softmax", 24.95)
    return exp


def main_table(markdown: str) -> list:
    return table_rows(markdown, "| Model |")


def table_rows(markdown: str, header_start: str) -> list:
    """The cells of the first Markdown table whose header line starts with `header_start`."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_report_reproduces_table10_drops_and_agrees_with_json(expdir, tmp_path):
    report.main(["--exp_dir", str(expdir)])
    results = json.loads((expdir / "results.json").read_text())
    markdown = (expdir / "RESULTS.md").read_text()
    rows = {(r["attention"], r["variant"]): r for r in results["rows"]}
    for key, expected in EXPECTED_DROPS.items():
        assert fmt_drop(rows[key]["avg_drop"]) == expected
    assert rows["softmax", "fp"]["avg_drop"] is None and rows["sofa", "fp"]["avg_drop"] is None
    # RESULTS.md's main table holds exactly results.json's rows and numbers, in order.
    table = main_table(markdown)
    assert len(table) == len(results["rows"]) == 6
    for cells, row in zip(table, results["rows"]):
        for cell, metric in zip(cells[5:9], DROP_METRICS):
            if metric in row["metrics"]:
                assert cell == fmt_metric(row["metrics"][metric])
            else:
                assert cell.startswith("n/c [") and metric in row["not_computed"]
        assert cells[9].split()[0] == ("-" if row["avg_drop"] is None else fmt_drop(row["avg_drop"]))
    sofa_w8 = rows["sofa", "smoothquant_w8a8"]
    assert sofa_w8["drop_metrics"] == ["text_ppl", "speech_ppl", "asr_wer"] and "(3)" in table[results["rows"].index(sofa_w8)][9]
    assert "(sim.)" in table[1][3] and "W16/A16" in table[0][3]
    # Vanilla rows come first, W8A8 before W4A4.
    assert [(r["attention"], r["variant"]) for r in results["rows"][:3]] == [("softmax", "fp"), ("softmax", "smoothquant_w8a8"), ("softmax", "smoothquant_w4a4")]
    # Problems name the files; references, latency, outliers and reasons are reported.
    assert any("omniquant_w4a4/scores.json" in p and "missing lm, variant, metrics" in p for p in results["problems"])
    assert any("rtn_w4a16" in p and "not evaluated" in p for p in results["problems"])
    assert "no Whisper model at /nowhere" in markdown and "ground_truth" in markdown and "9.70" in markdown
    assert "tts 20/50" in markdown
    latency = {l["key"].split("/")[-1]: l for l in results["latency"]}
    assert latency["smoothquant_w4a4"]["speedup_vs_baseline"] == pytest.approx(1.25)
    assert {o["summary"]["speech"]["max_inf_norm"] for o in results["outliers"]} == {7.46, 24.95}
    assert "24.95" in markdown and "git" in markdown.lower() and "pytorch version" in markdown
    assert sorted(results["plots"]) == ["plots/attention_asr.png", "plots/drops.png", "plots/outliers.png"]
    for plot in results["plots"]:
        assert (expdir / plot).stat().st_size > 5000


def test_compare_puts_lora_against_full_of_another_expdir(expdir, tmp_path):
    lora = tmp_path / "exp_lora"
    # Table 2, OPT-350m vanilla LoRA against vanilla Full: 163.00% over three metrics.
    write_scores(lora, "softmax", "fp", None, "W16A16", (17.87, 51.65, 93.91), finetune="lora")
    out = tmp_path / "cmp"
    report.main(["--compare", str(expdir), str(lora), "--output_dir", str(out), "--no_plots"])
    results = json.loads((out / "results.json").read_text())
    row = next(r for r in results["rows"] if r["finetune"] == "lora")
    assert row["baseline"] == f"exp/{lm_name('softmax')}/fp" and fmt_drop(row["avg_drop"]) == "163.00%"
    assert row["key"].startswith("exp_lora/") and "exp_lora/" in (out / "RESULTS.md").read_text()


def test_missing_expdir_and_no_rows_still_write_a_report(tmp_path):
    report.main(["--exp_dir", str(tmp_path / "nothing"), "--output_dir", str(tmp_path / "out")])
    results = json.loads((tmp_path / "out/results.json").read_text())
    assert results["rows"] == [] and "experiment dir not found" in results["problems"][0]
    assert "No evaluated model" in (tmp_path / "out/RESULTS.md").read_text()


def write_tokenizer_scores(expdir: Path, attention, variant, tokenizer, speech_ppl, asr_wer):
    """What run.sh's stage 6 writes for one model on the test units of one quantized tokenizer."""
    scores = json.loads((expdir / lm_name(attention) / "eval" / variant / "scores.json").read_text())
    scores.update(metrics={"speech_ppl": speech_ppl, "speech_acc": 10.0, "asr_wer": asr_wer}, latency=None)
    path = expdir / lm_name(attention) / "eval_tokenizer_ptq" / tokenizer / variant / "scores.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scores))


def test_tokenizer_ptq_section_sets_each_model_against_itself_on_full_precision_units(expdir):
    report.main(["--exp_dir", str(expdir), "--no_plots"])
    markdown = (expdir / "RESULTS.md").read_text()
    assert "Speech tokenizer PTQ" not in markdown and json.loads((expdir / "results.json").read_text())["tokenizer_ptq"] == []
    main_before = main_table(markdown)

    # vanilla fp on full-precision units (TABLE10): speech PPL 43.10, ASR WER 8.42; its W8A8 variant 43.14, 8.47
    write_tokenizer_scores(expdir, "softmax", "fp", "stablequant_w8a8", 43.10 * 1.1, 8.42 * 1.21)
    write_tokenizer_scores(expdir, "softmax", "fp", "max_w8a8", 43.10 * 4, 8.42)
    write_tokenizer_scores(expdir, "softmax", "smoothquant_w8a8", "stablequant_w8a8", 43.14 * 1.21, 8.47)
    report_json = expdir / "tokenizer_ptq" / "stablequant_w8a8" / "report.json"  # stage 2c's; max_w8a8 has none
    report_json.parent.mkdir(parents=True)
    report_json.write_text(json.dumps({"rows": [{"method": "stablequant", "setting": "W8A8", "scope": "all", "dev_uer": 0.113}]}))
    bad = expdir / lm_name("sofa") / "eval_tokenizer_ptq" / "max_w8a8" / "fp" / "scores.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    report.main(["--exp_dir", str(expdir), "--no_plots"])
    markdown = (expdir / "RESULTS.md").read_text()
    results = json.loads((expdir / "results.json").read_text())

    assert main_table(markdown) == main_before  # the main table is untouched
    model = lm_name("softmax")
    # rows: each model of the main table on the full-precision units, then per quantized tokenizer;
    # drops: sqrt(1.1 * 1.21) - 1, sqrt(4 * 1) - 1, and sqrt(1.21 * 1) - 1 against the W8A8 variant's own row
    assert table_rows(markdown, "| Model | LM variant | Tokenizer |") == [
        [model, "FP", "full precision", "–", "43.10", "8.42", "-"],
        [model, "FP", "max_w8a8", "–", "172.40", "8.42", "100.00%"],
        [model, "FP", "stablequant_w8a8", "0.11", "47.41", "10.19", "15.37%"],
        [model, "W8/A8 SmoothQuant", "full precision", "–", "43.14", "8.47", "-"],
        [model, "W8/A8 SmoothQuant", "stablequant_w8a8", "0.11", "52.20", "8.47", "10.00%"],
    ]
    assert "against the same model and variant on the full-precision units" in markdown
    rows = results["tokenizer_ptq"]
    assert [(r["variant"], r["tokenizer"]) for r in rows] == [("fp", "full precision"), ("fp", "max_w8a8"), ("fp", "stablequant_w8a8"),
                                                             ("smoothquant_w8a8", "full precision"), ("smoothquant_w8a8", "stablequant_w8a8")]
    assert rows[2]["avg_drop"] == pytest.approx(1.331 ** 0.5 - 1) and rows[2]["drop_metrics"] == ["speech_ppl", "asr_wer"]
    assert rows[2]["baseline"] == str(expdir / model / "eval" / "fp" / "scores.json") and rows[2]["dev_uer"] == 0.113
    assert set(rows[2]["metrics"]) == {"speech_ppl", "asr_wer"}
    assert any(str(bad) in p and "not readable as JSON" in p for p in results["problems"])


@pytest.mark.parametrize("content, message", [
    ("{not json", "not readable as JSON"),
    ('{"lm": "x", "variant": "fp", "metrics": {"text_ppl": "high"}}', "text_ppl are not finite"),
    ('{"lm": "x", "variant": "fp", "metrics": {}, "latency": {"ms": 3}}', "ms_per_token_bs1"),
])
def test_bad_scores_name_the_file(tmp_path, content, message):
    path = tmp_path / "scores.json"
    path.write_text(content)
    with pytest.raises(ScoresError, match=message) as error:
        read_scores(path)
    assert str(path) in str(error.value)
