# Parses --name value / --name=value options into shell variables that already exist.
# Source it after defining every option with its default, and optionally `help_message`:
#   stage=1; . local/parse_options.sh
# Names may be written with - or _ (--stop-stage == --stop_stage). An unknown option, a
# missing value, or --help (which lists options and defaults) stops the script.
_sofa_list_options() {
    local _name _doc
    for _name in ${_sofa_option_names}; do
        _doc=$(grep -m1 "^${_name}=" "$0" | sed -n 's/^[^#]*# *//p')
        printf '  --%-22s %s (default: "%s")\n' "${_name}" "${_doc}" "${!_name}"
    done
}
# Options are the top-level assignments of the calling script above its help_message (or,
# without one, above the line sourcing this file).
_sofa_option_names=$(awk '/^help_message=|parse_options\.sh/ {exit} match($0, /^[a-zA-Z_][a-zA-Z0-9_]*=/) {print substr($0, 1, RLENGTH - 1)}' "$0" | awk '!seen[$0]++' | tr '\n' ' ')

while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h)
            [ -n "${help_message:-}" ] && echo -e "${help_message}"
            echo "Options:"
            _sofa_list_options
            exit 0 ;;
        --*=*) _sofa_name=${1%%=*}; _sofa_value=${1#*=}; shift ;;
        --*)
            _sofa_name=$1
            if [ $# -lt 2 ]; then
                echo "$0: option ${_sofa_name} needs a value" >&2; exit 1
            fi
            _sofa_value=$2; shift 2 ;;
        *) break ;;
    esac
    _sofa_name=${_sofa_name#--}; _sofa_name=${_sofa_name//-/_}
    if ! [[ " ${_sofa_option_names} " == *" ${_sofa_name} "* ]]; then
        echo "$0: unknown option --${_sofa_name}; run $0 --help for the list" >&2
        exit 1
    fi
    printf -v "${_sofa_name}" '%s' "${_sofa_value}"
done
unset _sofa_name _sofa_value
true
