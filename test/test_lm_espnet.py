"""The SpeechLM inside ESPnet's LM task: training, perplexity, rebuilding, beam search, export."""

import argparse
import random
from pathlib import Path

import pytest
import torch
import yaml

from espnet2.text.build_tokenizer import build_tokenizer
from espnet2.text.token_id_converter import TokenIDConverter
from sofa_speechlm.bin import lm_export, lm_inference, lm_perplexity, lm_train
from sofa_speechlm.lm.generate import PromptContinuation, split_prompt
from sofa_speechlm.tasks.lm import SofaLMTask
from sofa_speechlm.text.bpe import train_sentencepiece, write_token_list
from sofa_speechlm.text.unit_chars import units_to_chars

REPO = Path(__file__).resolve().parents[1]
WORDS = "the a cat dog sat ran on mat big small red blue house tree".split()


def task_line(rng: random.Random, index: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7)))
    units = units_to_chars(rng.randint(0, 15) for _ in range(rng.randint(5, 15)))
    return [
        f"<generatetext> {text}",
        f"<generatespeech> {units}",
        f"<startofspeech> {units} <generatetext> {text}",
        f"<startoftext> {text} <generatespeech> {units}",
    ][index % 4]


def write_lm_text(path: Path, count: int, seed: int) -> Path:
    rng = random.Random(seed)
    path.write_text("".join(f"utt{i:04d} {task_line(rng, i)}\n" for i in range(count)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """One epoch of ESPnet LM training of conf/lm/tiny_sofa_full.yaml on a made-up corpus."""
    root = tmp_path_factory.mktemp("lm")
    train = write_lm_text(root / "train.txt", 400, seed=0)
    dev = write_lm_text(root / "dev.txt", 40, seed=1)
    bpemodel = train_sentencepiece(train, root / "bpe", nbpe=60)
    write_token_list(bpemodel, root / "tokens.txt")
    common = [
        "--token_list", str(root / "tokens.txt"), "--bpemodel", str(bpemodel), "--token_type", "bpe",
        "--train_data_path_and_name_and_type", f"{train},text,text",
        "--valid_data_path_and_name_and_type", f"{dev},text,text", "--ngpu", "0", "--num_workers", "0",
    ]
    lm_train.main(common + ["--collect_stats", "true", "--output_dir", str(root / "stats"), "--batch_type", "unsorted", "--batch_size", "50"])
    lm_train.main(common + [
        "--config", str(REPO / "conf/lm/tiny_sofa_full.yaml"), "--output_dir", str(root / "exp"),
        "--train_shape_file", str(root / "stats/train/text_shape"),
        "--valid_shape_file", str(root / "stats/valid/text_shape"), "--fold_length", "150",
        "--max_epoch", "1", "--batch_bins", "400", "--scheduler_conf", "warmup_steps=5", "--use_tensorboard", "false",
        "--use_matplotlib", "false",
    ])
    return root


def perplexity(root: Path, model_file, name: str) -> float:
    cmd = ["--train_config", str(root / "exp/config.yaml"), "--output_dir", str(root / name),
           "--data_path_and_name_and_type", f"{root / 'dev.txt'},text,text", "--batch_size", "8", "--num_workers", "0"]
    lm_perplexity.main(cmd + (["--model_file", str(model_file)] if model_file else []))
    return float((root / name / "ppl").read_text())


def test_one_epoch_of_espnet_training_lowers_dev_perplexity(experiment):
    config = yaml.safe_load((experiment / "exp/config.yaml").read_text(encoding="utf-8"))
    assert config["lm"] == "sofa_opt" and config["model"] == "sofa_lm"
    assert (experiment / "exp/valid.loss.ave.pth").is_file()  # ESPnet's averaging ran
    untrained = perplexity(experiment, None, "ppl_untrained")
    trained = perplexity(experiment, experiment / "exp/1epoch.pth", "ppl_trained")
    assert trained < 0.8 * untrained, (untrained, trained)


def build_variant(experiment: Path, finetune: str, out: Path):
    """A tiny model of the experiment's config in `finetune` mode, trained one step, saved."""
    config = yaml.safe_load((experiment / "exp/config.yaml").read_text(encoding="utf-8"))
    config["lm_conf"].update(finetune=finetune, lora_conf=dict(rank=4, alpha=8, dropout=0.0))
    model = SofaLMTask.build_model(argparse.Namespace(**config))
    text = torch.randint(2, 50, (2, 12), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([12, 9])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(text, lengths)[0].backward()
    optimizer.step()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    torch.save(model.state_dict(), out / "model.pth")
    return model.eval(), text


@pytest.mark.parametrize("finetune", ["full", "lora", "qlora"])
def test_rebuild_from_config_and_pth_gives_identical_logits(experiment, tmp_path, finetune):
    model, text = build_variant(experiment, finetune, tmp_path)
    rebuilt, _ = SofaLMTask.build_model_from_file(tmp_path / "config.yaml", tmp_path / "model.pth")
    with torch.no_grad():
        assert torch.equal(rebuilt.eval().lm(text, None)[0], model.lm(text, None)[0])


def test_export_merges_lora_into_a_full_experiment(experiment, tmp_path):
    model, text = build_variant(experiment, "lora", tmp_path / "lora")
    lm_export.main(["--train_config", str(tmp_path / "lora/config.yaml"), "--model_file", str(tmp_path / "lora/model.pth"),
                    "--output_dir", str(tmp_path / "merged")])
    merged, args = SofaLMTask.build_model_from_file(tmp_path / "merged/config.yaml", tmp_path / "merged/model.pth")
    assert args.lm_conf["finetune"] == "full" and merged.lm.finetune == "full"
    with torch.no_grad():
        torch.testing.assert_close(merged.eval().lm(text, None)[0], model.lm(text, None)[0], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="no adapters to merge"):
        lm_export.main(["--train_config", str(tmp_path / "merged/config.yaml"), "--model_file", str(tmp_path / "merged/model.pth"),
                        "--output_dir", str(tmp_path / "again")])


def test_beam_search_best_hypothesis_same_with_and_without_cache(experiment):
    # Untrained, so that <sos/eos> is rare and the hypotheses grow long.
    model, args = SofaLMTask.build_model_from_file(experiment / "exp/config.yaml", None)
    lm = model.eval().lm
    tokenizer = build_tokenizer(token_type="bpe", bpemodel=args.bpemodel)
    converter = TokenIDConverter(token_list=args.token_list)
    lines = (experiment / "dev.txt").read_text(encoding="utf-8").splitlines()[:4]
    prompts = [converter.tokens2ids(tokenizer.text2tokens(split_prompt(line.split(" ", 1)[1])[0])) for line in lines]
    results = {}
    for kv_cache in (True, False):
        lm.kv_cache = kv_cache
        search = PromptContinuation(lm, args.token_list, beam_size=3, max_new_tokens=15)
        results[kv_cache] = [search(prompt) for prompt in prompts]
    assert sum(len(tokens) for tokens, _ in results[True]) > 4 * 3  # it generated, not just <sos/eos>
    for (cached_tokens, cached_score), (plain_tokens, plain_score) in zip(results[True], results[False]):
        assert cached_tokens == plain_tokens
        assert cached_score == pytest.approx(plain_score, abs=1e-4)
    # A large length bonus makes the longest hypothesis win: max_new_tokens, then <sos/eos>.
    tokens, _ = PromptContinuation(lm, args.token_list, beam_size=2, max_new_tokens=6, length_bonus=100.0)(prompts[0])
    assert len(tokens) == 6


def test_inference_cli_continues_every_prompt(experiment, tmp_path):
    lm_inference.main(["--train_config", str(experiment / "exp/config.yaml"), "--model_file", str(experiment / "exp/1epoch.pth"),
                       "--lm_text", str(experiment / "dev.txt"), "--output_dir", str(tmp_path), "--max_new_tokens", "8",
                       "--nj", "4", "--job", "2", "--log_level", "WARNING"])
    lines = (tmp_path / "text").read_text(encoding="utf-8").splitlines()
    assert [line.split()[0] for line in lines] == [f"utt{i:04d}" for i in range(1, 40, 4)]
    assert len((tmp_path / "score").read_text().splitlines()) == 10


def test_split_prompt_cuts_after_the_first_generate_token():
    assert split_prompt("<startofspeech> 丁丂 <generatetext> the cat") == ("<startofspeech> 丁丂 <generatetext>", "the cat")
    assert split_prompt("<startoftext> a <generatespeech> 丁") == ("<startoftext> a <generatespeech>", "丁")
    assert split_prompt("no task token") == ("no task token", "")


def test_token_list_that_does_not_match_the_checkpoint(experiment, tmp_path):
    config = yaml.safe_load((experiment / "exp/config.yaml").read_text(encoding="utf-8"))
    config["token_list"] = config["token_list"][:-2] + ["<sos/eos>"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocabulary has \d+ tokens but the token list has"):
        SofaLMTask.build_model_from_file(tmp_path / "config.yaml", experiment / "exp/1epoch.pth")


def test_voxtlm_loss_needs_the_task_tokens(experiment):
    config = yaml.safe_load((experiment / "exp/config.yaml").read_text(encoding="utf-8"))
    config["token_list"] = [t for t in config["token_list"] if t != "<generatespeech>"]
    with pytest.raises(ValueError, match=r"generate tokens \['<generatespeech>'\]"):
        SofaLMTask.build_model(argparse.Namespace(**config))


PAPER_CONFIGS = [f"paper/opt350m_{a}_{f}.yaml" for a in ("sofa", "vanilla") for f in ("full", "lora", "qlora")]


def test_paper_configs_have_the_paper_hyperparameters_and_build(experiment, tmp_path):
    from transformers import OPTConfig, OPTForCausalLM

    OPTForCausalLM(OPTConfig(hidden_size=32, word_embed_proj_dim=32, num_hidden_layers=1, num_attention_heads=2,
                             ffn_dim=64, vocab_size=100)).save_pretrained(tmp_path / "opt")
    for name in PAPER_CONFIGS:
        args = SofaLMTask.get_parser().parse_args([
            "--config", str(REPO / "conf/lm" / name), "--token_list", str(experiment / "tokens.txt"),
            "--output_dir", str(tmp_path / "unused"), "--lm_conf", f"pretrained={tmp_path / 'opt'}",
        ])
        assert (args.optim, args.optim_conf) == ("adam", {"lr": 3e-4, "weight_decay": 1e-6}), name
        assert (args.scheduler_conf["warmup_steps"], args.batch_bins, args.max_epoch) == (2500, 5000, 50), name
        assert args.lm_conf["attention"] == ("sofa" if "_sofa_" in name else "softmax"), name
        finetune = name[: -len(".yaml")].rsplit("_", 1)[1]
        if finetune != "full":
            assert {k: args.lm_conf["lora_conf"][k] for k in ("rank", "alpha", "dropout")} == dict(rank=256, alpha=256, dropout=0.05)
        assert SofaLMTask.build_model(args).lm.finetune == finetune
    # run.sh --pretrained_lm on the tiny (inline-config) default: pretrained replaces hf_config.
    args = SofaLMTask.get_parser().parse_args([
        "--config", str(REPO / "conf/lm/tiny_sofa_full.yaml"), "--token_list", str(experiment / "tokens.txt"),
        "--output_dir", str(tmp_path / "unused"), "--lm_conf", f"pretrained={tmp_path / 'opt'}", "--lm_conf", "hf_config=null",
    ])
    assert SofaLMTask.build_model(args).lm.model.config.num_hidden_layers == 1


def test_espnet_trains_a_qlora_model_on_cpu_and_stage_6_loads_it_as_trained(experiment, tmp_path):
    from sofa_speechlm.lm.experiment import LMExperiment

    config = yaml.safe_load((REPO / "conf/lm/tiny_sofa_full.yaml").read_text(encoding="utf-8"))
    config["lm_conf"].update(finetune="qlora", qlora_threshold=0.0, lora_conf=dict(rank=4, alpha=8, dropout=0.0))
    (tmp_path / "qlora.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    lm_train.main([
        "--config", str(tmp_path / "qlora.yaml"), "--token_list", str(experiment / "tokens.txt"),
        "--bpemodel", str(experiment / "bpe/bpe.model"), "--token_type", "bpe", "--ngpu", "0", "--num_workers", "0",
        "--train_data_path_and_name_and_type", f"{experiment / 'train.txt'},text,text",
        "--valid_data_path_and_name_and_type", f"{experiment / 'dev.txt'},text,text",
        "--train_shape_file", str(experiment / "stats/train/text_shape"),
        "--valid_shape_file", str(experiment / "stats/valid/text_shape"), "--output_dir", str(tmp_path / "exp"),
        "--max_epoch", "1", "--num_iters_per_epoch", "3", "--batch_bins", "400", "--use_tensorboard", "false",
        "--use_matplotlib", "false",
    ])
    saved = torch.load(tmp_path / "exp/valid.loss.ave.pth", map_location="cpu")
    lora_b = [value for name, value in saved.items() if "lora_B" in name]
    assert lora_b and any(value.abs().sum() > 0 for value in lora_b)  # the adapters trained (B starts at zero)
    assert not any(name.endswith(("SCB", "weight_format")) or ".base_layer." in name for name in saved)  # base not saved
    model, args = LMExperiment.find_as_trained(tmp_path / "exp").load("cpu")
    int8 = [m for m in model.modules() if type(m).__name__ == "Linear8bitLt" and hasattr(m, "state")]
    assert int8 and all(m.weight.dtype == torch.int8 and m.state.threshold == 0.0 for m in int8)
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([[len(args.token_list) - 1, 5, 6, 7]])).logits).all()
