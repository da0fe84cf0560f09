# Sourced by up.sh and test.sh: a virtualenv in .venv with hostplane installed.
# Usage: bootstrap_python [EXTRAS]   (EXTRAS: "dev" for the test tools)

bootstrap_python() {
    local extras="${1:-}"
    local python="${PYTHON:-python3}"
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "hostplane needs Python 3.11 or newer (python3 was not found)" >&2
        return 1
    fi
    if ! "$python" -c 'import sys; raise SystemExit(sys.version_info < (3, 11))'; then
        echo "hostplane needs Python 3.11 or newer; $("$python" --version) was found" >&2
        return 1
    fi
    if [ ! -x .venv/bin/python ]; then
        if ! "$python" -m venv .venv >/dev/null 2>&1; then
            # Debian ships venv separately.
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
                rm -rf .venv && "$python" -m venv .venv
            else
                echo "python3 -m venv failed; install your distribution's python3-venv package" >&2
                return 1
            fi
        fi
    fi
    local spec="."
    [ -n "$extras" ] && spec=".[$extras]"
    local stamp=".venv/.hostplane-installed-${extras:-base}"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        .venv/bin/python -m pip install -q --upgrade pip >/dev/null
        .venv/bin/python -m pip install -q -e "$spec"
        touch "$stamp"
    fi
}
