"""Perplexity of a trained SpeechLM on a text file, with ESPnet's lm_calc_perplexity.

ESPnet's script rebuilds the model through its module-level `LMTask`; pointing that name at
SofaLMTask lets it rebuild `sofa_opt` / `sofa_lm` experiments from config.yaml + .pth.
Writes <output_dir>/ppl (exp of the mean NLL over counted targets), utt2ppl, utt2ntokens.

    python -m sofa_speechlm.bin.lm_perplexity --train_config exp/lm_x/config.yaml \\
        --model_file exp/lm_x/valid.loss.ave.pth --output_dir exp/lm_x/ppl_test \\
        --data_path_and_name_and_type dump/lm_text/test/textlm.txt,text,text
"""

from espnet2.bin import lm_calc_perplexity

from sofa_speechlm.tasks.lm import SofaLMTask

get_parser = lm_calc_perplexity.get_parser


def main(cmd=None):
    lm_calc_perplexity.LMTask = SofaLMTask
    lm_calc_perplexity.main(cmd)


if __name__ == "__main__":
    main()
