"""Stage 5 on a tiny trained stage-4 experiment: bin.quantize (calibration from LM text, presets,
atomic resumable variant dirs, failures), load_quantized, the summary, and run.sh's checks."""

import pytest
import torch
import yaml

from conftest import run_script
from quant_testutils import REPO, train_experiment
from sofa_speechlm.bin import ptq_summary, quantize as quantize_cli
from sofa_speechlm.lm.experiment import LMExperiment
from sofa_speechlm.quant import load_quantized, read_quant_config
from sofa_speechlm.quant.calibration import CalibrationError
from sofa_speechlm.quant.calibration_data import lm_text_calibration


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("ptq")
    return root, train_experiment(root, "conf/lm/tiny_sofa_full.yaml")


def write_ptq_config(path, **calibration):
    config = yaml.safe_load((REPO / "conf/ptq/tiny.yaml").read_text())
    config["calibration"].update(calibration)
    config["presets"]["rtn_badgroup"] = {"method": "rtn", "group_size": 48}  # 48 divides no layer: fails
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(root, exp, out, methods, settings=("W8A8", "W4A4")):
    return quantize_cli.main([
        "--exp_dir", str(exp), "--output_dir", str(out), "--methods", *methods, "--settings", *settings,
        "--ptq_config", str(write_ptq_config(root / "ptq.yaml", seqlen=32, nsamples=8, batch_size=4)),
        "--lm_text_dir", str(root / "lm_text/train")])


def test_quantize_cli_writes_resumable_variants_and_removes_a_failed_one(experiment, tmp_path):
    root, exp = experiment
    out = tmp_path / "ptq"
    (out / "rtn_w8a8").mkdir(parents=True)  # a leftover of an interrupted run: no .done
    (out / "rtn_w8a8" / "model.safetensors").write_text("partial")
    with pytest.raises(SystemExit) as failure:
        run_cli(root, exp, out, ["rtn", "smoothquant_clip5", "rtn_badgroup"])
    assert failure.value.code == 1
    done = sorted(p.name for p in out.iterdir() if (p / ".done").is_file())
    assert done == ["rtn_w4a16", "rtn_w4a4", "rtn_w8a8", "smoothquant_clip5_w4a4", "smoothquant_clip5_w8a8"]
    assert not any(p.name.startswith(("rtn_badgroup", ".")) for p in out.iterdir() if p.is_dir())
    assert "group size 48" in (out / "log" / "rtn_badgroup_w8a8.log").read_text()

    record = read_quant_config(out / "smoothquant_clip5_w8a8")
    assert record["method"] == "smoothquant" and record["setting"] == "W8A8" and record["execution"] == "real"
    assert record["hyperparameters"]["clip"] == 0.05 and record["attention"] == "sofa" and record["model_type"] == "opt"
    calibration = record["calibration"]
    assert calibration["samples_per_task"] == {"textlm": 2, "speechlm": 2, "asr": 2, "tts": 2}
    assert (calibration["seqlen"], calibration["batch_size"], len(calibration["sha256"])) == (32, 4, 64)
    assert record["source"]["model_file"].endswith("valid.loss.ave.pth") and record["time_s"] >= 0
    assert read_quant_config(out / "rtn_w4a16")["calibration"] is None

    fp, _ = LMExperiment.find(exp).load()
    ids = torch.randint(1, 50, (2, 20), generator=torch.Generator().manual_seed(0))
    quantized = load_quantized(out / "smoothquant_clip5_w8a8")
    with torch.no_grad():
        reference, logits = fp(ids).logits, quantized(ids).logits
    assert ((logits - reference).norm() / reference.norm()) < 0.1

    stamps = {p.name: (p / ".done").stat().st_mtime_ns for p in out.iterdir() if (p / ".done").is_file()}
    run_cli(root, exp, out, ["rtn", "smoothquant_clip5"])  # everything up to date: nothing redone
    assert stamps == {p.name: (p / ".done").stat().st_mtime_ns for p in out.iterdir() if (p / ".done").is_file()}
    rows = ptq_summary.summary_rows([out])
    assert {r["variant"]: r["execution"] for r in rows}["rtn_w4a4"] == "simulated"
    assert all(r["complete"] and r["size_mb"] > 0 for r in rows)


def test_calibration_is_balanced_seeded_and_refuses_too_little_text(experiment):
    root, _ = experiment
    encode = lambda line: [ord(c) % 50 + 1 for c in line.split()[0]]  # noqa: E731
    batches, record = lm_text_calibration(root / "lm_text/train", encode, 59, nsamples=6, seqlen=8, batch_size=4, seed=3)
    again, _ = lm_text_calibration(root / "lm_text/train", encode, 59, nsamples=6, seqlen=8, batch_size=4, seed=3)
    assert [b.shape for b in batches] == [(4, 8), (2, 8)] and all(torch.equal(a, b) for a, b in zip(batches, again))
    assert record["samples_per_task"] == {"textlm": 2, "speechlm": 2, "asr": 1, "tts": 1}
    assert all(window[0] == 59 for batch in batches for window in batch)  # windows start at a line
    with pytest.raises(CalibrationError, match="too little data in .*textlm.txt"):
        lm_text_calibration(root / "lm_text/train", encode, 59, nsamples=400, seqlen=64, batch_size=4)
    with pytest.raises(CalibrationError, match="not found"):
        lm_text_calibration(root / "nowhere", encode, 59, nsamples=4, seqlen=8, batch_size=4)


def test_unknown_method_fails_before_any_work(experiment, tmp_path):
    root, exp = experiment
    with pytest.raises(ValueError, match="unsupported PTQ method 'gptq'"):
        run_cli(root, exp, tmp_path / "ptq", ["rtn", "gptq"])
    assert not (tmp_path / "ptq").exists()


def test_stage5_names_a_missing_lm_and_a_missing_ptq_config(tmp_path, shell_env):
    common = ["bash", str(REPO / "run.sh"), "--stage", "5", "--stop_stage", "5", "--expdir", str(tmp_path / "exp")]
    result = run_script(common + ["--lm_configs", "conf/lm/tiny_sofa_full.yaml"], REPO, shell_env)
    assert result.returncode != 0 and "needs the trained LM" in result.stderr + result.stdout
    result = run_script(common + ["--ptq_config", "conf/ptq/nothing.yaml"], REPO, shell_env)
    assert result.returncode != 0 and "--ptq_config: conf/ptq/nothing.yaml not found" in result.stderr + result.stdout
