# Environment of the sofa-speechlm recipes: source it from a recipe directory or the repo root.
# Bootstraps tools/venv through tools/install.sh when it is missing.
_sofa_root=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
if [ ! -x "${_sofa_root}/tools/venv/bin/python" ]; then
    echo "path.sh: tools/venv is missing; running tools/install.sh" >&2
    "${_sofa_root}/tools/install.sh" || return 1 2>/dev/null || exit 1
fi
export SOFA_ROOT=${_sofa_root}
export PATH=${_sofa_root}/tools/venv/bin:${_sofa_root}/local:${PATH}
export PYTHONPATH=${_sofa_root}${PYTHONPATH:+:${PYTHONPATH}}
export LC_ALL=C
export PYTHONIOENCODING=UTF-8
# Everything runs offline: published checkpoints are local paths given by the user.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
# Idle OpenMP threads sleep instead of spinning: parallel jobs on few cores stop starving each other.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
unset _sofa_root
