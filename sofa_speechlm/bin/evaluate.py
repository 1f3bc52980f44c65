"""Stage 6: score one SpeechLM (text/speech perplexity and accuracy, ASR WER, TTS CER, latency),
or the TTS reference rows, into <output_dir>/scores.json (CONTRACTS.md).

The full-precision stage-4 model:
    python -m sofa_speechlm.bin.evaluate --exp_dir exp/lm_x            # -> exp/lm_x/eval/fp
Stage-5 variants of it (checked to come from that experiment and vocabulary), and with --fp
true the full-precision model too, in one process (Whisper and the vocoder are loaded once):
    python -m sofa_speechlm.bin.evaluate --exp_dir exp/lm_x --ptq_dir exp/lm_x/ptq/rtn_w8a8 ... [--fp true]
Several models on other test text (e.g. the units of a quantized tokenizer) go to --output_root:
    python -m sofa_speechlm.bin.evaluate --exp_dir exp/lm_x --fp true --ptq_dir ... --lm_text_dir D \
        --output_root exp/lm_x/eval_tokenizer_ptq/<tokenizer>               # -> .../<tokenizer>/<fp|variant>
A lora/qlora experiment as it trained (qlora: int8 base + unmerged adapters, not the merged
fp32 model that --fp scores), as the variant `as_trained`:
    python -m sofa_speechlm.bin.evaluate --exp_dir exp/lm_x --as_trained true   # -> exp/lm_x/eval/as_trained
The reference rows (Whisper on the ground-truth audio and on the vocoder's resynthesis):
    python -m sofa_speechlm.bin.evaluate --reference --output_dir exp/eval/reference

A metric whose inputs are missing (vocoder, Whisper model, test set) is listed under
"not_computed" with the reason, and the others are still computed. Rerunning skips every
metric group already in scores.json with the same settings.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
from pathlib import Path

import torch
import yaml

from espnet2.utils.types import str2bool

from sofa_speechlm.bin import add_log_level, setup_logging
from sofa_speechlm.eval.scores import Scores
from sofa_speechlm.eval.whisper import default_whisper_model

EVAL_SETS = ("textlm", "speechlm", "asr", "tts")
REFERENCES = ("ground_truth", "resynthesis")
QUANT_CONFIG = "quant_config.yaml"  # stage 5 (sofa_speechlm.quant) writes it
AS_TRAINED = "as_trained"  # the variant name of an adapter model scored unmerged


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp_dir", help="stage-4 LM experiment dir (exp/lm_<name>)")
    parser.add_argument("--ptq_dir", nargs="+", action="extend", default=[], help="stage-5 variant dirs of that experiment (exp/lm_<name>/ptq/<variant>)")
    parser.add_argument("--fp", type=str2bool, default=None, help="also score the full-precision model (default: only without --ptq_dir)")
    parser.add_argument("--as_trained", type=str2bool, default=False,
                        help="also score a lora/qlora experiment as it trained (qlora: int8 base + adapters), variant as_trained")
    parser.add_argument("--reference", action="store_true", help="score the TTS reference rows instead of a model")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--output_dir", help="default: <exp_dir>/eval/<fp|variant>, or exp/eval/reference (one model only)")
    output.add_argument("--output_root", help="each model into <output_root>/<fp|variant> (default: <exp_dir>/eval)")
    parser.add_argument("--lm_text_dir", default="dump/lm_text/test", help="test LM text: textlm.txt speechlm.txt asr.txt tts.txt")
    parser.add_argument("--tts_data_dir", default="data/test/tts", help="test TTS data dir (wav.scp, text, units) for --reference")
    parser.add_argument("--eval_sets", nargs="+", default=list(EVAL_SETS), choices=EVAL_SETS, help="test sets to score")
    parser.add_argument("--latency", type=str2bool, default=True, help="measure per-token latency at batch size 1 (fp and real-kernel variants)")
    parser.add_argument("--latency_tokens", type=int, default=64, help="decoding steps timed for the latency")
    parser.add_argument("--asr_beam_size", type=int, default=1, help="ASR beam size (1: greedy)")
    parser.add_argument("--tts_beam_size", type=int, default=1, help="TTS beam size (1: greedy)")
    parser.add_argument("--asr_max_utts", type=int, default=0, help="score the first N ASR test utterances (0: all)")
    parser.add_argument("--tts_max_utts", type=int, default=0, help="score the first N TTS test utterances (0: all)")
    parser.add_argument("--asr_max_new_tokens", type=int, default=100, help="longest ASR transcript in tokens")
    parser.add_argument("--tts_max_new_tokens", type=int, default=300, help="longest TTS unit sequence in tokens")
    parser.add_argument("--batch_size", type=int, default=16, help="utterances decoded (or scored) together")
    parser.add_argument("--vocoder_dir", default="exp/vocoder", help="stage-2 vocoder dir for TTS")
    parser.add_argument("--whisper_model", default=None,
                        help="openai-whisper .pt or faster-whisper (CTranslate2) dir; default: the one tools/install.sh "
                        f"installed ({default_whisper_model()})")
    parser.add_argument("--execution", default="simulated", choices=["real", "simulated"],
                        help="how a PTQ variant's metrics are scored: simulated (the method's own fake-quant "
                        "numerics) or real (integer kernels; W8A8 re-quantizes asymmetric methods symmetrically). "
                        "Latency is timed on real kernels either way, where the setting has them")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--num_threads", type=int, default=0, help="CPU threads of torch and Whisper (0: torch's default)")
    parser.add_argument("--seed", type=int, default=777, help="random seed (decoding is deterministic)")
    add_log_level(parser)
    return parser


def sha256_of_tokens(tokens) -> str:
    """sha256 of the token list joined by newlines (stage 5's `source.token_list_sha256`)."""
    return hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()


def fingerprint(*paths: Path) -> str:
    """Changes when a model file is rewritten (size and modification time)."""
    stats = [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths if p.is_file()]
    return hashlib.sha1("|".join(stats).encode()).hexdigest()[:16]


class Subject:
    """The model under evaluation: its scores.json header, loader and vocabulary."""

    def __init__(self, args, ptq_dir: str | None, as_trained: bool = False):
        from sofa_speechlm.lm.experiment import LMExperiment

        self.args = args
        self.ptq_dir = ptq_dir
        self.experiment = LMExperiment.find_as_trained(args.exp_dir) if as_trained else LMExperiment.find(args.exp_dir)
        config = yaml.safe_load(self.experiment.train_config.read_text(encoding="utf-8"))
        self.token_list = config["token_list"]
        if isinstance(self.token_list, str):
            self.token_list = Path(self.token_list).read_text(encoding="utf-8").split("\n")[:-1]
        self.bpemodel = config["bpemodel"]
        self.loss = (config.get("model_conf") or {}).get("loss", "voxtlm")
        lm_conf = config.get("lm_conf") or {}
        model_type = (lm_conf.get("hf_config") or {}).get("model_type")
        self.header = {
            "lm": Path(args.exp_dir).resolve().name, "variant": "fp", "attention": lm_conf.get("attention", "sofa"),
            "finetune": self.experiment.finetune, "model_type": model_type, "method": None,
            "setting": "W16A16", "execution": "fp",
        }
        self.model_files = [self.experiment.model_file]
        self.quant_config = None
        if ptq_dir:
            self._check_ptq_dir(Path(ptq_dir))
        if as_trained and self.header["finetune"] == "qlora":
            from sofa_speechlm.lm.finetune import DEFAULT_QLORA_THRESHOLD

            threshold = lm_conf.get("qlora_threshold", DEFAULT_QLORA_THRESHOLD)
            self.header.update(variant=AS_TRAINED, method=f"llm_int8_t{threshold:g}", setting="W8A8", execution="real")
        elif as_trained:
            self.header.update(variant=AS_TRAINED)
        self._model = None

    def _check_ptq_dir(self, ptq_dir: Path) -> None:
        """The variant is complete and was quantized from this experiment with its vocabulary."""
        if not (ptq_dir / QUANT_CONFIG).is_file():
            raise FileNotFoundError(f"--ptq_dir {ptq_dir}: no {QUANT_CONFIG}: not a stage-5 variant dir")
        if not (ptq_dir / ".done").is_file():
            raise FileNotFoundError(f"--ptq_dir {ptq_dir}: no .done marker: the variant is incomplete (rerun stage 5)")
        config = yaml.safe_load((ptq_dir / QUANT_CONFIG).read_text(encoding="utf-8")) or {}
        source = config.get("source") or {}
        exp_dir = Path(self.args.exp_dir).resolve()
        if source.get("exp_dir") and Path(source["exp_dir"]).resolve() != exp_dir:
            raise ValueError(f"--ptq_dir {ptq_dir} was quantized from {source['exp_dir']}, not from --exp_dir {exp_dir}")
        expected = sha256_of_tokens(self.token_list)
        if source.get("token_list_sha256") and source["token_list_sha256"] != expected:
            raise ValueError(
                f"--ptq_dir {ptq_dir}: its token list (sha256 {source['token_list_sha256'][:12]}...) is not the one of "
                f"{self.experiment.train_config} ({expected[:12]}...): a variant of another vocabulary"
            )
        self.quant_config = config
        self.header.update(
            variant=ptq_dir.name, method=config.get("method"), setting=str(config.get("setting", "")).upper(),
            execution=self.args.execution or config.get("execution", "simulated"),
            model_type=config.get("model_type", self.header["model_type"]),
            attention=config.get("attention", self.header["attention"]),
        )
        self.model_files = [ptq_dir / "model.safetensors", ptq_dir / "quant_config.yaml"]

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            if self.quant_config is not None:
                from sofa_speechlm.quant import load_quantized

                model = load_quantized(self.ptq_dir, device=self.args.device, execution=self.args.execution)
                execution = getattr(model, "execution", None)
                if execution in ("real", "simulated"):
                    self.header["execution"] = execution
            else:
                model, _ = self.experiment.load(self.args.device)
            vocab = model.get_output_embeddings().weight.size(0)
            if vocab != len(self.token_list):
                raise ValueError(f"the model has {vocab} output tokens but the token list of "
                                 f"{self.experiment.train_config} has {len(self.token_list)}")
            self._model = model.eval()
        return self._model


def default_output_dir(args, ptq_dir: str | None = None, as_trained: bool = False) -> Path:
    if args.output_dir:
        return Path(args.output_dir)
    if args.reference:
        return Path("exp/eval/reference")
    root = Path(args.output_root) if args.output_root else Path(args.exp_dir) / "eval"
    return root / (Path(ptq_dir).name if ptq_dir else AS_TRAINED if as_trained else "fp")


def evaluate_model(args, ptq_dir: str | None = None, as_trained: bool = False) -> Path:
    from sofa_speechlm.eval.asr import score_asr
    from sofa_speechlm.eval.decoding import BatchDecoder
    from sofa_speechlm.eval.latency import ms_per_token
    from sofa_speechlm.eval.perplexity import perplexity
    from sofa_speechlm.eval.prompts import read_prompts
    from sofa_speechlm.eval.tts import score_tts
    from sofa_speechlm.text.tokenizer import JointTokenizer

    subject = Subject(args, ptq_dir, as_trained)
    output_dir = default_output_dir(args, ptq_dir, as_trained)
    scores = Scores(output_dir, subject.header)
    tokenizer = JointTokenizer(subject.bpemodel, subject.token_list)
    model_id = fingerprint(*subject.model_files)
    lm_text = Path(args.lm_text_dir)
    sos_eos = len(subject.token_list) - 1

    for eval_set, prefix in (("textlm", "text"), ("speechlm", "speech")):
        if eval_set not in args.eval_sets:
            continue
        path = lm_text / f"{eval_set}.txt"
        settings = {"model": model_id, "data": fingerprint(path), "loss": subject.loss}
        if scores.done(eval_set, settings):
            logging.info(f"{eval_set}: already scored in {scores.path}")
            continue
        if not path.is_file():
            scores.record(eval_set, settings, not_computed=f"test set {path} not found")
            logging.error(f"{eval_set}: {path} not found; {prefix}_ppl not computed")
            continue
        from sofa_speechlm.data.kaldi import read_table

        lines = read_table(path)
        ids = [tokenizer.pieces_to_ids(tokenizer.tokenize(line)) for line in lines.values()]
        result = perplexity(subject.model, ids, subject.token_list, subject.loss, args.batch_size, names=list(lines))
        logging.info(f"{eval_set}: PPL {result.ppl:.3f}, accuracy {result.accuracy:.2f}% over {result.tokens} tokens")
        scores.record(eval_set, settings, metrics={f"{prefix}_ppl": result.ppl, f"{prefix}_acc": result.accuracy},
                      subset={"scored": result.sequences, "of": result.sequences + result.long_lines, "tokens": result.tokens})

    decoder = None
    if "asr" in args.eval_sets:
        path = lm_text / "asr.txt"
        settings = {"model": model_id, "data": fingerprint(path), "beam_size": args.asr_beam_size,
                    "max_utts": args.asr_max_utts, "max_new_tokens": args.asr_max_new_tokens}
        if scores.done("asr", settings):
            logging.info(f"asr: already scored in {scores.path}")
        else:
            try:
                prompts = read_prompts(path, tokenizer, args.asr_max_utts)
            except (FileNotFoundError, ValueError) as error:
                logging.error(f"asr: {error}; asr_wer not computed")
                scores.record("asr", settings, not_computed=str(error))
            else:
                decoder = BatchDecoder(subject.model, sos_eos, args.batch_size)
                result = score_asr(decoder, tokenizer, prompts, output_dir / "decode_asr", args.asr_beam_size,
                                   args.asr_max_new_tokens)
                scores.record("asr", settings, metrics={"asr_wer": result["wer"]},
                              subset={"scored": len(prompts.utt_ids), "of": prompts.total,
                                      "empty_hypotheses": result["empty_hypotheses"]},
                              decoding={"asr_beam_size": args.asr_beam_size, "asr_max_new_tokens": args.asr_max_new_tokens})

    if "tts" in args.eval_sets:
        path = lm_text / "tts.txt"
        whisper_model = args.whisper_model or default_whisper_model()
        vocoder_dir = Path(args.vocoder_dir)
        settings = {"model": model_id, "data": fingerprint(path), "beam_size": args.tts_beam_size,
                    "max_utts": args.tts_max_utts, "max_new_tokens": args.tts_max_new_tokens,
                    "vocoder": fingerprint(*sorted(vocoder_dir.glob("*"))), "whisper_model": str(whisper_model)}
        if scores.done("tts", settings):
            logging.info(f"tts: already scored in {scores.path}")
        else:
            try:
                whisper, vocoder = load_tts_judges(str(whisper_model), str(vocoder_dir), args.device)
                prompts = read_prompts(path, tokenizer, args.tts_max_utts)
            except (FileNotFoundError, ValueError, ImportError) as error:
                logging.error(f"tts: {error}; tts_cer not computed")
                scores.record("tts", settings, not_computed=str(error))
            else:
                decoder = decoder or BatchDecoder(subject.model, sos_eos, args.batch_size)
                result = score_tts(decoder, tokenizer, prompts, vocoder, whisper, output_dir / "decode_tts",
                                   args.tts_beam_size, args.tts_max_new_tokens)
                scores.record("tts", settings, metrics={"tts_cer": result["cer"]},
                              subset={"scored": len(prompts.utt_ids), "of": prompts.total,
                                      "empty_hypotheses": result["empty_hypotheses"]},
                              decoding={"tts_beam_size": args.tts_beam_size, "tts_max_new_tokens": args.tts_max_new_tokens,
                                        "whisper_model": whisper.name, "vocoder": str(vocoder_dir)})

    # Simulated quantization (fake-quant in fp32) says nothing about speed: fp and real kernels are timed.
    if args.latency:
        settings = {"model": model_id, "tokens": args.latency_tokens, "device": args.device}
        timed, execution = latency_model(subject, args)
        if timed is None:
            logging.info(f"latency: not measured ({execution})")
        elif scores.done("latency", settings):
            logging.info(f"latency: already measured in {scores.path}")
        else:
            prompt = [sos_eos] + tokenizer.pieces_to_ids(tokenizer.tokenize("<generatetext> the"))
            value = ms_per_token(timed, prompt, args.latency_tokens)
            logging.info(f"latency: {value:.3f} ms per token at batch size 1 ({execution}, {args.device})")
            scores.record("latency", settings, latency={
                "ms_per_token_bs1": value, "execution": execution, "device": args.device,
                "threads": torch.get_num_threads()})
    scores.data.update({k: v for k, v in subject.header.items()})
    scores.write()
    logging.info(f"scores of {subject.header['lm']}/{subject.header['variant']}: {scores.data['metrics']} -> {scores.path}")
    return scores.path


def latency_model(subject, args) -> tuple:
    """(model to time, its execution) or (None, why not): the fp model, or the variant on real kernels."""
    if subject.quant_config is None or subject.header["execution"] == "real":
        return subject.model, subject.header["execution"]
    from sofa_speechlm.quant import load_quantized
    from sofa_speechlm.quant.real import real_kernel_available

    setting = subject.header["setting"]
    if not real_kernel_available(setting, args.device):
        return None, f"no integer kernel for {setting} on {args.device}: simulated only"
    return load_quantized(subject.ptq_dir, device=args.device, execution="real"), "real"


@functools.lru_cache(maxsize=2)
def load_tts_judges(whisper_model: str, vocoder_dir: str, device: str):
    """(Whisper transcriber, vocoder), loaded once per process; a clear error naming whichever is missing."""
    from sofa_speechlm.vocoder import load_vocoder

    vocoder_dir = Path(vocoder_dir)
    if not vocoder_dir.is_dir():
        raise FileNotFoundError(f"no vocoder in --vocoder_dir {vocoder_dir}: no such dir (stage 2 writes it)")
    return load_judge(whisper_model, device), load_vocoder(vocoder_dir, device)


@functools.lru_cache(maxsize=2)
def load_judge(whisper_model: str, device: str):
    """The Whisper transcriber, loaded once per process."""
    from sofa_speechlm.eval.whisper import load_whisper

    if whisper_model == "None":
        raise FileNotFoundError("no Whisper model: give --whisper_model (a .pt or CTranslate2 dir) or run tools/install.sh")
    return load_whisper(whisper_model, device)


def evaluate_references(args) -> Path:
    from sofa_speechlm.data.kaldi import read_table, sort_key
    from sofa_speechlm.eval.tts import reference_audio, transcribe_and_score

    output_root = default_output_dir(args)
    data_dir = Path(args.tts_data_dir)
    whisper_model = args.whisper_model or default_whisper_model()
    vocoder_dir = Path(args.vocoder_dir)
    for name in REFERENCES:
        header = {"lm": None, "variant": name, "attention": None, "finetune": None, "model_type": None,
                  "method": None, "setting": None, "execution": None}
        output_dir = output_root / name
        scores = Scores(output_dir, header)
        settings = {"data": fingerprint(data_dir / "wav.scp", data_dir / "text", data_dir / "units"),
                    "max_utts": args.tts_max_utts, "whisper_model": str(whisper_model),
                    "vocoder": fingerprint(*sorted(vocoder_dir.glob("*"))) if name == "resynthesis" else None}
        if scores.done("tts", settings):
            logging.info(f"reference {name}: already scored in {scores.path}")
            continue
        try:
            texts = read_table(data_dir / "text")
            units_file = data_dir / "units"
            if not units_file.is_file():
                raise FileNotFoundError(f"{units_file} not found (stage 2 writes the test units)")
            utt_ids = sorted(set(texts) & set(read_table(units_file)), key=sort_key)
            total = len(utt_ids)
            if args.tts_max_utts > 0:
                utt_ids = utt_ids[: args.tts_max_utts]
            if name == "ground_truth":
                whisper, vocoder = load_judge(str(whisper_model), args.device), None
            else:
                whisper, vocoder = load_tts_judges(str(whisper_model), str(vocoder_dir), args.device)
            audio = reference_audio(name, data_dir, utt_ids, vocoder)
        except (FileNotFoundError, ValueError, ImportError) as error:
            logging.error(f"reference {name}: {error}; tts_cer not computed")
            scores.record("tts", settings, not_computed=str(error))
            continue
        result = transcribe_and_score(whisper, utt_ids, [texts[u] for u in utt_ids], audio, output_dir, f"reference {name}")
        scores.record("tts", settings, metrics={"tts_cer": result["cer"]}, subset={"scored": len(utt_ids), "of": total},
                      decoding={"whisper_model": whisper.name, "vocoder": str(vocoder_dir) if vocoder else None})
    return output_root


def main(cmd=None) -> None:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    torch.manual_seed(args.seed)
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    if args.reference:
        if args.exp_dir or args.ptq_dir or args.output_root:
            raise SystemExit("--reference scores the reference rows into --output_dir: give no --exp_dir, --ptq_dir or --output_root")
        evaluate_references(args)
        return
    if not args.exp_dir:
        raise SystemExit("--exp_dir is required (the stage-4 experiment; with --ptq_dir for one of its variants)")
    for name in ("asr_beam_size", "tts_beam_size", "batch_size", "asr_max_new_tokens", "tts_max_new_tokens"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} {getattr(args, name)}: expected >= 1")
    with_fp = args.fp if args.fp is not None else not args.ptq_dir
    models = ([None] if with_fp else []) + list(args.ptq_dir)
    if args.output_dir and len(models) + args.as_trained > 1:
        raise SystemExit(f"--output_dir names one model's dir, but {len(models) + args.as_trained} models are scored; give --output_root instead")
    for ptq_dir in models:
        evaluate_model(args, ptq_dir)
    if args.as_trained:
        evaluate_model(args, as_trained=True)


if __name__ == "__main__":
    main()
