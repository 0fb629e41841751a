#!/usr/bin/env bash
# Installs every host package and tool the build, the VM suite and the demo need,
# on a bare Debian 12 machine. Idempotent: a second run only checks.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

APT_PACKAGES=(
    linux-source-6.12 build-essential bc flex bison libelf-dev libssl-dev cpio xz-utils
    clang libclang-dev libdevmapper-dev pkg-config
    qemu-system-x86 udev kmod iproute2 iputils-ping nftables
    fio lvm2 dmsetup e2fsprogs util-linux procps psmisc
    python3-venv python3-pip python3-jsonschema
    drbd-utils nbd-server nbd-client python3-matplotlib
    keyutils tcpdump
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "apt: installing ${missing[*]}"
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The kernel's Rust build needs the standard library sources of the very rustc it uses.
if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
    log "rustup: adding rust-src"
    rustup component add rust-src
fi
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt

# The fuzz targets (scripts/fuzz.sh) build with nightly's coverage instrumentation.
if ! rustup toolchain list | grep -q '^nightly-'; then
    log "rustup: installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi

if ! command -v bindgen >/dev/null || [[ "$(bindgen --version)" != "bindgen $BINDGEN_VERSION" ]]; then
    log "cargo: installing bindgen-cli $BINDGEN_VERSION"
    cargo install --locked --version "$BINDGEN_VERSION" bindgen-cli
fi

# virtme-ng lives in its own venv so it never fights the system Python.
if [[ ! -x "$VNG_VENV/bin/vng" ]]; then
    log "pip: installing virtme-ng into $VNG_VENV"
    python3 -m venv "$VNG_VENV"
    "$VNG_VENV/bin/pip" install -q "virtme-ng==$VNG_VERSION"
fi
log "host dependencies ready"
