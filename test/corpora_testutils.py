"""Miniature corpora in each corpus' published on-disk layout (a few short tones each)."""

import json

import numpy as np
import soundfile


def tone(seconds, fs, seed=0):
    rng = np.random.default_rng(seed)
    return (0.1 * np.sin(np.arange(int(seconds * fs)) * (0.05 + 0.01 * seed)) + 0.001 * rng.standard_normal(int(seconds * fs))).astype(np.float32)


def make_librispeech(root, subsets=("train-clean-100", "dev-clean", "test-clean"), lm_lines=0):
    """root = ${LIBRISPEECH}; writes root/LibriSpeech/<subset>/<spk>/<chapter>/..."""
    corpus = root / "LibriSpeech"
    for offset, subset in enumerate(subsets):
        for speaker in (100 + offset, 200 + offset):
            chapter = corpus / subset / str(speaker) / "7"
            chapter.mkdir(parents=True)
            lines = []
            for utt in range(2):
                utt_id = f"{speaker}-7-{utt:04d}"
                soundfile.write(str(chapter / f"{utt_id}.flac"), tone(0.25 + utt / 16000, 16000, utt), 16000)
                lines.append(f"{utt_id} WORDS OF {speaker} NUMBER {utt}")
            (chapter / f"{speaker}-7.trans.txt").write_text("\n".join(lines) + "\n")
    if lm_lines:
        (corpus / "librispeech-lm-norm.txt").write_text("".join(f"SENTENCE NUMBER {n}\n" for n in range(lm_lines)))
    return root


def make_librilight(root, subsets=("small",), seconds=6.0):
    """root = ${LIBRILIGHT}; writes root/<subset>/<spk>/<book>/<name>.flac + .json"""
    for offset, subset in enumerate(subsets):
        for speaker in (str(11 + 10 * offset), str(12 + 10 * offset)):
            book = root / subset / speaker / "some_book_64kb_mp3"
            book.mkdir(parents=True)
            soundfile.write(str(book / "01_reader_64kb.flac"), tone(seconds, 16000, int(speaker)), 16000)
            vad = [[0.2, 1.5], [1.8, 2.9], [3.1, 5.9]]
            (book / "01_reader_64kb.json").write_text(json.dumps({"speaker": speaker, "snr": 12.0, "voice_activity": vad, "book_meta": {}}))
    return root


def make_mls(root, subsets=("train", "dev", "test"), suffix="flac"):
    """root = ${MLS}; writes root/mls_english/<subset>/{transcripts.txt,audio/<spk>/<book>/<id>.flac}"""
    corpus = root / "mls_english"
    for subset in subsets:
        lines = []
        for speaker, book in (("4800", "10003"), ("5000", "222")):
            folder = corpus / subset / "audio" / speaker / book
            folder.mkdir(parents=True)
            for seg in range(2):
                utt_id = f"{speaker}_{book}_{seg:06d}"
                kwargs = {"format": "OGG", "subtype": "OPUS"} if suffix == "opus" else {}
                soundfile.write(str(folder / f"{utt_id}.{suffix}"), tone(0.3, 16000, seg), 16000, **kwargs)
                lines.append(f"{utt_id}\tthe words of {speaker}, number {seg}")
        (corpus / subset / "transcripts.txt").write_text("\n".join(lines) + "\n")
    return root


def make_libritts(root, subsets=("train-clean-100", "dev-clean", "test-clean"), fs=24000):
    """root = ${LIBRITTS}; writes root/LibriTTS/<subset>/<spk>/<chapter>/<id>.wav (24 kHz) + .normalized.txt"""
    corpus = root / "LibriTTS"
    for offset, subset in enumerate(subsets):
        for speaker in (str(300 + offset), str(400 + offset)):
            chapter = corpus / subset / speaker / "55"
            chapter.mkdir(parents=True)
            for utt in range(2):
                utt_id = f"{speaker}_55_000001_00000{utt}"
                soundfile.write(str(chapter / f"{utt_id}.wav"), tone(0.3 + utt * 0.01, fs, utt), fs)
                (chapter / f"{utt_id}.normalized.txt").write_text(f"Hello, {speaker}'s world number {utt}!")
                (chapter / f"{utt_id}.original.txt").write_text(f"Hello, {speaker}'s world #{utt}!")
    return root


def make_vctk(root):
    """root = ${VCTK}; writes root/VCTK-Corpus-0.92/{txt,wav48_silence_trimmed}/<spk>/ (48 kHz flac, mic1/mic2)"""
    corpus = root / "VCTK-Corpus-0.92"
    for speaker in ("p225", "p226"):
        (corpus / "txt" / speaker).mkdir(parents=True)
        (corpus / "wav48_silence_trimmed" / speaker).mkdir(parents=True)
        for utt in (1, 2):
            utt_id = f"{speaker}_{utt:03d}"
            (corpus / "txt" / speaker / f"{utt_id}.txt").write_text(f"Please call Stella {utt}.\n")
            for mic in ("mic1", "mic2"):
                soundfile.write(str(corpus / "wav48_silence_trimmed" / speaker / f"{utt_id}_{mic}.flac"), tone(0.2, 48000, utt), 48000)
    return root


def make_ljspeech(root, count=3):
    """root = ${LJSPEECH}; writes root/LJSpeech-1.1/{metadata.csv,wavs/<id>.wav} at 22.05 kHz"""
    corpus = root / "LJSpeech-1.1"
    (corpus / "wavs").mkdir(parents=True)
    lines = []
    for index in range(1, count + 1):
        utt_id = f"LJ001-{index:04d}"
        soundfile.write(str(corpus / "wavs" / f"{utt_id}.wav"), tone(0.3, 22050, index), 22050)
        lines.append(f"{utt_id}|Printing, in 1 sense|Printing, in one sense")
    (corpus / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root
