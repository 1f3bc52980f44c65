"""Corpus data preparation from miniature corpora in each corpus' published layout."""

import logging

import pytest
import soundfile

from corpora_testutils import make_librilight, make_librispeech, make_libritts, make_ljspeech, make_mls, make_vctk
from sofa_speechlm.bin import prepare_corpus as prepare_cli
from sofa_speechlm.data import DataDir, DataDirError
from sofa_speechlm.data.corpora import CORPORA, CorpusNotFound, LayoutError, PrepOptions, normalize_text, prepare_corpus, subset_source
from sofa_speechlm.data.corpora.librilight import merge_voice_activity
from sofa_speechlm.data.corpora.tasks import make_task_dir
from sofa_speechlm.data.validate import validate_data_dir

MAKERS = {"librispeech": make_librispeech, "librilight": make_librilight, "mls_en": make_mls, "libritts": make_libritts, "vctk": make_vctk, "ljspeech": make_ljspeech}
# corpus -> (subsets it publishes in the miniature, utterances per subset, transcribed?)
EXPECTED = {
    "librispeech": (["dev-clean", "test-clean", "train-clean-100"], 4, True),
    "librilight": (["small"], 2, False),
    "mls_en": (["dev", "test", "train"], 4, True),
    "libritts": (["dev-clean", "test-clean", "train-clean-100"], 4, True),
    "vctk": (["all"], 4, True),
    "ljspeech": (["all"], 3, True),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_every_corpus_becomes_valid_16khz_data_dirs(tmp_path, name):
    root = MAKERS[name](tmp_path / "corpus")
    summaries = prepare_corpus(name, root, tmp_path / "data", fs=16000, options=PrepOptions(nj=1))
    subsets, count, transcribed = EXPECTED[name]
    assert sorted(summary.subset for summary in summaries) == subsets
    for subset in subsets:
        data_dir = tmp_path / "data" / subset
        # check_pipes runs the sox pipes: every entry reads at 16 kHz with the utt2num_samples length.
        assert validate_data_dir(data_dir, fs=16000, require=("wav.scp",), check_pipes=True) == []
        assert len(DataDir(data_dir).utt_ids) == count
        assert DataDir(data_dir).has("text") == transcribed
        resampled = CORPORA[name].fs != 16000
        assert all(entry.endswith("|") == resampled for entry in DataDir(data_dir).wav_scp.values())


def test_librispeech_ids_text_lengths_and_lm_sampling(tmp_path):
    root = make_librispeech(tmp_path / "db", lm_lines=50)
    prepare_corpus("librispeech", root, tmp_path / "data", ["train-clean-100"], options=PrepOptions(nj=1))
    asr = DataDir(tmp_path / "data" / "train-clean-100")
    assert asr.utt_ids == ["100-7-0000", "100-7-0001", "200-7-0000", "200-7-0001"]
    assert asr.text["200-7-0001"] == "WORDS OF 200 NUMBER 1"
    assert asr.table("utt2num_samples")["100-7-0001"] == "4001"
    prepare_corpus("librispeech_lm", root, tmp_path / "lm", options=PrepOptions(num_sentences=10, seed=1))
    first = DataDir(tmp_path / "lm" / "lm").text
    assert len(first) == 10 and not DataDir(tmp_path / "lm" / "lm").has("wav.scp")
    prepare_corpus("librispeech_lm", root / "LibriSpeech" / "librispeech-lm-norm.txt", tmp_path / "lm2", options=PrepOptions(num_sentences=10, seed=1))
    assert DataDir(tmp_path / "lm2" / "lm").text == first


def test_transcripts_are_normalized_to_one_convention(tmp_path):
    assert normalize_text("Hello, Stella's world #1 - ok!", "upper") == "HELLO STELLA'S WORLD 1 OK"
    assert normalize_text("  Hello,  world ", "none") == "Hello, world"
    root = make_libritts(tmp_path / "db", subsets=("dev-clean",))
    prepare_corpus("libritts", root, tmp_path / "data", options=PrepOptions(nj=1))
    assert DataDir(tmp_path / "data" / "dev-clean").text["300_55_000001_000001"] == "HELLO 300'S WORLD NUMBER 1"


def test_orphans_are_counted_and_left_out(tmp_path, caplog):
    root = make_librispeech(tmp_path / "db", subsets=("dev-clean",))
    chapter = root / "LibriSpeech" / "dev-clean" / "100" / "7"
    (chapter / "100-7-0001.flac").unlink()
    (chapter / "100-7-0002.flac").write_bytes((chapter / "100-7-0000.flac").read_bytes())
    with caplog.at_level(logging.WARNING):
        [summary] = prepare_corpus("librispeech", root, tmp_path / "data", options=PrepOptions(nj=1))
    assert summary.report.count("transcript without audio") == 1
    assert summary.report.count("audio without transcript") == 1
    assert DataDir(tmp_path / "data" / "dev-clean").utt_ids == ["100-7-0000", "200-7-0000", "200-7-0001"]
    assert "1 left out (transcript without audio)" in caplog.text and "100-7-0002.flac" in caplog.text
    # VCTK's missing transcripts (p315 in the real corpus) are the same case.
    root = make_vctk(tmp_path / "vctk")
    (root / "VCTK-Corpus-0.92" / "txt" / "p226" / "p226_002.txt").unlink()
    [summary] = prepare_corpus("vctk", root, tmp_path / "vctk_data", options=PrepOptions(nj=1))
    assert summary.report.count("audio without transcript") == 1 and summary.utterances == 3


def test_corrupt_and_empty_audio_are_listed_per_utterance(tmp_path):
    root = make_mls(tmp_path / "db", subsets=("dev",))
    audio = root / "mls_english" / "dev" / "audio"
    (audio / "4800" / "10003" / "4800_10003_000000.flac").write_bytes(b"not audio at all")
    (audio / "5000" / "222" / "5000_222_000001.flac").write_bytes(b"")
    [summary] = prepare_corpus("mls_en", root, tmp_path / "data", options=PrepOptions(nj=2))
    listed = summary.report.left_out["unreadable or empty audio"]
    assert len(listed) == 2 and listed[0].startswith("4800_10003_000000: ")
    assert DataDir(tmp_path / "data" / "dev").utt_ids == ["4800_10003_000001", "5000_222_000000"]


def test_truncated_audio_is_found_by_decode_only(tmp_path):
    root = make_librispeech(tmp_path / "db", subsets=("dev-clean",))
    path = root / "LibriSpeech" / "dev-clean" / "100" / "7" / "100-7-0000.flac"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    [header] = prepare_corpus("librispeech", root, tmp_path / "a", options=PrepOptions(nj=1, check_audio="header"))
    [decode] = prepare_corpus("librispeech", root, tmp_path / "b", options=PrepOptions(nj=1, check_audio="decode"))
    assert header.utterances == 4
    assert decode.utterances == 3 and decode.report.count("unreadable or empty audio") == 1


def test_a_wrong_rate_is_refused_without_resampling_or_resampled(tmp_path, caplog):
    root = make_libritts(tmp_path / "db", subsets=("dev-clean",))
    with pytest.raises(DataDirError, match=r"at 24000 Hz, the recipe runs at 16000 Hz; rerun with --resample true"):
        prepare_corpus("libritts", root, tmp_path / "data", options=PrepOptions(nj=1, resample=False))
    assert not (tmp_path / "data" / "dev-clean").exists()
    # A copy at another rate than the published one is resampled like any other, with a warning.
    converted = make_librispeech(tmp_path / "ls8k", subsets=("dev-clean",))
    for path in converted.glob("LibriSpeech/dev-clean/*/*/*.flac"):
        soundfile.write(str(path), soundfile.read(str(path))[0][::2], 8000)
    with caplog.at_level(logging.WARNING):
        prepare_corpus("librispeech", converted, tmp_path / "data8k", options=PrepOptions(nj=1))
    assert "audio at 8000 Hz, but librispeech is published at 16000 Hz" in caplog.text
    assert validate_data_dir(tmp_path / "data8k" / "dev-clean", fs=16000, check_pipes=True) == []
    # At its own rate the corpus needs no resampling: plain paths.
    prepare_corpus("libritts", root, tmp_path / "data24", fs=24000, options=PrepOptions(nj=1, resample=False))
    assert validate_data_dir(tmp_path / "data24" / "dev-clean", fs=24000) == []


def test_opus_at_another_rate_is_refused_with_the_reason(tmp_path):
    root = make_mls(tmp_path / "db", subsets=("dev",), suffix="opus")
    prepare_corpus("mls_en", root, tmp_path / "data", options=PrepOptions(nj=1))
    assert validate_data_dir(tmp_path / "data" / "dev", fs=16000) == []
    with pytest.raises(DataDirError, match=r"sox cannot read \.opus"):
        prepare_corpus("mls_en", root, tmp_path / "data8", fs=8000, options=PrepOptions(nj=1))


def test_missing_corpus_names_the_layout_and_the_db_variable(tmp_path, monkeypatch):
    with pytest.raises(CorpusNotFound, match=r"libritts not found under .*LibriTTS.*Set LIBRITTS in db.sh"):
        prepare_corpus("libritts", tmp_path, tmp_path / "data")
    monkeypatch.delenv("LJSPEECH", raising=False)
    with pytest.raises(CorpusNotFound, match=r"LJSPEECH is not set.*LJSpeech-1.1"):
        prepare_corpus("ljspeech", None, tmp_path / "data")
    monkeypatch.setenv("LJSPEECH", str(make_ljspeech(tmp_path / "lj")))
    assert prepare_corpus("ljspeech", None, tmp_path / "data")[0].utterances == 3
    root = make_librispeech(tmp_path / "ls", subsets=("dev-clean",))
    with pytest.raises(DataDirError, match=r"subset\(s\) test-clean not found \(present: dev-clean\)"):
        prepare_corpus("librispeech", root, tmp_path / "data", ["test-clean"])


def test_unexpected_layouts_stop_with_the_path(tmp_path):
    root = make_librispeech(tmp_path / "db", subsets=("dev-clean",))
    transcript = root / "LibriSpeech" / "dev-clean" / "100" / "7" / "100-7.trans.txt"
    transcript.write_text("100-7-0000 FINE\n100_7_1 WRONG ID\n")
    with pytest.raises(LayoutError, match=r"100-7.trans.txt:2: expected '100-7-NNNN TRANSCRIPT'"):
        prepare_corpus("librispeech", root, tmp_path / "data")
    root = make_mls(tmp_path / "mls", subsets=("dev",))
    (root / "mls_english" / "dev" / "transcripts.txt").write_text("4800_10003_000000 no tab here\n")
    with pytest.raises(LayoutError, match=r"transcripts.txt:1: expected '<speaker>_<book>_<segment>\\tTRANSCRIPT'"):
        prepare_corpus("mls_en", root, tmp_path / "data")
    root = make_librilight(tmp_path / "ll")
    (root / "small" / "11" / "some_book_64kb_mp3" / "01_reader_64kb.json").write_text('{"speaker": "11"}')
    with pytest.raises(LayoutError, match=r"01_reader_64kb.json: no 'voice_activity' key"):
        prepare_corpus("librilight", root, tmp_path / "data")


def test_librilight_segments_follow_voice_activity_or_fixed_windows(tmp_path):
    assert merge_voice_activity([(0.2, 1.5), (1.8, 2.9), (3.1, 5.9)], 3.0) == [(0.2, 2.9), (3.1, 5.9)]
    assert merge_voice_activity([(0.0, 7.0)], 3.0) == [(0.0, 3.0), (3.0, 6.0), (6.0, 7.0)]
    root = make_librilight(tmp_path / "db", seconds=6.0)
    prepare_corpus("librilight", root, tmp_path / "vad", options=PrepOptions(nj=1, segment_length=3.0))
    segments = DataDir(tmp_path / "vad" / "small").segments
    assert sorted(segments.values())[:2] == [("11-some_book_64kb_mp3-01_reader_64kb", 0.2, 2.9), ("11-some_book_64kb_mp3-01_reader_64kb", 3.1, 5.9)]
    [summary] = prepare_corpus("librilight", root, tmp_path / "fixed", options=PrepOptions(nj=1, segment_method="fixed", segment_length=2.5, min_segment=1.5))
    pieces = sorted(DataDir(tmp_path / "fixed" / "small").segments.values())
    assert [(start, end) for _, start, end in pieces[:2]] == [(0.0, 2.5), (2.5, 5.0)]
    assert summary.report.count("segment shorter than 1.5 s") == 2 and summary.utterances == 4
    assert validate_data_dir(tmp_path / "fixed" / "small", fs=16000) == []


def test_task_dirs_keep_the_files_each_task_reads(tmp_path):
    ls = make_librispeech(tmp_path / "ls", subsets=("train-clean-100",), lm_lines=5)
    prepare_corpus("librispeech", ls, tmp_path / "local" / "librispeech", options=PrepOptions(nj=1))
    prepare_corpus("librispeech_lm", ls, tmp_path / "local" / "librispeech_lm")
    prepare_corpus("librilight", make_librilight(tmp_path / "ll"), tmp_path / "local" / "librilight", options=PrepOptions(nj=1))
    transcribed, lm, unlabelled = (tmp_path / "local" / name for name in ("librispeech/train-clean-100", "librispeech_lm/lm", "librilight/small"))
    make_task_dir("textlm", tmp_path / "textlm", [lm, transcribed])
    assert sorted(p.name for p in (tmp_path / "textlm").iterdir()) == ["spk2utt", "text", "utt2spk"]
    assert len(DataDir(tmp_path / "textlm").utt_ids) == 9
    # Segmented Libri-Light and whole-file LibriSpeech together: the latter get whole-file segments.
    make_task_dir("speechlm", tmp_path / "speechlm", [unlabelled, transcribed])
    speechlm = DataDir(tmp_path / "speechlm")
    assert not speechlm.has("text") and len(speechlm.utt_ids) == 6
    assert speechlm.segments["100-7-0001"] == ("100-7-0001", 0.0, 0.25)
    assert validate_data_dir(tmp_path / "speechlm", fs=16000, require=("wav.scp",)) == []
    with pytest.raises(DataDirError, match=r"librilight/small: has no text, which a asr data dir needs"):
        make_task_dir("asr", tmp_path / "asr", [transcribed, unlabelled])


def test_cli_reports_a_missing_corpus_and_follows_the_option_convention(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert prepare_cli.main(["--corpus", "vctk", "--corpus_dir", str(tmp_path), "--data_dir", str(tmp_path / "d")]) == 1
    assert "Set VCTK in db.sh" in caplog.text
    root = make_vctk(tmp_path / "vctk")
    assert prepare_cli.main(["--corpus", "vctk", "--corpus_dir", str(root), "--data_dir", str(tmp_path / "d"), "--vctk_mic", "mic2", "--nj", "1", "--log_level", "WARNING"]) == 0
    assert all(entry.split()[1].endswith("_mic2.flac") for entry in DataDir(tmp_path / "d" / "all").wav_scp.values())


def test_subset_source_names_the_resolved_root_and_follows_the_listing(tmp_path):
    root = make_librispeech(tmp_path / "ls", ("train-clean-100", "dev-clean"))
    (tmp_path / "link").symlink_to(root)
    before = {subset: subset_source("librispeech", tmp_path / "link", subset) for subset in ("train-clean-100", "dev-clean")}
    assert before["dev-clean"].startswith(f"root={root.resolve()}/LibriSpeech listing=")
    assert subset_source("librispeech", root, "dev-clean") == before["dev-clean"]      # the same corpus through another path
    (root / "LibriSpeech" / "train-clean-100" / "999").mkdir()                          # a speaker more in one subset
    assert subset_source("librispeech", root, "train-clean-100") != before["train-clean-100"]
    assert subset_source("librispeech", root, "dev-clean") == before["dev-clean"]
    (root / "LibriSpeech" / "SPEAKERS.TXT").write_text("a new release\n")               # a file of the top folder
    assert subset_source("librispeech", root, "dev-clean") != before["dev-clean"]
    lm = tmp_path / "lm.txt"
    lm.write_text("ONE SENTENCE\n")
    first = subset_source("librispeech_lm", lm, "lm")
    lm.write_text("ANOTHER SENTENCE\n")
    assert first.startswith(f"root={lm.resolve()} listing=") and subset_source("librispeech_lm", lm, "lm") != first
