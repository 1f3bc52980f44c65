"""local/parse_options.sh: the option parsing every recipe script relies on."""

import textwrap

import pytest

from conftest import run_script


@pytest.fixture
def script(tmp_path, repo):
    path = tmp_path / "demo.sh"
    path.write_text(textwrap.dedent(f"""\
        #!/usr/bin/env bash
        set -euo pipefail
        stage=1            # first stage
        lm_configs="a b"   # LM configs
        out_dir=out        # where results go
        help_message="Usage: demo.sh [options]"
        . {repo}/local/parse_options.sh
        echo "stage=${{stage}} lm_configs=${{lm_configs}} out_dir=${{out_dir}} rest=$*"
        """))
    path.chmod(0o755)
    return path


def test_defaults_and_values(script, tmp_path, shell_env):
    assert run_script([script], tmp_path, shell_env, check=True).stdout.strip() == "stage=1 lm_configs=a b out_dir=out rest="
    result = run_script([script, "--stage", "3", "--lm_configs", "x y z", "--out-dir=res", "pos"], tmp_path, shell_env, check=True)
    assert result.stdout.strip() == "stage=3 lm_configs=x y z out_dir=res rest=pos"


def test_unknown_option_and_missing_value_fail(script, tmp_path, shell_env):
    unknown = run_script([script, "--stgae", "3"], tmp_path, shell_env)
    assert unknown.returncode != 0 and "unknown option --stgae" in unknown.stderr
    missing = run_script([script, "--stage"], tmp_path, shell_env)
    assert missing.returncode != 0 and "--stage needs a value" in missing.stderr


def test_help_lists_every_option_with_doc_and_default(script, tmp_path, shell_env):
    result = run_script([script, "--help"], tmp_path, shell_env, check=True)
    assert "Usage: demo.sh" in result.stdout
    for name, doc, default in [("stage", "first stage", "1"), ("lm_configs", "LM configs", "a b"), ("out_dir", "where results go", "out")]:
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(f"--{name} "))
        assert doc in line and f'(default: "{default}")' in line
    assert "--help_message" not in result.stdout


def test_run_sh_help_lists_stage_options(repo, shell_env):
    result = run_script([repo / "run.sh", "--help"], repo, shell_env, check=True)
    for option in ("--stage", "--stop_stage", "--skip_stages", "--nj", "--hubert_ckpt", "--nclusters", "--nbpe", "--lm_configs", "--ptq_methods", "--whisper_model"):
        assert option in result.stdout


@pytest.mark.parametrize("recipe", ["librispeech", "libritts"])
def test_recipe_run_sh_decodes_with_conf_decode_paper_sh(repo, shell_env, recipe):
    """egs/*/speechlm1/run.sh passes conf/decode/paper.sh's decode_opts to the driver (its --help
    shows the values the options would have), and an option given to run.sh still wins."""
    env = dict(shell_env, WHISPER_MODEL="/models/whisper-large")
    words = run_script(["bash", "-c", '. conf/decode/paper.sh && printf "%s\\n" "${decode_opts[@]}"'], repo, env, check=True).stdout.split()
    paper = dict(zip(words[::2], words[1::2]))
    assert paper["--asr_beam_size"] == paper["--tts_beam_size"] == "5" and paper["--whisper_model"] == "/models/whisper-large"
    recipe_dir = repo / "egs" / recipe / "speechlm1"

    def values(*args):
        lines = run_script([recipe_dir / "run.sh", *args, "--help"], recipe_dir, env, check=True).stdout.splitlines()
        return {name: next(line for line in lines if line.strip().startswith(f"{name} ")).rsplit('(default: "', 1)[1][:-2] for name in paper}

    assert values() == paper
    assert values("--tts_beam_size", "1", "--asr_max_new_tokens", "50") == dict(paper, **{"--tts_beam_size": "1", "--asr_max_new_tokens": "50"})
