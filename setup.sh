#!/bin/sh
# Install what the tests need, as root or as a normal user, on Debian/Ubuntu:
#   1. a static busybox for the tests' small Docker images (built FROM scratch, nothing is pulled):
#      already there -> nothing to do; root -> apt-get install busybox-static; sudo without a password ->
#      the same through `sudo -n`; otherwise the package is downloaded with apt-get as this user (no root:
#      `apt-get download`, with a private package list when the system's is empty) and its binary unpacked
#      into .test-tools/busybox, where the tests look;
#   2. this package and its test extras into the active Python: pip install -e '.[test]'.
# Extra arguments go to pip, e.g. `./setup.sh -c constraints-oldest.txt`.
set -eu
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

say() { printf 'setup: %s\n' "$*" >&2; }

have_busybox() { "$PY" -m tests.busybox >/dev/null 2>&1; }

apt_install() {  # $1: "" as root, "sudo -n" otherwise
    $1 env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null 2>&1 && return 0
    say "updating the package lists"
    $1 apt-get update -qq >/dev/null 2>&1 || true
    $1 env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
}

fetch_without_root() {  # download busybox-static's .deb as this user and unpack its binary
    command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 || return 1
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/x"
    if ! (cd "$tmp" && apt-get download -qq busybox-static >/dev/null 2>&1); then
        say "the system's package lists lack busybox-static: reading them into a private folder (no root)"
        private="-o Dir::State::Lists=$tmp/lists -o Dir::Cache=$tmp/cache -o Debug::NoLocking=1 -o APT::Sandbox::User=$(id -un)"
        # shellcheck disable=SC2086
        apt-get $private update -qq >/dev/null 2>&1 || true
        # shellcheck disable=SC2086
        (cd "$tmp" && apt-get $private download -qq busybox-static >/dev/null) || return 1
    fi
    dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/x"
    for b in "$tmp/x/bin/busybox" "$tmp/x/usr/bin/busybox"; do
        if [ -f "$b" ]; then
            mkdir -p .test-tools
            cp "$b" .test-tools/busybox.new && chmod 755 .test-tools/busybox.new
            mv .test-tools/busybox.new .test-tools/busybox
            return 0
        fi
    done
    return 1
}

if have_busybox; then
    say "static busybox: $("$PY" -m tests.busybox)"
else
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing busybox-static (apt-get, as root)"
        apt_install "" || say "apt-get could not install busybox-static"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then
        say "installing busybox-static (sudo -n apt-get)"
        apt_install "sudo -n" || say "apt-get could not install busybox-static"
    fi
    if ! have_busybox; then
        say "getting busybox-static without root into .test-tools/"
        fetch_without_root || say "downloading busybox-static without root failed"
    fi
    if ! have_busybox; then
        "$PY" -m tests.busybox || true
        exit 1
    fi
    say "static busybox: $("$PY" -m tests.busybox)"
fi

if [ "$("$PY" -c 'import sys; print(sys.prefix != sys.base_prefix)')" = False ] &&
   "$PY" -c 'import sys, sysconfig, pathlib; sys.exit(not (pathlib.Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED").exists())'; then
    say "$PY belongs to the system (PEP 668): make a virtual environment first, then run ./setup.sh again:"
    say "  $PY -m venv .venv && . .venv/bin/activate"
    exit 2
fi
say "pip install -e '.[test]' $*"
"$PY" -m pip install -q --disable-pip-version-check -e '.[test]' "$@"

if ! "$PY" -c 'import docker; docker.from_env(timeout=5).ping()' >/dev/null 2>&1; then
    say "warning: the Docker engine is not reachable for $(id -un): the tests marked 'docker' will fail."
    say "  start Docker, or give this user access (sudo usermod -aG docker $(id -un), then log in again),"
    say "  or run the rest: python3 -m pytest -m 'not docker'"
fi
say "done: now run python3 -m pytest"
