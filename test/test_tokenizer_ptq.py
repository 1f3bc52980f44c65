"""Tokenizer PTQ (StableQuant and its baselines) on a tiny random HuBERT with a planted
wide-range CNN channel: the histogram search, Algorithm 1's selection, StableQuant against max
calibration, real int8 == simulated, the CLIs end to end on a fairseq-layout checkpoint, bad input."""

import json

import numpy as np
import pytest
import torch

from sofa_speechlm.bin import quantize_tokenizer, quantized_units
from sofa_speechlm.quant.real import real_kernel_available
from sofa_speechlm.quant.tokenizer.apply import QuantPlan, simulated
from sofa_speechlm.quant.tokenizer.audio import sample_waveforms
from sofa_speechlm.quant.tokenizer.calibrators import CALIBRATORS, Histogram, entropy_clip, percentile_clip, search_clip
from sofa_speechlm.quant.tokenizer.evaluation import UnitErrorRate, edit_distance
from sofa_speechlm.quant.tokenizer.io import quantize_reader
from sofa_speechlm.quant.tokenizer.layers import LayerError, quantizable_layers
from sofa_speechlm.quant.tokenizer.stablequant import calibrate, percentile_grid, select_layers
from sofa_speechlm.quant.tokenizer.statistics import activation_histograms
from sofa_speechlm.speech.hubert import HubertFeatureReader
from sofa_speechlm.speech.kmeans import KmeansQuantizer, learn_kmeans, save_centres
from sofa_speechlm.speech.units import read_units
from test_units_hubert import write_fairseq_checkpoint
from units_testutils import make_speech_dir, tiny_hubert

PLANTED = "feature_extractor.conv_layers.2.conv"  # its input holds the planted channel
GRID = percentile_grid(8, 2)  # 1 of 16 channels is ~6% of the values: the paper's 0.5% is for 512 channels


def planted_hubert():
    """Channel 3 of conv layer 1 scaled up 1000x and its use in conv layer 2 scaled down as much:
    the full-precision model barely changes, conv layer 2's input gets a wide-range channel."""
    model = tiny_hubert(layers=2)
    with torch.no_grad():
        model.feature_extractor.conv_layers[1].conv.weight[3] *= 1000
        model.feature_extractor.conv_layers[2].conv.weight[:, 3] /= 1000
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizer_ptq")
    torch.set_num_threads(1)
    planted_hubert().save_pretrained(root / "hf")
    make_speech_dir(root / "calib", count=4, seconds=0.5)
    make_speech_dir(root / "dev", count=4, seconds=0.5)
    reader = HubertFeatureReader(root / "hf", layer=2)
    calib = list(sample_waveforms([str(root / "calib")], 10, 0, 16000, "--data_dir").values())
    dev = list(sample_waveforms([str(root / "dev")], 10, 0, 16000, "--dev_data_dir").values())
    centres = learn_kmeans(np.concatenate([reader.extract(w) for w in calib]), 12, seed=0, n_init=2)
    save_centres(root / "km.npy", centres)
    layers = quantizable_layers(reader.model, "all")
    hists = activation_histograms(reader, layers, calib, bins=256)
    return root, reader, layers, hists, UnitErrorRate(reader, KmeansQuantizer(centres), dev)


def brute_force_clip(counts, edges, p, bits):
    """Algorithm 2 written out: keep the bins below the (100 - p)th percentile, then try every
    kept bin centre as the clip and take the one with the least weighted squared error."""
    total, kept, running = counts.sum(), 0, 0.0
    for kept, count in enumerate(counts, start=1):
        running += count
        if running >= total * (1 - p / 100) and (p > 0 or kept == np.nonzero(counts)[0][-1] + 1):
            break
    centres = (edges[:-1] + edges[1:]) / 2
    qmax = 2 ** (bits - 1) - 1
    errors = []
    for candidate in centres[:kept]:
        scale = candidate / qmax
        error = 0.0
        for centre, count in zip(centres[:kept], counts[:kept]):
            restored = min(max(round(centre / scale), -qmax), qmax) * scale
            error += (centre - restored) ** 2 * count
        errors.append(error / kept)
    return centres[int(np.argmin(errors))], errors


@pytest.mark.parametrize("p", [0.0, 0.5, 3.0])
@pytest.mark.parametrize("bits", [4, 8])
def test_percentile_mse_search_is_the_minimum_of_the_brute_force_error_curve(p, bits):
    rng = np.random.default_rng(1)
    values = np.abs(np.concatenate([rng.standard_normal(20000), 10 * rng.standard_normal(300)]))
    counts, edges = np.histogram(values, bins=300, range=(0, values.max()))
    clip = search_clip(Histogram(counts.astype(float), float(values.max())), p, bits)
    expected, errors = brute_force_clip(counts.astype(float), edges, p, bits)
    assert clip == pytest.approx(expected)
    assert np.ptp(errors) > 0  # a real curve, not a flat one


def test_max_percentile_and_entropy_clips():
    rng = np.random.default_rng(2)
    values = np.abs(np.concatenate([rng.standard_normal(50000), [500.0]]))
    hist = Histogram(np.histogram(values, bins=2048, range=(0, values.max()))[0].astype(float), float(values.max()))
    assert percentile_clip(hist, 0.0) == pytest.approx(values.max())
    assert percentile_clip(hist, 0.01) == pytest.approx(np.percentile(values, 99.99), abs=values.max() / 2048)
    assert entropy_clip(hist, 8) < 0.1 * values.max()  # the lone outlier is clipped away
    uniform = rng.uniform(0, 1, 50000)
    flat = Histogram(np.histogram(uniform, bins=2048, range=(0, 1))[0].astype(float), 1.0)
    assert entropy_clip(flat, 8) > 0.9  # nothing to gain from clipping a uniform distribution
    assert set(CALIBRATORS) == {"max", "percentile", "mse", "entropy"}


@pytest.mark.parametrize("reference, hypothesis, distance", [
    ([1, 2, 3], [1, 3], 1), ([1, 2, 3], [3, 2, 1], 2), ([], [1, 2], 2), ([4, 4], [], 2), ([1, 2, 3, 4], [0, 1, 2, 3], 2)])
def test_edit_distance_of_deduplicated_units(reference, hypothesis, distance):
    assert edit_distance(reference, hypothesis) == distance


def test_layer_selection_picks_the_planted_layer(setup):
    _, _, layers, hists, uer = setup
    deltas = select_layers(layers, hists, 8, uer, gamma=20.0)
    assert [name for name, delta in deltas.items() if delta > 20.0] == [PLANTED]
    assert uer() == 0.0  # the model is restored after each probe


@pytest.mark.parametrize("setting", [(8, 8), (6, 6)])
def test_stablequant_is_no_worse_than_max_calibration(setup, setting):
    _, _, layers, hists, uer = setup
    rates = {}
    for method in ("max", "mse", "stablequant"):
        plan, details = calibrate(method, layers, hists, *setting, evaluate=uer, gamma=20.0, grid=GRID)
        with simulated(layers, plan):
            rates[method] = uer()
    assert details["selected"] == [PLANTED] and details["p_opt"] > 0
    assert rates["stablequant"] <= rates["max"] and rates["stablequant"] <= rates["mse"]
    assert rates["stablequant"] < 60 < rates["max"]  # the planted channel ruins max calibration


@pytest.mark.skipif(not real_kernel_available("W8A8", "cpu"), reason="no int8 kernel")
def test_real_int8_linears_match_the_simulated_tokenizer(setup):
    root, _, _, hists, _ = setup
    readers = {execution: HubertFeatureReader(root / "hf", layer=2) for execution in ("real", "simulated")}
    layers = quantizable_layers(readers["real"].model, "transformer")
    plan = QuantPlan(8, {name: CALIBRATORS["max"](hists[name], 8) for name in layers}, 8)
    assert {execution: quantize_reader(reader, plan, "transformer", execution) for execution, reader in readers.items()} == \
        {"real": "real", "simulated": "simulated"}
    assert type(readers["real"].model.encoder.layers[0].attention.q_proj).__name__ == "StaticInt8Linear"
    waveform = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.3
    np.testing.assert_allclose(readers["real"].extract(waveform), readers["simulated"].extract(waveform), atol=1e-4)


def test_fairseq_checkpoint_through_the_clis(setup, tmp_path):
    root = setup[0]
    write_fairseq_checkpoint(planted_hubert(), tmp_path / "hubert.pt")
    out = tmp_path / "ptq"
    quantize_tokenizer.main([
        "--hubert_ckpt", str(tmp_path / "hubert.pt"), "--layer", "2", "--kmeans_file", str(root / "km.npy"),
        "--data_dir", str(root / "calib"), "--dev_data_dir", str(root / "dev"), "--test_data_dir", str(root / "calib"),
        "--methods", "max", "stablequant", "--settings", "W8A8", "--gamma", "20", "--p_max", "8", "--p_step", "2",
        "--bins", "256", "--timing_repeats", "1", "--output_dir", str(out)])
    report = json.loads((out / "report.json").read_text())
    rows = {row["method"]: row for row in report["rows"]}
    assert rows["stablequant"]["selected"] == [PLANTED]
    assert rows["stablequant"]["dev_uer"] <= rows["max"]["dev_uer"]
    assert 0 < rows["max"]["size_ratio"] < 1 and rows["max"]["test_uer"] is not None
    assert 0 < rows["stablequant"]["dev_dedup_uer"] <= 100 * 2  # an edit distance may exceed the reference length
    assert (out / "stablequant_w8a8_all" / ".done").is_file() and (out / "activation_ranges.png").stat().st_size > 0
    assert "| all | W8A8 | stablequant |" in (out / "report.md").read_text()

    quantized_units.main(["--tokenizer_dir", str(out / "stablequant_w8a8_all"), "--data_dir", str(root / "dev"),
                          "--output_dir", str(tmp_path / "units"), "--dedup"])
    units = read_units(tmp_path / "units" / "dev")
    fp_units = setup[4].reference
    assert len(units) == len(fp_units) == 4
    assert [len(u) for _, u in sorted(units.items())] == [len(u) for u in fp_units]
    assert all(0 <= unit < 12 for sequence in units.values() for unit in sequence)
    changed = sum(int((np.array(u) != ref).sum()) for (_, u), ref in zip(sorted(units.items()), fp_units))
    assert 100 * changed / sum(map(len, fp_units)) == pytest.approx(rows["stablequant"]["dev_uer"])  # the same tokenizer
    assert (tmp_path / "units" / "dev" / "units_dedup").is_file() and (tmp_path / "units" / "dev" / "text").is_file()


@pytest.mark.parametrize("options, message", [
    (["--gamma", "-1"], "--gamma -1.0"),
    (["--p_max", "120"], "--p_max 120.0"),
    (["--p_step", "0"], "--p_step 0.0"),
    (["--settings", "W3A8"], "--settings 'W3A8'"),
    (["--methods", "omniquant"], "--methods 'omniquant'"),
    (["--hubert_ckpt", ""], "--hubert_ckpt is empty"),
])
def test_bad_options_are_refused_by_name(setup, options, message, capsys):
    root = setup[0]
    base = ["--hubert_ckpt", str(root / "hf"), "--kmeans_file", str(root / "km.npy"), "--data_dir", str(root / "calib"),
            "--dev_data_dir", str(root / "dev"), "--output_dir", str(root / "bad")]
    with pytest.raises(SystemExit):
        quantize_tokenizer.main(base + options)
    assert message in capsys.readouterr().err


def test_too_little_audio_and_foreign_models_are_refused(setup):
    root = setup[0]
    with pytest.raises(SystemExit, match=r"--data_dir .*calib: 4 usable utterances, .* at least 100 s"):
        quantize_tokenizer.main(["--hubert_ckpt", str(root / "hf"), "--layer", "2", "--kmeans_file", str(root / "km.npy"),
                                 "--data_dir", str(root / "calib"), "--dev_data_dir", str(root / "dev"),
                                 "--min_calib_seconds", "100", "--output_dir", str(root / "short")])
    save_centres(root / "mfcc_km.npy", np.zeros((5, 39), dtype=np.float32))  # an MFCC tokenizer's k-means
    with pytest.raises(SystemExit, match=r"--kmeans_file .*mfcc_km.npy: 39-dim centres, but layer 2 .* gives 32-dim features"):
        quantize_tokenizer.main(["--hubert_ckpt", str(root / "hf"), "--layer", "2", "--kmeans_file", str(root / "mfcc_km.npy"),
                                 "--data_dir", str(root / "calib"), "--dev_data_dir", str(root / "dev"), "--output_dir", str(root / "mfcc")])
    with pytest.raises(LayerError, match="no feature_extractor.conv_layers"):
        quantizable_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)), "all")
    with pytest.raises(LayerError, match="--scope 'cnn'"):
        quantizable_layers(setup[1].model, "cnn")


@pytest.fixture(scope="module")
def lm_experiment(tmp_path_factory):
    """A tiny stage-4 experiment (one ESPnet epoch) whose vocabulary holds units 0..15 (K = 12 here)."""
    from quant_testutils import train_experiment

    return train_experiment(tmp_path_factory.mktemp("asr_lm"), "conf/lm/tiny_sofa_full.yaml")


def test_asr_wer_metric_is_stage6s_wer_of_the_lm_on_the_same_units(setup, lm_experiment, tmp_path):
    from sofa_speechlm.eval.asr import score_asr
    from sofa_speechlm.eval.decoding import BatchDecoder
    from sofa_speechlm.eval.prompts import read_prompts
    from sofa_speechlm.lm.experiment import LMExperiment
    from sofa_speechlm.quant.tokenizer.asr import AsrWordErrorRate, dev_texts
    from sofa_speechlm.speech.units import write_units
    from sofa_speechlm.text.lm_text import write_lm_text
    from sofa_speechlm.text.tokenizer import JointTokenizer
    from sofa_speechlm.data import read_table, write_table

    root, reader, layers, _, uer = setup
    keys = sorted(read_table(root / "dev" / "wav.scp"))
    metric = AsrWordErrorRate(uer, keys, dev_texts([str(root / "dev")], keys), lm_experiment, max_utts=3, max_new_tokens=20)
    assert metric.utterances == 3 and metric() == 0.0 and metric.name == "asr_wer"

    # stage 3's LM text of the same full-precision units, decoded and scored as bin.evaluate does
    split = tmp_path / "split"
    (split / "asr").mkdir(parents=True)
    for name in ("wav.scp", "text", "utt2spk", "spk2utt"):
        write_table(split / "asr" / name, read_table(root / "dev" / name))
    write_units(split / "asr", {key: units.tolist() for key, units in zip(keys, uer.reference)})
    write_lm_text(split, tmp_path / "lm_text", ["asr"])
    experiment = LMExperiment.find(lm_experiment)
    model, _ = experiment.load("cpu")
    tokenizer = JointTokenizer(next((lm_experiment.parent / "bpe").glob("*.model")), lm_experiment.parent / "tokens.txt")
    prompts = read_prompts(tmp_path / "lm_text" / "asr.txt", tokenizer, max_utts=3)
    sos_eos = len((lm_experiment.parent / "tokens.txt").read_text().splitlines()) - 1
    result = score_asr(BatchDecoder(model.eval(), sos_eos), tokenizer, prompts, tmp_path / "decode", 1, 20)
    assert metric.fp_wer == pytest.approx(result["wer"])


def test_exp_dir_makes_the_asr_wer_the_dev_metric_of_the_search(setup, lm_experiment, tmp_path, capsys):
    root = setup[0]
    out = tmp_path / "ptq"
    base = ["--hubert_ckpt", str(root / "hf"), "--layer", "2", "--kmeans_file", str(root / "km.npy"),
            "--data_dir", str(root / "calib"), "--dev_data_dir", str(root / "dev"), "--output_dir", str(out)]
    quantize_tokenizer.main(base + [
        "--methods", "stablequant", "--settings", "W8A8", "--gamma", "20", "--p_max", "8", "--p_step", "4", "--bins", "256",
        "--timing_repeats", "1", "--exp_dir", str(lm_experiment), "--asr_max_utts", "3", "--asr_max_new_tokens", "20"])
    report = json.loads((out / "report.json").read_text())
    assert report["dev_metric"] == "asr_wer"
    assert report["asr"]["utterances"] == 3 and report["asr"]["exp_dir"] == str(lm_experiment)
    (row,) = report["rows"]
    assert set(row["selection_asr_wer"]) == set(setup[2]) and row["selection_uer"] == {}  # Algorithm 1 scored by WER
    assert set(row["p_curve"]) == {"0.0", "4.0", "8.0"} or set(row["p_curve"]) == {"0.0"}
    assert row["dev_asr_wer"] >= 0 and row["dev_uer"] is not None
    selected = [name for name, delta in row["selection_asr_wer"].items() if delta > 20]
    assert row["selected"] == selected
    assert "dev ASR WER %" in (out / "report.md").read_text()
    with pytest.raises(SystemExit):
        quantize_tokenizer.main(base + ["--exp_dir", str(tmp_path / "missing")])
    assert "missing: not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        quantize_tokenizer.main(base + ["--exp_dir", str(lm_experiment), "--asr_max_utts", "0"])
    assert "--asr_max_utts 0" in capsys.readouterr().err
