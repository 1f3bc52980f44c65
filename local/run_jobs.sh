#!/usr/bin/env bash
# Runs a command as an array job, as ESPnet's run.pl / slurm.pl do:
#   local/run_jobs.sh [--backend local|slurm] [--max_jobs_run N] JOB=1:N log/name.JOB.log cmd args...
# Every occurrence of JOB in the log path and in the command is replaced by the job index.
# Each job writes its own log. If any job fails, the failing logs are printed and the
# exit status is non-zero. Without JOB=..., the command runs once with the given log.
set -uo pipefail

backend=local
max_jobs_run=$(nproc)
slurm_opts=${SOFA_SLURM_OPTS:-}
while [ $# -gt 0 ]; do
    case "$1" in
        --backend) backend=$2; shift 2 ;;
        --max_jobs_run) max_jobs_run=$2; shift 2 ;;
        --slurm_opts) slurm_opts=$2; shift 2 ;;
        --*) echo "$0: unknown option $1 (expected --backend, --max_jobs_run, --slurm_opts)" >&2; exit 1 ;;
        *) break ;;
    esac
done
if [ $# -lt 2 ]; then
    echo "usage: $0 [--backend local|slurm] [--max_jobs_run N] JOB=1:N log/name.JOB.log command..." >&2
    exit 1
fi

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

write_header() {  # log, index
    { echo "# $(subst "${cmd}" "$2")"; echo "# started at $(date)"; } > "$1"
}

run_local() {
    local pids=() idx log
    for idx in $(seq "${first}" "${last}"); do
        log=$(subst "${logpat}" "${idx}")
        write_header "${log}" "${idx}"
        ( eval "$(subst "${cmd}" "${idx}")" >> "${log}" 2>&1; rc=$?
          echo "# finished at $(date) with status ${rc}" >> "${log}"; exit ${rc} ) &
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

run_slurm() {
    local script idx
    script=$(dirname "${logpat}")/.slurm_$(basename "${logpat//${var:-JOB}/x}").sh
    {
        echo "#!/usr/bin/env bash"
        echo "idx=\${SLURM_ARRAY_TASK_ID:-1}"
        if [ -n "${var}" ]; then echo "${var}=\${idx}"; fi
        echo "log=\"$(subst "${logpat}" "\${idx}")\""
        echo "{ echo \"# started at \$(date) on \$(hostname)\"; } > \"\${log}\""
        echo "( cd $(printf '%q' "${PWD}") && $(subst "${cmd}" "\${idx}") ) >> \"\${log}\" 2>&1"
        echo "rc=\$?; echo \"# finished at \$(date) with status \${rc}\" >> \"\${log}\"; exit \${rc}"
    } > "${script}"
    # shellcheck disable=SC2086
    sbatch --wait --array="${first}-${last}%${max_jobs_run}" ${slurm_opts} \
        --output=/dev/null "${script}" >/dev/null
}

case "${backend}" in
    local) run_local; rc=$? ;;
    slurm) run_slurm; rc=$? ;;
    *) echo "$0: unknown backend '${backend}' (supported: local, slurm)" >&2; exit 1 ;;
esac

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
