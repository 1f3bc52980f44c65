# Stage-6 decoding options for paper-scale recipes (egs/*/speechlm1), as run.sh options:
#   . conf/decode/paper.sh && ./speechlm.sh ... "${decode_opts[@]}" "$@"
# The SOFA paper scores whole test sets and judges TTS with "an OpenAI Whisper ASR system" but
# gives no beam sizes, lengths or Whisper size. Beam 5 and 300 new tokens are the TTS decoding
# config of ESPnet's VoxtLM recipe (egs2/voxtlm_v1/lm1/conf/decode_lm_tts.yaml: beam_size 5,
# maxlen 300), which the paper follows; ASR uses the same beam. ASR's 200 tokens cover
# LibriSpeech's longest test transcripts (~35 s) with a 5k-10k BPE (an estimate, not measured).
# WHISPER_MODEL: a larger Whisper (openai-whisper .pt or CTranslate2 dir; nothing is downloaded)
# for CERs comparable across papers; empty: tools/install.sh's tiny.en.
decode_opts=(
    --asr_beam_size 5
    --tts_beam_size 5
    --asr_max_utts 0            # every test utterance
    --tts_max_utts 0
    --asr_max_new_tokens 200
    --tts_max_new_tokens 300
    --eval_batch_size 16
    --whisper_model "${WHISPER_MODEL:-}"
)
