"""Every `python -m sofa_speechlm.bin.<step>` follows one option convention (COMMON.md, docs/cli.md):
a `get_parser()`, `--log_level` wired to `setup_logging`, no forbidden option names, and one
name per concept (the synonym table below names the concepts and the names that must not be used)."""

import argparse
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import sofa_speechlm.bin

BIN_MODULES = sorted(info.name for info in pkgutil.iter_modules(sofa_speechlm.bin.__path__))

# Thin wrappers around ESPnet's own parsers: ESPnet's option names stand (--ngpu, --config, ...),
# so only the forbidden names and --log_level are checked, not the synonym table.
ESPNET_PARSERS = {
    "lm_train": "espnet2's LMTask parser (SofaLMTask.get_parser)",
    "lm_perplexity": "espnet2.bin.lm_calc_perplexity's parser",
}

FORBIDDEN = ("--out", "--outdir", "--out_dir", "--datadir", "--expdir", "--km")

# The convention's name for a concept -> names other tools use for it, which no step may use.
SYNONYMS = {
    "--output_dir": ("--out", "--outdir", "--out_dir", "--output", "--odir", "--output_directory", "--dst_dir"),
    "--output_file": ("--out_file", "--outfile", "--output_path"),
    "--data_dir": ("--datadir", "--data_dirs", "--data", "--data_directory"),
    "--exp_dir": ("--expdir", "--exp", "--experiment_dir"),
    "--kmeans_file": ("--km", "--km_file", "--km_path", "--kmeans", "--kmeans_model", "--kmeans_path"),
    "--hubert_ckpt": ("--hubert", "--hubert_path", "--hubert_model", "--ckpt_path"),
    "--layer": ("--hubert_layer", "--feature_layer", "--layer_index"),
    "--fs": ("--sample_rate", "--sampling_rate", "--sr"),
    "--nj": ("--num_jobs", "--njobs", "--jobs"),
    "--job": ("--job_id", "--jobid", "--rank"),
    "--device": ("--gpu", "--cuda", "--use_gpu"),
    "--seed": ("--random_seed", "--rng_seed"),
    "--num_threads": ("--nthreads", "--n_threads", "--threads"),
    "--batch_size": ("--bs", "--batch", "--batchsize"),
    "--train_config": ("--config_file", "--exp_config", "--model_config"),
    "--model_file": ("--model_path", "--checkpoint", "--ckpt", "--model_ckpt"),
    "--log_level": ("--loglevel", "--verbosity", "--verbose"),
    "--lm_text_dir": ("--text_dir", "--lm_text_directory"),
    "--lm_text": ("--input", "--lm_text_file"),
    "--vocoder_dir": ("--vocoder", "--vocoder_path"),
    "--vocoder_file": ("--import_checkpoint", "--vocoder_checkpoint", "--vocoder_ckpt"),
    "--vocoder_config": ("--import_config",),
    "--calib_nsamples": ("--calibration_windows", "--nsamples", "--calib_samples", "--num_calibration"),
    "--calib_seqlen": ("--calibration_length", "--seqlen", "--calib_length"),
}


def parser_of(name: str) -> argparse.ArgumentParser:
    module = importlib.import_module(f"sofa_speechlm.bin.{name}")
    assert hasattr(module, "get_parser"), f"bin/{name}.py: no get_parser() (every step exposes its parser)"
    parser = module.get_parser()
    assert isinstance(parser, argparse.ArgumentParser), f"bin/{name}.py: get_parser() returned {type(parser)}"
    return parser


def options(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    """Long option names of the parser -> its (sub)commands that have them ('' for the top level)."""
    found: dict[str, set[str]] = {}

    def walk(p: argparse.ArgumentParser, command: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{command} {sub_name}".strip())
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    found.setdefault(option, set()).add(command)

    walk(parser, "")
    return found


def commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser, or its subcommands' parsers where it has subcommands."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [p for a in subs for p in a.choices.values()] or [parser]


def test_synonym_table_is_consistent():
    names = [s for synonyms in SYNONYMS.values() for s in synonyms]
    assert len(names) == len(set(names)), "a name is listed as the synonym of two concepts"
    assert not set(names) & set(SYNONYMS), "a convention name is listed as a synonym"
    assert set(FORBIDDEN) <= set(names), "every forbidden name is a synonym of a convention name"
    assert set(ESPNET_PARSERS) <= set(BIN_MODULES)


@pytest.mark.parametrize("name", BIN_MODULES)
def test_step_follows_the_convention(name):
    parser = parser_of(name)
    found = options(parser)
    parser.format_help()  # --help renders
    top_level = {o for a in parser._actions for o in a.option_strings}
    for command in commands(parser):  # on the top level, or on every subcommand
        command_options = top_level | {o for a in command._actions for o in a.option_strings}
        assert "--log_level" in command_options, f"bin/{name}.py {command.prog}: no --log_level"
    forbidden = sorted(set(found) & set(FORBIDDEN))
    assert not forbidden, f"bin/{name}.py: forbidden option names {forbidden}"
    if name not in ESPNET_PARSERS:
        source = inspect.getsource(importlib.import_module(f"sofa_speechlm.bin.{name}"))
        assert "setup_logging(args.log_level)" in source, f"bin/{name}.py: --log_level is not passed to setup_logging"
        used = {synonym: canonical for canonical, synonyms in SYNONYMS.items() for synonym in synonyms if synonym in found}
        assert not used, f"bin/{name}.py: use the convention's names: " + ", ".join(f"{s} -> {c}" for s, c in used.items())


def test_convention_names_are_shared():
    """The listing of every step's options: each convention name is used by some step, and the
    steps that read data dirs, write output dirs or take experiment dirs say so alike."""
    table = {name: set(options(parser_of(name))) for name in BIN_MODULES}
    for name, found in sorted(table.items()):
        print(f"{name}: {' '.join(sorted(found))}")
    used = set().union(*table.values())
    for canonical in ("--output_dir", "--exp_dir", "--data_dir", "--log_level", "--device", "--batch_size", "--seed"):
        assert canonical in used, f"no step has {canonical}"
    assert all("--log_level" in found for found in table.values())


SHELL_SCRIPTS = ["run.sh", "local/mini_corpus/data.sh", "local/fix_data_dir.sh", "local/validate_data_dir.sh",
                 "local/split_data_dir.sh", "local/subset_data_dir.sh", "local/combine_data_dir.sh",
                 "egs/TEMPLATE/speechlm1/scripts/data_from_corpora.sh", "tools/install.sh"]


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_scripts_pass_only_options_the_steps_have(script):
    """A renamed option breaks the recipe at run time, not at import: every `python -m
    sofa_speechlm.bin.<step> ...` line of the shell scripts names options its step has."""
    root = Path(__file__).resolve().parents[1]
    source = (root / script).read_text().replace("\\\n", " ")
    for match in re.finditer(r"python -m sofa_speechlm\.bin\.(\w+)([^\n]*)", source):
        name, rest = match.groups()
        if name in ESPNET_PARSERS:
            continue
        passed = set(re.findall(r"(?<![\w-])(--[a-z_]+)", rest.split(" | ")[0]))
        unknown = sorted(passed - set(options(parser_of(name))) - {"--help"})
        assert not unknown, f"{script}: bin/{name}.py has no option {unknown}"
