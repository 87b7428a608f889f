# Shared by scripts/run, scripts/test and scripts/bench: the Python tools, set up once per machine.
# shellcheck shell=bash

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The project's virtualenv, as every tool and test finds it: a link into the machine's cache.
venv="$root/.venv"
# checkov pins boto3 to a release aws-sam-cli refuses, so it gets a virtualenv of its own.
checkov_venv="$root/.venv-checkov"
# Set-up kept per machine, not per clone: virtualenvs keyed by what they hold, and the stamps of
# template checks that passed. `STALELESS_CACHE` moves it.
cache_dir="${STALELESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/staleless}"

# content_key FILE...: a short hash of the files' contents and of the Python that runs them.
content_key() {
    { python3 --version 2>&1; cat "$@"; } | sha256sum | cut -c1-16
}

# ensure_venv_in LINK BASE_REQUIREMENTS [MORE_REQUIREMENTS...]: makes LINK a link to the
# machine's virtualenv for BASE_REQUIREMENTS (created and installed once per machine, keyed by
# the file's hash) and installs each further requirements file into it once (a stamp per file's
# hash). Another clone, or a second run, costs nothing. Runs under a lock, so clones set up
# beside each other share one install.
ensure_venv_in() {
    local link="$1" base="$2"
    shift 2
    local name dir
    name="$(basename "$link" | sed 's/^\.//')"
    dir="$cache_dir/venvs/$name-$(content_key "$base")"
    mkdir -p "$cache_dir/venvs"
    (
        flock 9
        if [ ! -e "$dir/.installed" ]; then
            rm -rf "$dir"
            echo "==> creating $dir (pip install -r ${base#"$root"/})"
            python3 -m venv "$dir"
            "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$base"
            touch "$dir/.installed"
        fi
        local requirements stamp
        for requirements in "$@"; do
            stamp="$dir/.installed-$(basename "$requirements")-$(content_key "$requirements")"
            if [ ! -e "$stamp" ]; then
                echo "==> pip install -r ${requirements#"$root"/} (into $dir)"
                "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
                touch "$stamp"
            fi
        done
    ) 9>"$dir.lock"
    # A clone made before venvs were cached holds a real directory here: replace it by the link.
    if [ -d "$link" ] && [ ! -L "$link" ]; then
        rm -rf "$link"
    fi
    ln -sfn "$dir" "$link"
}

# ensure_venv REQUIREMENTS_FILE...: the project virtualenv, .venv: moto server, then the rest.
ensure_venv() {
    ensure_venv_in "$venv" "$root/infra/requirements-emulator.txt" "$@"
}

require_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo not found; install Rust with rustup (https://rustup.rs) and re-run" >&2
        exit 1
    fi
}

# require_nextest: cargo-nextest, the test runner scripts/test uses; installed from crates.io
# once per machine when missing.
require_nextest() {
    if ! cargo nextest --version >/dev/null 2>&1; then
        echo "==> cargo install cargo-nextest (once per machine)"
        cargo install --locked cargo-nextest
    fi
}

# ensure_arm64_launcher: prints how to run an arm64 Linux binary here (nothing on an arm64 host;
# `qemu-aarch64-static -L <sysroot>` elsewhere), installing Debian's qemu-user-static and
# libc6-arm64-cross when they are missing and apt-get can run. Prints nothing and returns 1 when
# it cannot be had.
ensure_arm64_launcher() {
    if [ "$(uname -m)" = aarch64 ]; then
        return 0
    fi
    local sysroot=/usr/aarch64-linux-gnu
    if ! command -v qemu-aarch64-static >/dev/null 2>&1 || [ ! -e "$sysroot/lib/ld-linux-aarch64.so.1" ]; then
        local sudo=""
        if [ "$(id -u)" != 0 ]; then
            if sudo -n true 2>/dev/null; then sudo="sudo -n"; else return 1; fi
        fi
        command -v apt-get >/dev/null 2>&1 || return 1
        echo "==> apt-get install qemu-user-static libc6-arm64-cross (to run the arm64 Lambda bootstrap)" >&2
        local packages=(qemu-user-static libc6-arm64-cross)
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null 2>&1 ||
            { $sudo apt-get update -qq >/dev/null 2>&1 &&
                DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null 2>&1; } ||
            return 1
    fi
    echo "qemu-aarch64-static -L $sysroot"
}
