"""Train (or collect shape statistics for) a SpeechLM with ESPnet's LM task.

All of espnet2.bin.lm_train's options apply; `--lm sofa_opt` and `--model sofa_lm` are
available because the task is SofaLMTask. Example:

    python -m sofa_speechlm.bin.lm_train --config conf/lm/tiny_sofa_full.yaml \\
        --token_list tokens.txt --bpemodel bpe.model --output_dir exp/lm_x ...
"""

from sofa_speechlm.tasks.lm import SofaLMTask


def get_parser():
    return SofaLMTask.get_parser()


def main(cmd=None):
    SofaLMTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
