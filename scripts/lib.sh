# Shared by scripts/run and scripts/test: the project-local Python virtualenv and its tools.
# shellcheck shell=bash

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
# checkov pins boto3 to a release aws-sam-cli refuses, so it gets a virtualenv of its own.
checkov_venv="$root/.venv-checkov"

# ensure_venv_in DIR REQUIREMENTS_FILE...: creates the virtualenv DIR when missing and installs
# each requirements file once (a stamp per file, redone when the file changes), so a second run
# costs nothing.
ensure_venv_in() {
    local dir="$1"
    shift
    if [ ! -x "$dir/bin/pip" ]; then
        echo "==> creating $dir"
        python3 -m venv "$dir"
    fi
    local requirements stamp
    for requirements in "$@"; do
        stamp="$dir/.installed-$(basename "$requirements").$(cksum < "$requirements" | cut -d' ' -f1)"
        if [ ! -e "$stamp" ]; then
            echo "==> pip install -r ${requirements#"$root"/} (into ${dir#"$root"/})"
            "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
            touch "$stamp"
        fi
    done
}

# ensure_venv REQUIREMENTS_FILE...: the project virtualenv, .venv.
ensure_venv() {
    ensure_venv_in "$venv" "$@"
}

require_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo not found; install Rust with rustup (https://rustup.rs) and re-run" >&2
        exit 1
    fi
}
