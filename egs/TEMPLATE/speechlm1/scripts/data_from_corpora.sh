# Stage 1 of the egs/ recipes, sourced by their local/data.sh once it has parsed its options:
# prepares every corpus:subset named in the task lists below (python -m sofa_speechlm.bin.prepare_corpus)
# into ${data_dir}/local/<corpus>/<subset>, then writes each task's data dir
#   ${data_dir}/{train,dev,test}/{textlm,speechlm,asr,tts}
# as the union of its subsets (python -m sofa_speechlm.bin.data_dir task), keeping the files that
# task reads, and ${data_dir}/vocoder from ${vocoder_sets} (the units-to-speech vocoder's data).
# Expects: data_dir fs nj seed check_audio resample segment_method segment_length num_lm_sentences,
# {textlm,speechlm,asr,tts}_{train,dev,test} and vocoder_sets (lists of corpus:subset).

_task_lists=()
for _split in train dev test; do for _task in textlm speechlm asr tts; do _task_lists+=("${_task}_${_split}"); done; done
_items=(); for _list in "${_task_lists[@]}" vocoder_sets; do
    [ -n "${!_list}" ] || [ "${_list}" = vocoder_sets ] || { echo "$0: --${_list} is empty; every task needs data for every split" >&2; exit 1; }
    for _item in ${!_list}; do
        [[ "${_item}" == *:* ]] || { echo "$0: --${_list}: '${_item}' is not corpus:subset (e.g. librispeech:dev-clean)" >&2; exit 1; }
        _items+=("${_item}")
    done
done

# 1. Every corpus once, with all its subsets. A subset's marker (.done.<subset>) holds the settings
# and its source: the corpus folder it was read from (from db.sh's variable, absolute, links
# resolved) and a fingerprint of that folder's and the subset folder's listings (names, file
# sizes). A subset whose settings and source are unchanged is kept; one whose corpus root moved
# or changed is prepared again, and only that one.
for _corpus in $(printf '%s\n' "${_items[@]}" | cut -d: -f1 | sort -u); do
    _settings="fs=${fs} check_audio=${check_audio} resample=${resample} segment_method=${segment_method} segment_length=${segment_length} num_sentences=${num_lm_sentences} seed=${seed}"
    _subsets=$(printf '%s\n' "${_items[@]}" | grep "^${_corpus}:" | cut -d: -f2 | sort -u | tr '\n' ' ')
    _sources=$(python -m sofa_speechlm.bin.prepare_corpus --corpus "${_corpus}" --subsets "${_subsets}" --print_sources true)
    declare -A _source=()
    while IFS=$'\t' read -r _subset _line; do _source[${_subset}]=${_line}; done <<< "${_sources}"
    _todo=()
    for _subset in ${_subsets}; do
        _marker=${data_dir}/local/${_corpus}/.done.${_subset}
        if [ -f "${_marker}" ] && [ "$(cat "${_marker}")" == "${_settings} ${_source[${_subset}]}" ] && [ -d "${data_dir}/local/${_corpus}/${_subset}" ]; then
            echo "$0: ${_corpus} ${_subset} already prepared in ${data_dir}/local/${_corpus}/${_subset} (${_source[${_subset}]})" >&2
        else
            [ -f "${_marker}" ] && echo "$0: ${_corpus} ${_subset}: settings or corpus changed since it was prepared (was: $(cat "${_marker}")); preparing it again" >&2
            _todo+=("${_subset}")
        fi
    done
    [ ${#_todo[@]} -gt 0 ] || continue
    rm -f "${_todo[@]/#/${data_dir}/local/${_corpus}/.done.}"
    python -m sofa_speechlm.bin.prepare_corpus --corpus "${_corpus}" --data_dir "${data_dir}/local/${_corpus}" \
        --subsets "${_todo[*]}" --fs "${fs}" --nj "${nj}" --check_audio "${check_audio}" --resample "${resample}" \
        --segment_method "${segment_method}" --segment_length "${segment_length}" \
        --num_sentences "${num_lm_sentences}" --seed "${seed}"
    for _subset in "${_todo[@]}"; do echo "${_settings} ${_source[${_subset}]}" > "${data_dir}/local/${_corpus}/.done.${_subset}"; done
done

# 2. The task dirs (and the vocoder's) as unions of the prepared subsets, in one process.
_task_line() {  # task destination list-of-corpus:subset
    local _line="$1 $2" _item
    for _item in $3; do _line+=" ${data_dir}/local/${_item%%:*}/${_item#*:}"; done
    echo "${_line}"
}
{
    for _list in "${_task_lists[@]}"; do
        _task_line "${_list%_*}" "${data_dir}/${_list#*_}/${_list%_*}" "${!_list}"
    done
    [ -z "${vocoder_sets}" ] || _task_line speechlm "${data_dir}/vocoder" "${vocoder_sets}"
} | python -m sofa_speechlm.bin.data_dir --log_level WARNING tasks --fs "${fs}" -
for _split in train dev test; do
    for _task in textlm speechlm asr tts; do
        echo "$0: ${data_dir}/${_split}/${_task}: $(wc -l < "${data_dir}/${_split}/${_task}/utt2spk") utterances" >&2
    done
done
unset _task_lists _items _item _list _corpus _subset _subsets _sources _source _line _todo _settings _marker _split _task
