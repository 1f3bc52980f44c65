"""Data dir tools: validate, split, combine, subset, fix, task (the local/*_data_dir.sh scripts call this)."""

from __future__ import annotations

import argparse
import logging
import sys

from sofa_speechlm.bin import add_log_level, setup_logging
from sofa_speechlm.data.corpora.tasks import make_task_dir
from sofa_speechlm.data.kaldi import DataDirError
from sofa_speechlm.data.ops import choose_utterances, combine_data_dirs, fix_data_dir, split_data_dir, subset_data_dir
from sofa_speechlm.data.validate import MAX_REPORTED, validate_data_dir


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    add_log_level(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check a data dir; exits 1 listing every problem")
    validate.add_argument("data_dir")
    validate.add_argument("--fs", type=int, default=0, help="expected sampling rate (0: any)")
    validate.add_argument("--require", default="", help="files that must exist besides utt2spk/spk2utt, e.g. 'wav.scp text'")
    validate.add_argument("--no_audio", action="store_true", help="skip reading audio headers")
    validate.add_argument("--check_pipes", action="store_true", help="also run 'command |' wav.scp entries")

    split = commands.add_parser("split", help="split into DATA_DIR/splitN/{1..N}")
    split.add_argument("data_dir")
    split.add_argument("parts", type=int)
    split.add_argument("--per_speaker", action="store_true", help="keep each speaker in one part")

    combine = commands.add_parser("combine", help="union of data dirs")
    combine.add_argument("destination")
    combine.add_argument("sources", nargs="+")

    subset = commands.add_parser("subset", help="a subset by --first/--last/--random N or --utt_list")
    subset.add_argument("source")
    subset.add_argument("destination")
    subset.add_argument("--first", type=int, default=0)
    subset.add_argument("--last", type=int, default=0)
    subset.add_argument("--random", type=int, default=0)
    subset.add_argument("--seed", type=int, default=0)
    subset.add_argument("--utt_list", default=None, help="file whose first column lists utterance ids")

    fix = commands.add_parser("fix", help="sort files, keep utterances present in all, regenerate spk2utt")
    fix.add_argument("data_dir")

    tasks = commands.add_parser("tasks", help="task data dirs (textlm|speechlm|asr|tts), each the union of its sources keeping the files that task reads")
    tasks.add_argument("spec", help="file ('-': stdin) of lines 'TASK DESTINATION SOURCE [SOURCE ...]'")
    tasks.add_argument("--fs", type=int, default=16000, help="sampling rate of utt2num_samples (whole-file segments when mixing with segmented sources)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.command == "validate":
            problems = validate_data_dir(args.data_dir, fs=args.fs, require=tuple(args.require.split()), check_audio=not args.no_audio, check_pipes=args.check_pipes)
            if problems:
                print(f"{args.data_dir}: {len(problems)} problem(s):", file=sys.stderr)
                for problem in problems[: MAX_REPORTED * 3]:
                    print(f"  {problem}", file=sys.stderr)
                return 1
            print(f"{args.data_dir}: valid")
        elif args.command == "split":
            for part in split_data_dir(args.data_dir, args.parts, per_speaker=args.per_speaker):
                print(part)
        elif args.command == "combine":
            combine_data_dirs(args.destination, args.sources)
        elif args.command == "subset":
            utt_ids = choose_utterances(args.source, args.first, args.last, args.random, args.seed, args.utt_list)
            subset_data_dir(args.source, args.destination, utt_ids)
        elif args.command == "fix":
            dropped = fix_data_dir(args.data_dir)
            print(f"{args.data_dir}: sorted; dropped {dropped} utterance(s) missing from some file (originals in .backup)")
        elif args.command == "tasks":
            lines = (sys.stdin if args.spec == "-" else open(args.spec, encoding="utf-8")).read().splitlines()
            for number, line in enumerate(lines, start=1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) < 3:
                    raise ValueError(f"{args.spec}:{number}: expected 'TASK DESTINATION SOURCE [SOURCE ...]', got '{line}'")
                make_task_dir(fields[0], fields[1], fields[2:], fs=args.fs)
                logging.info("%s: %s data dir from %d source(s)", fields[1], fields[0], len(fields) - 2)
    except (DataDirError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
