"""The paper's PTQ grid (conf/ptq/paper.yaml) and decoding options (conf/decode/paper.sh) are
what the SOFA paper's tables and appendix D.2 say, and run.sh accepts every option."""

import subprocess

from sofa_speechlm.quant.plan import plan_variants, read_ptq_config

PAPER_METHODS = ["smoothquant", "affinequant", "omniquant", "rtn", "smoothquant_clip1", "smoothquant_clip5"]


def test_ptq_grid_has_every_table_variant_with_the_paper_hyperparameters(repo):
    config = read_ptq_config(repo / "conf/ptq/paper.yaml")
    variants = {v.name: v.config for v in plan_variants(PAPER_METHODS, ["W8A8", "W4A4"], config)}
    tables = {f"{m}_{s}" for m in ("smoothquant", "affinequant", "omniquant") for s in ("w8a8", "w4a4")}  # Tables 1, 10
    tables |= {f"smoothquant_clip{c}_{s}" for c in (1, 5) for s in ("w8a8", "w4a4")}  # Table 9
    tables |= {"rtn_w4a16"}  # Table 8b
    assert tables <= set(variants)
    assert {variants[f"smoothquant_{s}"].alpha for s in ("w8a8", "w4a4")} == {0.5}
    assert {variants[f"omniquant_{s}"].group_size for s in ("w8a8", "w4a4")} == {128}
    assert {variants[f"affinequant_{s}"].stability_factor for s in ("w8a8", "w4a4")} == {0.01}
    assert (variants["smoothquant_clip1_w4a4"].clip, variants["smoothquant_clip5_w4a4"].clip) == (0.01, 0.05)
    assert variants["rtn_w4a16"].a_bits >= 16
    assert config["calibration"]["batch_size"] == config["calibration"]["nsamples"] == 256


def test_decode_options_are_run_sh_options(repo, shell_env):
    listed = subprocess.run(
        ["bash", "-c", '. conf/decode/paper.sh && printf "%s\\n" "${decode_opts[@]}" && echo --- && ./run.sh --help'],
        cwd=repo, env=dict(shell_env, WHISPER_MODEL="/models/whisper-large"), capture_output=True, text=True, check=True,
    ).stdout
    options, help_text = listed.split("---\n")
    words = options.split()
    names = [w for w in words if w.startswith("--")]
    assert names and all(f"  {name} " in help_text for name in names), names
    pairs = dict(zip(words[::2], words[1::2]))
    assert pairs["--asr_max_utts"] == pairs["--tts_max_utts"] == "0"  # whole test sets, as the paper
    assert pairs["--whisper_model"] == "/models/whisper-large"
