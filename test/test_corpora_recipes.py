"""egs/ recipes' stage 1 (their local/data.sh, which run.sh calls) from miniature corpora:
the task split of each recipe, and the messages."""

from corpora_testutils import make_librilight, make_librispeech, make_libritts, make_ljspeech, make_mls, make_vctk
from conftest import run_script
from sofa_speechlm.data import DataDir
from sofa_speechlm.data.validate import validate_data_dir

SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "test-clean")
TASK_FILES = {"textlm": ("text",), "speechlm": ("wav.scp",), "asr": ("wav.scp", "text"), "tts": ("wav.scp", "text")}


def _corpus_env(shell_env, **roots):
    env = {key: value for key, value in shell_env.items() if key not in ("LIBRISPEECH", "LIBRISPEECH_LM_TEXT", "LIBRILIGHT", "MLS", "LIBRITTS", "VCTK", "LJSPEECH")}
    return dict(env, OMP_NUM_THREADS="1", **{key: str(value) for key, value in roots.items()})


def _ids(data_dir):
    return DataDir(data_dir).utt_ids


def _check_task_dirs(data):
    for split in ("train", "dev", "test"):
        for task, required in TASK_FILES.items():
            assert validate_data_dir(data / split / task, fs=16000, require=required, check_pipes=True) == [], (split, task)
    assert not DataDir(data / "train" / "speechlm").has("text")
    assert not DataDir(data / "train" / "textlm").has("wav.scp")


def test_librispeech_recipe_stage1_builds_the_paper_mix(repo, tmp_path, shell_env):
    db = tmp_path / "db"
    env = _corpus_env(
        shell_env, LIBRISPEECH=make_librispeech(db / "ls", SUBSETS, lm_lines=20), LIBRILIGHT=make_librilight(db / "ll", subsets=("small", "medium", "large")),
        MLS=make_mls(db / "mls", subsets=("train",)), LIBRITTS=make_libritts(db / "lt", SUBSETS), VCTK=make_vctk(db / "vctk"), LJSPEECH=make_ljspeech(db / "lj"),
    )
    recipe = repo / "egs" / "librispeech" / "speechlm1"
    data = tmp_path / "data"
    run_script([recipe / "local" / "data.sh", "--data_dir", data, "--nj", "1"], recipe, env, check=True)
    _check_task_dirs(data)
    assert len(_ids(data / "train" / "textlm")) == 20                        # the LM corpus
    assert len(_ids(data / "train" / "speechlm")) == 6                       # Libri-Light small+medium+large, segmented
    assert DataDir(data / "train" / "speechlm").has("segments")
    asr = _ids(data / "train" / "asr")                                       # LibriSpeech 960 h + MLS English
    assert len(asr) == 3 * 4 + 4 and "4800_10003_000001" in asr and "202-7-0001" in asr
    assert len(_ids(data / "train" / "tts")) == 3 * 4 + 4                    # LibriTTS train-* + VCTK
    assert _ids(data / "test" / "asr") == _ids(data / "test" / "speechlm") == _ids(data / "test" / "textlm")
    assert _ids(data / "test" / "tts") == ["304_55_000001_000000", "304_55_000001_000001", "404_55_000001_000000", "404_55_000001_000001"]
    assert len(_ids(data / "vocoder")) == 3 and not DataDir(data / "vocoder").has("text")


def test_libritts_recipe_stage1_and_a_missing_corpus(repo, tmp_path, shell_env):
    recipe = repo / "egs" / "libritts" / "speechlm1"
    db = tmp_path / "db"
    env = _corpus_env(shell_env, LIBRITTS=make_libritts(db / "lt"))
    args = [recipe / "local" / "data.sh", "--data_dir", tmp_path / "data", "--nj", "1", "--train_sets", "libritts:train-clean-100"]
    failed = run_script(args, recipe, env)
    assert failed.returncode != 0
    assert "ljspeech: no corpus directory given and LJSPEECH is not set; set LJSPEECH in db.sh" in failed.stderr
    env["LJSPEECH"] = str(make_ljspeech(db / "lj"))
    run_script(args, recipe, env, check=True)
    data = tmp_path / "data"
    _check_task_dirs(data)
    assert _ids(data / "train" / "asr") == _ids(data / "train" / "tts") == _ids(data / "train" / "speechlm") == _ids(data / "train" / "textlm")
    assert DataDir(data / "train" / "textlm").text["300_55_000001_000000"] == "HELLO 300'S WORLD NUMBER 0"
    assert all(entry.startswith("sox ") for entry in DataDir(data / "dev" / "tts").wav_scp.values())
    assert len(_ids(data / "vocoder")) == 3


def test_a_changed_corpus_root_redoes_that_corpus_and_an_unchanged_rerun_skips(repo, tmp_path, shell_env):
    """Stage 1 through the recipe's run.sh: its marker records the db.sh roots, each subset's marker
    the corpus folder it was read from, so pointing LIBRITTS at another corpus prepares LibriTTS
    again (and not LJSpeech), and the data dirs follow the new corpus."""
    recipe = repo / "egs" / "libritts" / "speechlm1"
    db = tmp_path / "db"
    first, second = make_libritts(db / "first"), make_libritts(db / "second", ("dev-clean", "test-clean", "train-clean-100"))  # other speakers
    env = _corpus_env(shell_env, LIBRITTS=first, LJSPEECH=make_ljspeech(db / "lj"))
    data, exp = tmp_path / "data", tmp_path / "exp"
    args = [recipe / "run.sh", "--stage", "1", "--stop_stage", "1", "--datadir", data, "--expdir", exp, "--nj", "1",
            "--local_data_opts", "--train_sets libritts:train-clean-100"]
    data_sh = [recipe / "local" / "data.sh", "--data_dir", data, "--nj", "1", "--train_sets", "libritts:train-clean-100"]
    subsets = ("train-clean-100", "dev-clean", "test-clean")

    def audio_roots():
        return {entry.split()[1].split("/LibriTTS/")[0] for split in ("train", "dev", "test") for entry in DataDir(data / split / "asr").wav_scp.values()}

    run_script(args, recipe, env, check=True)
    assert audio_roots() == {str(first)}
    assert _ids(data / "train" / "asr")[0] == "300_55_000001_000000"
    assert f" LIBRITTS={first.resolve()}" in (exp / ".done" / "stage1").read_text()
    assert f"root={first.resolve()}/LibriTTS listing=" in (data / "local" / "libritts" / ".done.train-clean-100").read_text()

    unchanged = run_script(args, recipe, env, check=True)
    assert "already complete" in unchanged.stderr
    prepared = {path: path.stat().st_mtime_ns for path in (data / "local").glob("*/*/wav.scp")}
    direct = run_script(data_sh, recipe, env, check=True)                       # the data script alone keeps every subset
    assert "preparing it again" not in direct.stderr and all(f"libritts {subset} already prepared" in direct.stderr for subset in subsets)
    assert {path: path.stat().st_mtime_ns for path in prepared} == prepared

    moved = run_script(args, recipe, dict(env, LIBRITTS=str(second)), check=True)
    assert "Stage 1: data preparation" in moved.stderr
    assert all(f"libritts {subset}: settings or corpus changed" in moved.stderr for subset in subsets)
    assert "ljspeech all already prepared" in moved.stderr                      # the unchanged corpus is kept
    assert audio_roots() == {str(second)}
    assert _ids(data / "train" / "asr")[0] == "302_55_000001_000000" and "300_55_000001_000000" not in _ids(data / "train" / "textlm")
    assert f" LIBRITTS={second.resolve()}" in (exp / ".done" / "stage1").read_text()
    _check_task_dirs(data)
    again = run_script(args, recipe, dict(env, LIBRITTS=str(second)), check=True)
    assert "already complete" in again.stderr
