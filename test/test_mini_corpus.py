"""The embedded mini corpus: real prose, disjoint splits, several voices, deterministic."""

import filecmp
from pathlib import Path

import soundfile

from sofa_speechlm.data import read_table
from sofa_speechlm.data.mini_corpus import SPEAKERS, make_mini_corpus, normalize_transcript, plan_corpus, read_sentences

REPO = Path(__file__).resolve().parents[1]
PROSE = REPO / "local" / "mini_corpus" / "prose.txt"


def test_prose_is_large_enough_for_the_default_and_made_of_sentences():
    sentences = read_sentences(PROSE)
    assert len(sentences) >= 2500
    assert all(sentence[0].isupper() and sentence.endswith(".") and len(sentence.split()) >= 5 for sentence in sentences)


def test_plan_keeps_splits_disjoint_and_uses_every_voice():
    text, spoken = plan_corpus(read_sentences(PROSE), seed=777, num_text=2500, num_spoken=500)
    by_split = {split: {u.sentence for u in text if u.split == split} for split in ("train", "dev", "test")}
    assert sum(map(len, by_split.values())) == 2500
    assert not (by_split["train"] & by_split["dev"]) and not (by_split["train"] & by_split["test"]) and not (by_split["dev"] & by_split["test"])
    assert len(spoken) == 500 and {u.speaker for u in spoken} == set(SPEAKERS) and len(SPEAKERS) >= 6
    assert all(u.sentence in by_split[u.split] for u in spoken)


def test_transcripts_are_normalized():
    assert normalize_transcript("Return the object's built-in value, if any.") == "RETURN THE OBJECT'S BUILT IN VALUE IF ANY"


def test_same_seed_gives_byte_identical_output(tmp_path):
    for name in ("a", "b"):
        make_mini_corpus(PROSE, tmp_path / name, seed=3, fs=16000, num_text=30, num_spoken=10, nj=2)
    for split in ("train", "dev", "test"):
        for task in ("textlm", "speechlm", "asr", "tts"):
            first, second = tmp_path / "a" / split / task, tmp_path / "b" / split / task
            names = sorted(p.name for p in first.iterdir())
            assert names == sorted(p.name for p in second.iterdir())
            for name in names:
                if name == "wav.scp":  # same content but absolute paths under each root
                    assert (first / name).read_text().replace(str(tmp_path / "a"), "") == (second / name).read_text().replace(str(tmp_path / "b"), "")
                else:
                    assert filecmp.cmp(first / name, second / name, shallow=False), f"{split}/{task}/{name}"
    wavs_a = sorted((tmp_path / "a").glob("local/**/*.wav"))
    assert len(wavs_a) == 10
    for wav in wavs_a:
        assert filecmp.cmp(wav, tmp_path / "b" / wav.relative_to(tmp_path / "a"), shallow=False)
        info = soundfile.info(str(wav))
        assert info.samplerate == 16000 and info.channels == 1 and info.frames > 8000
    make_mini_corpus(PROSE, tmp_path / "c", seed=4, fs=16000, num_text=30, num_spoken=10, nj=1)
    assert read_table(tmp_path / "c" / "train" / "textlm" / "text") != read_table(tmp_path / "a" / "train" / "textlm" / "text")
