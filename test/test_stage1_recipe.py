"""End to end: ./run.sh --stage 1 --stop_stage 1 into a temporary directory."""

import os

from conftest import run_script
from sofa_speechlm.data import DataDir
from sofa_speechlm.data.validate import validate_data_dir


def test_stage1_writes_valid_data_dirs_resumes_and_fails_cleanly(repo, tmp_path, shell_env):
    datadir, expdir = tmp_path / "data", tmp_path / "exp"
    args = [repo / "run.sh", "--stage", "1", "--stop_stage", "1", "--datadir", datadir, "--expdir", expdir]
    first = run_script(args, repo, shell_env, check=True)
    assert f"data dirs are in {datadir}" in first.stderr

    counts = {}
    for split in ("train", "dev", "test"):
        for task, required in [("textlm", ("text",)), ("speechlm", ("wav.scp",)), ("asr", ("wav.scp", "text")), ("tts", ("wav.scp", "text"))]:
            assert validate_data_dir(datadir / split / task, fs=16000, require=required) == []
            counts[split, task] = len(DataDir(datadir / split / task).utt_ids)
    assert not (datadir / "train" / "speechlm" / "text").exists()
    assert sum(counts[split, "textlm"] for split in ("train", "dev", "test")) >= 2000
    assert sum(counts[split, "asr"] for split in ("train", "dev", "test")) >= 400
    speakers = set(DataDir(datadir / "train" / "asr").utt2spk.values())
    assert len(speakers) >= 6

    second = run_script(args, repo, shell_env, check=True)
    assert "already complete" in second.stderr

    # A failing rerun (new seed, espeak-ng broken) leaves the earlier outputs untouched.
    before = {path: path.read_bytes() for path in datadir.glob("*/*/*") if path.is_file()}
    broken_bin = tmp_path / "broken"
    broken_bin.mkdir()
    (broken_bin / "espeak-ng").write_text("#!/bin/sh\necho 'voice data missing' >&2\nexit 1\n")
    (broken_bin / "espeak-ng").chmod(0o755)
    env = dict(shell_env, PATH=f"{broken_bin}:{shell_env['PATH']}")
    failed = run_script([*args, "--seed", "1"], repo, env)
    assert failed.returncode != 0 and "espeak-ng failed" in failed.stderr
    assert {path: path.read_bytes() for path in datadir.glob("*/*/*") if path.is_file()} == before
    assert not os.path.exists(datadir / ".staging")
