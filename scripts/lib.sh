# Shared by scripts/run and scripts/test: the project-local Python virtualenv and its tools.
# shellcheck shell=bash

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"

# ensure_venv REQUIREMENTS_FILE...: creates .venv when missing and installs each requirements file
# once (a stamp per file, redone when the file changes), so a second run costs nothing.
ensure_venv() {
    if [ ! -x "$venv/bin/pip" ]; then
        echo "==> creating $venv"
        python3 -m venv "$venv"
    fi
    local requirements stamp
    for requirements in "$@"; do
        stamp="$venv/.installed-$(basename "$requirements").$(cksum < "$requirements" | cut -d' ' -f1)"
        if [ ! -e "$stamp" ]; then
            echo "==> pip install -r ${requirements#"$root"/}"
            "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
            touch "$stamp"
        fi
    done
}

require_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo not found; install Rust with rustup (https://rustup.rs) and re-run" >&2
        exit 1
    fi
}
