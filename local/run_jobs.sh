#!/usr/bin/env bash
# Runs a command as an array job, as ESPnet's run.pl / slurm.pl do:
#   run_jobs.sh [--backend local|slurm] [--max_jobs_run N] [--config conf/slurm.conf]
#               [--gpu N] [--num_threads N] [--mem M] [--time T] [--name NAME] [--num_nodes N]
#               [JOB=1:N] log/name.JOB.log command args...
# Every occurrence of JOB in the log path and in the command is replaced by the job index.
# Each job writes its own log. If any job fails, the failing logs are printed and the exit
# status is non-zero. Without JOB=..., the command runs once with the given log.
#
# Resources (--gpu, --num_threads, --mem, --time, --name, --num_nodes) are per job, as in
# Kaldi/ESPnet's queue scripts, so that espnet2.bin.launch can drive this script:
#   local : --gpu N gives each job N GPUs of this machine of its own (CUDA_VISIBLE_DEVICES; a job
#           waits until N are free, also across concurrent run_jobs.sh calls) and refuses when
#           fewer than N are visible; --num_nodes above 1 is refused; the others are ignored.
#   slurm : one sbatch job (an array job for JOB=...), waited for; the resources become sbatch
#           options through --config, a file in ESPnet's slurm.conf format (conf/slurm.conf):
#             command sbatch --export=ALL      the submit command
#             default gpu=0                    a resource's value when not given
#             option gpu=0 -p cpu              options for one value
#             option gpu=* -p gpu --gres=gpu:$0   options for any other value ($0 = the value)
# Called as slurm.pl (the link local/slurm.pl) the backend defaults to slurm: espnet2.bin.launch
# recognizes that name and then starts multi-node training through srun.
set -uo pipefail

backend=local; [ "$(basename "$0")" = slurm.pl ] && backend=slurm
max_jobs_run=$(nproc)
config=conf/slurm.conf
resource_names="gpu num_threads mem time name num_nodes"
declare -A resources=()
refused=0
usage="usage: $0 [--backend local|slurm] [--max_jobs_run N] [--config FILE] [--gpu N] [--num_threads N] [--mem M] [--time T] [--name NAME] [--num_nodes N] [JOB=1:N] log/name.JOB.log command..."
while [ $# -gt 0 ]; do
    case "$1" in
        --backend) backend=$2; shift 2 ;;
        --max_jobs_run) max_jobs_run=$2; shift 2 ;;
        --config) config=$2; shift 2 ;;
        --gpu|--num_threads|--mem|--time|--name|--num_nodes) resources[${1#--}]=$2; shift 2 ;;
        --*) echo "$0: unknown option $1 (expected --backend, --max_jobs_run, --config, or a resource: --${resource_names// /, --})" >&2; exit 1 ;;
        *) break ;;
    esac
done
if [ $# -lt 2 ]; then echo "${usage}" >&2; exit 1; fi
for key in gpu num_threads num_nodes; do
    if [ -n "${resources[${key}]+set}" ] && ! [[ "${resources[${key}]}" =~ ^[0-9]+$ ]]; then
        echo "$0: --${key} ${resources[${key}]}: expected a non-negative integer" >&2; exit 1
    fi
done
gpu=${resources[gpu]:-0}

first=1; last=1; var=""
if [[ "$1" =~ ^([A-Za-z_][A-Za-z0-9_]*)=([0-9]+):([0-9]+)$ ]]; then
    var=${BASH_REMATCH[1]}; first=${BASH_REMATCH[2]}; last=${BASH_REMATCH[3]}; shift
    if [ "${first}" -gt "${last}" ]; then
        echo "$0: empty job range ${var}=${first}:${last}" >&2; exit 1
    fi
fi
logpat=$1; shift
if [ -n "${var}" ] && [[ "${logpat}" != *"${var}"* ]]; then
    echo "$0: the log path ${logpat} must contain ${var} so that each job has its own log" >&2; exit 1
fi
mkdir -p "$(dirname "${logpat}")"

# Quote the command once; the job index is substituted as a word.
cmd=""
for arg in "$@"; do cmd+="$(printf '%q' "${arg}") "; done

subst() { if [ -n "${var}" ]; then echo "${1//${var}/$2}"; else echo "$1"; fi; }

# --- local backend -------------------------------------------------------------------------

visible_gpus() {  # GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else nvidia-smi's
    if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
        tr ',' '\n' <<< "${CUDA_VISIBLE_DEVICES}" | sed '/^ *$/d'
    elif command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=index --format=csv,noheader 2> /dev/null
    fi
}

gpu_lock_dir=${TMPDIR:-/tmp}/run_jobs_gpu_locks.$(id -u)

acquire_gpus() {  # Holds flock locks on $1 free GPUs (until this shell exits) and exports them.
    local want=$1 id fd got fds
    mkdir -p "${gpu_lock_dir}"
    while true; do
        got=(); fds=()
        for id in "${gpu_ids[@]}"; do
            exec {fd}> "${gpu_lock_dir}/gpu_${id//\//_}.lock"
            if flock -n "${fd}"; then got+=("${id}"); fds+=("${fd}"); else exec {fd}>&-; fi
            [ "${#got[@]}" -eq "${want}" ] && break
        done
        if [ "${#got[@]}" -eq "${want}" ]; then
            CUDA_VISIBLE_DEVICES=$(IFS=,; echo "${got[*]}"); export CUDA_VISIBLE_DEVICES
            return
        fi
        for fd in "${fds[@]}"; do exec {fd}>&-; done
        sleep 1
    done
}

run_local() {
    if [ "${resources[num_nodes]:-1}" -gt 1 ]; then
        echo "$0: --num_nodes ${resources[num_nodes]}: the local backend runs on this machine only; multi-node jobs need the slurm backend (cmd_backend=slurm in cmd.sh)" >&2
        refused=1; return 1
    fi
    gpu_ids=()
    if [ "${gpu}" -gt 0 ]; then
        mapfile -t gpu_ids < <(visible_gpus)
        if [ "${#gpu_ids[@]}" -lt "${gpu}" ]; then
            echo "$0: --gpu ${gpu}: each job needs ${gpu} GPU(s) but this machine has ${#gpu_ids[@]} visible" \
                "(CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}; nvidia-smi: $(command -v nvidia-smi || echo 'not found'))." \
                "Run on CPU (--ngpu 0), or use the slurm backend (cmd_backend=slurm in cmd.sh)." >&2
            refused=1; return 1
        fi
    fi
    local pids=() idx log
    for idx in $(seq "${first}" "${last}"); do
        log=$(subst "${logpat}" "${idx}")
        { echo "# $(subst "${cmd}" "${idx}")"; echo "# started at $(date)"; } > "${log}"
        (
            if [ "${gpu}" -gt 0 ]; then
                acquire_gpus "${gpu}"; echo "# CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES}" >> "${log}"
            fi
            eval "$(subst "${cmd}" "${idx}")" >> "${log}" 2>&1; rc=$?
            echo "# finished at $(date) with status ${rc}" >> "${log}"; exit ${rc}
        ) &
        pids+=("$!")
        while [ "$(jobs -rp | wc -l)" -ge "${max_jobs_run}" ]; do wait -n || true; done
    done
    local failed=0 i=0
    for idx in $(seq "${first}" "${last}"); do
        wait "${pids[${i}]}" || failed=1
        i=$((i + 1))
    done
    return ${failed}
}

# --- slurm backend -------------------------------------------------------------------------

slurm_options() {  # Prints the submit command and the options of every resource, one word a line.
    [ -f "${config}" ] || { echo "$0: --config ${config}: file not found (the slurm backend needs a slurm.conf in ESPnet's format, e.g. conf/slurm.conf)" >&2; return 1; }
    local line key value words command=() word
    declare -A defaults=() exact=() any=()
    while IFS= read -r line; do
        line=${line%%#*}
        read -r -a words <<< "${line}"
        [ "${#words[@]}" -eq 0 ] && continue
        case "${words[0]}" in
            command) command=("${words[@]:1}") ;;
            default) defaults[${words[1]%%=*}]=${words[1]#*=} ;;
            option)
                key=${words[1]%%=*}; value=${words[1]#*=}
                if [ "${value}" = "*" ]; then any[${key}]="${words[*]:2}"; else exact[${key}=${value}]="${words[*]:2}"; fi ;;
            *) echo "$0: ${config}: unknown line '${line}' (expected command, default or option lines)" >&2; return 1 ;;
        esac
    done < "${config}"
    [ "${#command[@]}" -gt 0 ] || { echo "$0: ${config}: no 'command' line (e.g. 'command sbatch --export=ALL')" >&2; return 1; }
    printf '%s\n' "${command[@]}"
    for key in $(printf '%s\n' "${!defaults[@]}" "${!resources[@]}" | sort -u); do
        value=${resources[${key}]-${defaults[${key}]}}
        if [ -n "${exact[${key}=${value}]+set}" ]; then
            words=(${exact[${key}=${value}]})
        elif [ -n "${any[${key}]+set}" ]; then
            words=(${any[${key}]//\$0/${value}})
        else
            echo "$0: ${config} has no 'option ${key}=${value}' or 'option ${key}=*' line for --${key} ${value}" >&2; return 1
        fi
        for word in "${words[@]}"; do echo "${word}"; done
    done
}

run_slurm() {
    local script options submit
    options=$(slurm_options) || { refused=1; return 1; }
    mapfile -t submit <<< "${options}"
    script=$(dirname "${logpat}")/.slurm_$(basename "${logpat//${var:-JOB}/x}").sh
    submit+=(--wait --output="$(subst "${logpat}" "%a")")
    [ -n "${var}" ] && submit+=(--array="${first}-${last}%${max_jobs_run}")
    {
        echo "#!/usr/bin/env bash"
        echo "# submitted by run_jobs.sh: ${submit[*]} ${script}"
        echo "cd $(printf '%q' "${PWD}")"
        echo "idx=\${SLURM_ARRAY_TASK_ID:-1}"
        echo "printf '# %s\\n' $(printf '%q' "${cmd}")"
        if [ -n "${var}" ]; then echo "echo \"# ${var}=\${idx}\""; fi
        echo "echo \"# started at \$(date) on \$(hostname)\""
        subst "${cmd}" "\${idx}"
        echo "rc=\$?; echo \"# finished at \$(date) with status \${rc}\"; exit \${rc}"
    } > "${script}"
    "${submit[@]}" "${script}" > /dev/null
}

case "${backend}" in
    local) run_local; rc=$? ;;
    slurm) run_slurm; rc=$? ;;
    *) echo "$0: unknown backend '${backend}' (supported: local, slurm)" >&2; exit 1 ;;
esac

[ "${refused}" -eq 1 ] && exit 1  # refused before any job ran; the reason is printed above
if [ ${rc} -ne 0 ]; then
    for idx in $(seq "${first}" "${last}"); do
        log=$(subst "${logpat}" "${idx}")
        if ! grep -q "with status 0$" "${log}" 2>/dev/null; then
            echo "$0: job ${idx} failed; its log ${log}:" >&2
            tail -n 40 "${log}" >&2
        fi
    done
    exit 1
fi
