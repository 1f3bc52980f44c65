"""Continue task prompts with a trained SpeechLM (ASR transcripts, TTS units, continuations).

Each line of --lm_text is `uttid task-line`; the prompt is the line up to and including its first
generate token (the rest, if any, is ignored, so stage 3's LM text files work unchanged).
Writes <output_dir>/text (`uttid continuation`, detokenized: words, or unit characters for
speech) and <output_dir>/score (`uttid total score`: log-probability plus any length bonus).

    python -m sofa_speechlm.bin.lm_inference --train_config exp/lm_x/config.yaml \\
        --model_file exp/lm_x/valid.loss.ave.pth --lm_text dump/lm_text/test/asr.txt \\
        --output_dir exp/lm_x/decode_asr_test --beam_size 5 --max_new_tokens 300
"""

import argparse
import logging
from pathlib import Path

from tqdm import tqdm

from espnet2.text.build_tokenizer import build_tokenizer
from espnet2.text.token_id_converter import TokenIDConverter
from sofa_speechlm.data.kaldi import read_table, write_table
from sofa_speechlm.lm.generate import PromptContinuation, split_prompt
from sofa_speechlm.tasks.lm import SofaLMTask
from sofa_speechlm.bin import add_log_level, setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_config", required=True, help="config.yaml of the LM experiment")
    parser.add_argument("--model_file", required=True, help="the .pth to decode with")
    parser.add_argument("--lm_text", required=True, help="`uttid task-line` LM text (the prompts; stage 3's <split>/<task>.txt)")
    parser.add_argument("--output_dir", required=True, help="where text and score are written")
    parser.add_argument("--bpemodel", default=None, help="sentencepiece model (default: the training config's)")
    parser.add_argument("--beam_size", type=int, default=1, help="beam size (1: greedy)")
    parser.add_argument("--max_new_tokens", type=int, default=300, help="longest continuation in tokens")
    parser.add_argument("--min_new_tokens", type=int, default=0, help="shortest continuation in tokens")
    parser.add_argument("--length_bonus", type=float, default=0.0, help="score added per generated token")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--job", type=int, default=1, help="this job's index (1-based) among --nj")
    parser.add_argument("--nj", type=int, default=1, help="number of jobs the LM text is split into")
    add_log_level(parser)
    return parser


def main(cmd=None) -> None:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    if not 1 <= args.job <= args.nj:
        raise ValueError(f"--job {args.job}: expected 1..{args.nj} (--nj)")
    model, train_args = SofaLMTask.build_model_from_file(args.train_config, args.model_file, args.device)
    model.eval()
    bpemodel = args.bpemodel or train_args.bpemodel
    if not bpemodel or not Path(bpemodel).is_file():
        raise FileNotFoundError(f"--bpemodel: sentencepiece model '{bpemodel}' not found")
    tokenizer = build_tokenizer(token_type=train_args.token_type, bpemodel=bpemodel)
    converter = TokenIDConverter(token_list=train_args.token_list)
    continuation = PromptContinuation(
        model.lm, train_args.token_list, args.beam_size, args.max_new_tokens, args.min_new_tokens, args.length_bonus
    )

    lines = list(read_table(args.lm_text).items())[args.job - 1 :: args.nj]
    texts, scores = {}, {}
    for utt_id, line in tqdm(lines, desc=f"decoding job {args.job}/{args.nj}"):
        prompt, _ = split_prompt(line)
        prompt_ids = converter.tokens2ids(tokenizer.text2tokens(prompt))
        tokens, score = continuation(prompt_ids)
        texts[utt_id] = tokenizer.tokens2text(converter.ids2tokens(tokens)).strip()
        scores[utt_id] = f"{score:.4f}"
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_table(output_dir / "text", texts)
    write_table(output_dir / "score", scores)
    logging.info(f"Decoded {len(lines)} prompts into {output_dir}/text")


if __name__ == "__main__":
    main()
