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
