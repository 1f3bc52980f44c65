"""Stage 6 metrics: WER/CER, perplexity, batched decoding, Whisper and the evaluate CLI."""

import json
import random
import shutil
import subprocess
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sofa_speechlm.bin import evaluate
from sofa_speechlm.eval.decoding import BatchDecoder
from sofa_speechlm.eval.perplexity import perplexity
from sofa_speechlm.eval.text import cer, normalize, wer, write_score_dir
from sofa_speechlm.lm.causal_lm import SofaCausalLM
from sofa_speechlm.lm.espnet_model import SofaSpeechLanguageModel
from sofa_speechlm.lm.generate import PromptContinuation
from sofa_speechlm.tasks.lm import SofaLMTask
from sofa_speechlm.text.bpe import train_sentencepiece, write_token_list
from sofa_speechlm.text.unit_chars import units_to_chars
from sofa_speechlm.vocoder import CodeHiFiGANGenerator, save_published

from vocoder_testutils import tiny_config

WORDS = "the a cat dog sat ran on mat big small red blue house tree".split()
UNITS = 16
TINY_OPT = dict(model_type="opt", hidden_size=64, word_embed_proj_dim=64, num_hidden_layers=2, num_attention_heads=4,
                ffn_dim=128, max_position_embeddings=512)
TINY_QWEN2 = dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512)


# ----- WER / CER -----
def test_normalization_and_error_rates_on_hand_made_strings():
    assert normalize("Mr. Smith's COLOUR, twenty-one!") == "mister smith is color 21"
    assert wer(["The cat sat."], ["the cat sat"]) == 0.0
    assert wer(["the cat sat on the mat"], ["the bat sat on mat"]) == pytest.approx(100 * 2 / 6)
    assert cer(["ab cd"], ["abxcd"]) == pytest.approx(20.0)  # the space is a character
    assert wer(["a b", "c d"], ["a b", ""]) == pytest.approx(50.0)  # empty hypothesis: deletions
    assert wer(["a b", ""], ["a b", "x"]) == pytest.approx(50.0)  # empty reference: insertions
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])


def test_score_dir_holds_trn_files_summary_and_alignments(tmp_path):
    counts = write_score_dir(tmp_path, ["u1", "u2"], ["The cat sat", "Hello"], ["the cat", "hello there"], "word", "asr")
    assert (tmp_path / "ref.trn").read_text() == "the cat sat (u1)\nhello (u2)\n"
    assert (tmp_path / "hyp.trn").read_text() == "the cat (u1)\nhello there (u2)\n"
    assert (counts.deletions, counts.insertions, counts.rate) == (1, 1, 50.0)
    result = (tmp_path / "result.txt").read_text()
    assert "|asr|2|4|75.0|0.0|25.0|25.0|50.0|100.0|" in result
    assert "REF:  the cat SAT" in result and "HYP:  the cat *" in result and "HYP:  hello THERE" in result


# ----- a tiny stage-4 experiment -----
def task_line(rng, index):
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6)))
    units = units_to_chars(rng.randint(0, UNITS - 1) for _ in range(rng.randint(8, 14)))
    return [f"<generatetext> {text}", f"<generatespeech> {units}", f"<startofspeech> {units} <generatetext> {text}",
            f"<startoftext> {text} <generatespeech> {units}"][index % 4]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """exp/lm_tiny (config.yaml + valid.loss.ave.pth, untrained), the test LM text, a vocoder."""
    root = tmp_path_factory.mktemp("eval")
    rng = random.Random(0)
    lines = [task_line(rng, i) for i in range(200)]
    (root / "train.txt").write_text("".join(f"utt{i:04d} {line}\n" for i, line in enumerate(lines)), encoding="utf-8")
    bpemodel = train_sentencepiece(root / "train.txt", root / "bpe", nbpe=60)
    tokens = write_token_list(bpemodel, root / "bpe/tokens.txt")
    test = root / "lm_text"
    test.mkdir()
    for offset, task in enumerate(["textlm", "speechlm", "asr", "tts"]):
        (test / f"{task}.txt").write_text(
            "".join(f"utt{i:04d} {task_line(rng, 4 * i + offset)}\n" for i in range(6)), encoding="utf-8")
    config = dict(lm="sofa_opt", lm_conf=dict(hf_config=TINY_OPT, attention="sofa", finetune="full"), model="sofa_lm",
                  model_conf=dict(loss="voxtlm"), token_list=tokens, bpemodel=str(bpemodel), token_type="bpe", init=None)
    model = SofaLMTask.build_model(Namespace(**config))
    exp = root / "exp/lm_tiny"
    exp.mkdir(parents=True)
    (exp / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    torch.save(model.state_dict(), exp / "valid.loss.ave.pth")
    torch.manual_seed(0)
    save_published(CodeHiFiGANGenerator(tiny_config(num_embeddings=UNITS)), root / "exp/vocoder/generator.pth")
    return root


def tiny_whisper(path: Path) -> Path:
    """A random openai-whisper model (smallest dims it accepts) saved as {dims, model_state_dict}."""
    import whisper

    dims = whisper.model.ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                                         n_vocab=51864, n_text_ctx=16, n_text_state=32, n_text_head=2, n_text_layer=1)
    torch.manual_seed(0)
    model = whisper.model.Whisper(dims)
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict()}, path)
    return path


# ----- perplexity -----
def test_perplexity_counts_the_training_targets_whatever_the_batch(experiment):
    model, args = SofaLMTask.build_model_from_file(experiment / "exp/lm_tiny/config.yaml",
                                                    experiment / "exp/lm_tiny/valid.loss.ave.pth")
    g = torch.Generator().manual_seed(0)
    generate_text = args.token_list.index("<generatetext>")
    seqs = [[2, generate_text] + torch.randint(6, 50, (int(n),), generator=g).tolist() for n in torch.randint(2, 9, (7,), generator=g)]
    results = [perplexity(model.lm.model, seqs, args.token_list, batch_size=b) for b in (1, 3, 16)]
    nll, counted = 0.0, 0
    for seq in seqs:  # the training loss, one sequence at a time
        values, count = model.nll(torch.tensor([seq]), torch.tensor([len(seq)]))
        nll, counted = nll + float(values.detach().sum()), counted + int(count.sum())
    assert results[0].tokens == counted == sum(len(s) - 1 for s in seqs)  # after <generatetext>, + <sos/eos>
    for result in results:
        assert result.ppl == pytest.approx(np.exp(nll / counted), rel=1e-5)
        assert 0.0 <= result.accuracy <= 100.0
    with pytest.raises(ValueError, match="empty sequences"):
        perplexity(model.lm.model, [seqs[0], []], args.token_list)


# ----- batched decoding -----
@pytest.mark.parametrize("hf_config,attention", [(TINY_OPT, "sofa"), (TINY_OPT, "softmax"), (TINY_QWEN2, "sofa")])
def test_batched_decoding_gives_the_hypotheses_of_espnets_one_at_a_time_search(hf_config, attention):
    vocab = 40
    lm = SofaCausalLM(vocab, hf_config=hf_config, attention=attention, init_seed=1).eval()
    with torch.no_grad():  # make <sos/eos> likely, so hypotheses end at different steps
        lm.model.get_output_embeddings().weight[vocab - 1] *= 3.0
    token_list = [f"t{i}" for i in range(vocab - 1)] + ["<sos/eos>"]
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(2, vocab - 1, (int(n),), generator=g).tolist() for n in torch.randint(2, 12, (7,), generator=g)]
    for beam in (1, 3):
        espnet = [PromptContinuation(lm, token_list, beam, 12)(p) for p in prompts]
        batched = BatchDecoder(lm.model, vocab - 1, batch_size=4).decode(prompts, beam, 12)
        single = BatchDecoder(lm.model, vocab - 1, batch_size=1).decode(prompts, beam, 12)
        assert [h.tokens for h in batched] == [tokens for tokens, _ in espnet] == [h.tokens for h in single]
        assert [h.score for h in batched] == pytest.approx([score for _, score in espnet], abs=1e-4)
        assert any(len(h.tokens) < 12 for h in batched)  # hypotheses that ended by themselves


# ----- the evaluate CLI -----
def run_evaluate(experiment, out, *extra):
    evaluate.main(["--exp_dir", str(experiment / "exp/lm_tiny"), "--lm_text_dir", str(experiment / "lm_text"),
                   "--output_dir", str(out), "--vocoder_dir", str(experiment / "exp/vocoder"),
                   "--asr_max_new_tokens", "10", "--tts_max_new_tokens", "12", "--tts_max_utts", "3",
                   "--latency_tokens", "4", "--log_level", "WARNING", *extra])
    return json.loads((out / "scores.json").read_text())


def test_evaluate_scores_every_metric_with_a_tiny_whisper_and_resumes(experiment, tmp_path):
    whisper_pt = tiny_whisper(tmp_path / "tiny.pt")
    scores = run_evaluate(experiment, tmp_path / "fp", "--whisper_model", str(whisper_pt), "--asr_beam_size", "2")
    assert (scores["lm"], scores["variant"], scores["attention"], scores["setting"], scores["execution"]) == (
        "lm_tiny", "fp", "sofa", "W16A16", "fp")
    assert set(scores["metrics"]) == {"text_ppl", "text_acc", "speech_ppl", "speech_acc", "asr_wer", "tts_cer"}
    assert scores["not_computed"] == {}
    assert scores["subsets"]["tts"]["scored"] == 3 and scores["subsets"]["tts"]["of"] == 6
    assert scores["subsets"]["asr"] == {"scored": 6, "of": 6, "empty_hypotheses": scores["subsets"]["asr"]["empty_hypotheses"]}
    assert scores["decoding"]["asr_beam_size"] == 2 and scores["decoding"]["whisper_model"] == str(whisper_pt)
    assert scores["latency"]["ms_per_token_bs1"] > 0
    for name in ("decode_asr/score_wer/hyp.trn", "decode_asr/score_wer/ref.trn", "decode_asr/score_wer/result.txt",
                 "decode_tts/units", "decode_tts/transcript", "decode_tts/score_cer/result.txt"):
        assert (tmp_path / "fp" / name).is_file(), name
    assert len((tmp_path / "fp/decode_asr/score_wer/ref.trn").read_text().splitlines()) == 6
    # A rerun with the same settings redoes nothing; another beam size redoes only ASR.
    (tmp_path / "fp/decode_tts/transcript").unlink()
    again = run_evaluate(experiment, tmp_path / "fp", "--whisper_model", str(whisper_pt), "--asr_beam_size", "1")
    assert not (tmp_path / "fp/decode_tts/transcript").exists()
    assert again["decoding"]["asr_beam_size"] == 1 and again["metrics"]["tts_cer"] == scores["metrics"]["tts_cer"]


def test_missing_vocoder_or_whisper_leaves_tts_cer_not_computed_and_scores_the_rest(experiment, tmp_path):
    scores = run_evaluate(experiment, tmp_path / "a", "--whisper_model", str(tmp_path / "nowhere.pt"),
                          "--eval_sets", "textlm", "tts", "--latency", "false")
    assert set(scores["metrics"]) == {"text_ppl", "text_acc"}
    assert "nowhere.pt: no such file" in scores["not_computed"]["tts_cer"]
    scores = run_evaluate(experiment, tmp_path / "b", "--whisper_model", str(tiny_whisper(tmp_path / "w.pt")),
                          "--vocoder_dir", str(tmp_path / "novocoder"), "--eval_sets", "tts", "asr", "--latency", "false")
    assert "no vocoder in --vocoder_dir" in scores["not_computed"]["tts_cer"] and "asr_wer" in scores["metrics"]


def test_test_set_without_references_is_named(experiment, tmp_path):
    lm_text = tmp_path / "lm_text"
    shutil.copytree(experiment / "lm_text", lm_text)
    lines = (lm_text / "asr.txt").read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].split("<generatetext>")[0] + "<generatetext>"
    (lm_text / "asr.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    scores = run_evaluate(experiment, tmp_path / "o", "--lm_text_dir", str(lm_text), "--eval_sets", "asr", "textlm",
                          "--latency", "false")
    assert "no reference after their generate token (first: utt0002)" in scores["not_computed"]["asr_wer"]
    assert "text_ppl" in scores["metrics"]


def test_ptq_dir_of_another_vocabulary_or_experiment_is_refused(experiment, tmp_path):
    variant = tmp_path / "ptq/rtn_w8a8"
    variant.mkdir(parents=True)
    source = {"exp_dir": str(experiment / "exp/lm_tiny"), "token_list_sha256": "0" * 64}
    (variant / "quant_config.yaml").write_text(yaml.safe_dump({"method": "rtn", "setting": "W8A8", "source": source}))
    common = ["--exp_dir", str(experiment / "exp/lm_tiny"), "--ptq_dir", str(variant), "--output_dir", str(tmp_path / "o")]
    with pytest.raises(FileNotFoundError, match="no .done marker"):
        evaluate.main(common)
    (variant / ".done").write_text("")
    with pytest.raises(ValueError, match="a variant of another vocabulary"):
        evaluate.main(common)
    source.update(exp_dir=str(tmp_path / "exp/lm_other"))
    (variant / "quant_config.yaml").write_text(yaml.safe_dump({"method": "rtn", "setting": "W8A8", "source": source}))
    with pytest.raises(ValueError, match="was quantized from .*lm_other, not from --exp_dir"):
        evaluate.main(common)
    with pytest.raises(SystemExit, match="--output_dir names one model's dir, but 2 models"):
        evaluate.main(common + ["--fp", "true"])


def test_reference_rows_score_ground_truth_and_resynthesis(experiment, tmp_path):
    from vocoder_testutils import make_unit_dir
    from sofa_speechlm.data import read_table, write_table

    data = make_unit_dir(tmp_path / "tts", [30, 40, 35], num_embeddings=UNITS)
    write_table(data / "text", {u: "THE CAT SAT" for u in read_table(data / "units")})
    evaluate.main(["--reference", "--tts_data_dir", str(data), "--vocoder_dir", str(experiment / "exp/vocoder"),
                   "--whisper_model", str(tiny_whisper(tmp_path / "w.pt")), "--output_dir", str(tmp_path / "ref"),
                   "--tts_max_utts", "2", "--log_level", "WARNING"])
    for name in ("ground_truth", "resynthesis"):
        scores = json.loads((tmp_path / "ref" / name / "scores.json").read_text())
        assert scores["lm"] is None and scores["variant"] == name
        assert list(scores["metrics"]) == ["tts_cer"] and scores["subsets"]["tts"] == {"scored": 2, "of": 3}


# ----- the real offline Whisper -----
def test_installed_whisper_transcribes_espeak_speech(tmp_path):
    from sofa_speechlm.eval.whisper import default_whisper_model, load_whisper
    import soundfile

    model = default_whisper_model()
    if model is None or shutil.which("espeak-ng") is None:
        pytest.skip("no Whisper model installed under tools/models (tools/install.sh) or no espeak-ng")
    subprocess.run(["espeak-ng", "-w", str(tmp_path / "a.wav"), "the cat sat on the mat"], check=True)
    audio, rate = soundfile.read(tmp_path / "a.wav", dtype="float32")
    from sofa_speechlm.eval.tts import to_16k

    [text] = load_whisper(model).transcribe([to_16k(audio, rate)])
    assert cer(["the cat sat on the mat"], [text]) < 30.0, text


def test_vocoder_output_is_resampled_to_whispers_16k():
    from sofa_speechlm.eval.tts import to_16k

    tone = np.sin(2 * np.pi * 440 * np.arange(22050) / 22050).astype(np.float32)
    resampled = to_16k(tone, 22050)
    assert resampled.dtype == np.float32 and abs(len(resampled) - 16000) <= 1
    assert to_16k(tone[:16000], 16000) is not None and len(to_16k(tone[:16000], 16000)) == 16000


def test_repeated_ptq_dir_options_all_count():
    args = evaluate.get_parser().parse_args(["--exp_dir", "x", "--ptq_dir", "a", "--ptq_dir", "b", "c"])
    assert args.ptq_dir == ["a", "b", "c"]


def test_stage5_variant_is_scored_simulated_and_timed_on_real_kernels(experiment, tmp_path):
    """bin.quantize's output goes through bin.evaluate: the metrics are the method's simulated numerics,
    close to full precision at W8A8, and the latency is timed on the real int8 kernel."""
    from sofa_speechlm.bin import quantize

    ptq = experiment / "exp/lm_tiny/ptq"
    quantize.main(["--exp_dir", str(experiment / "exp/lm_tiny"), "--output_dir", str(ptq), "--methods", "smoothquant",
                   "--settings", "W8A8", "--lm_text_dir", str(experiment / "lm_text"), "--calib_nsamples", "4",
                   "--calib_seqlen", "32", "--log_level", "WARNING"])
    fp = run_evaluate(experiment, tmp_path / "fp", "--eval_sets", "textlm", "--latency", "false")
    scores = run_evaluate(experiment, tmp_path / "sq", "--ptq_dir", str(ptq / "smoothquant_w8a8"), "--eval_sets", "textlm")
    assert (scores["variant"], scores["method"], scores["setting"], scores["execution"]) == (
        "smoothquant_w8a8", "smoothquant", "W8A8", "simulated")
    assert scores["metrics"]["text_ppl"] == pytest.approx(fp["metrics"]["text_ppl"], rel=0.05)
    assert scores["latency"]["execution"] == "real" and scores["latency"]["ms_per_token_bs1"] > 0
    # both in one process, each into <output_root>/<fp|variant> (stage 6 on a quantized tokenizer's units)
    root = tmp_path / "eval_tokenizer_ptq" / "max_w8a8"
    evaluate.main(["--exp_dir", str(experiment / "exp/lm_tiny"), "--fp", "true", "--ptq_dir", str(ptq / "smoothquant_w8a8"),
                   "--output_root", str(root), "--lm_text_dir", str(experiment / "lm_text"), "--eval_sets", "textlm",
                   "--latency", "false", "--log_level", "WARNING"])
    for variant, alone in (("fp", fp), ("smoothquant_w8a8", scores)):
        together = json.loads((root / variant / "scores.json").read_text())
        assert together["variant"] == variant and together["metrics"]["text_ppl"] == pytest.approx(alone["metrics"]["text_ppl"])


def test_output_root_is_refused_beside_output_dir_and_for_the_reference_rows():
    with pytest.raises(SystemExit):
        evaluate.get_parser().parse_args(["--exp_dir", "x", "--output_dir", "a", "--output_root", "b"])
    with pytest.raises(SystemExit, match="give no --exp_dir, --ptq_dir or --output_root"):
        evaluate.main(["--reference", "--output_root", "b"])
