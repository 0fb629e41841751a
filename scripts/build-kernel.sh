#!/usr/bin/env bash
# Builds the dm-arepl test kernel from Debian's linux-source-6.12 with `make tinyconfig`
# plus scripts/kernel/arepl.config, and prints the build tree's path (KDIR) on stdout.
#
# The tree is cached outside the checkout, keyed by the kernel package version, the
# config fragment and the toolchain, so a second run returns at once.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

FRAGMENT="$REPO_ROOT/scripts/kernel/arepl.config"
TARBALL=/usr/src/linux-source-6.12.tar.xz
[[ -f $TARBALL ]] || die "$TARBALL missing: run scripts/install-deps.sh"

src_version=$(dpkg-query -W -f='${Version}' linux-source-6.12)
key=$( {
    echo "$src_version"
    cat "$FRAGMENT"
    rustc --version
    bindgen --version
    gcc --version | head -n1
} | sha256sum | cut -c1-16)
kdir="$CACHE_ROOT/kernel/$src_version-$key/linux-source-6.12"
stamp="$kdir/.arepl-kernel-built"

mkdir -p "$CACHE_ROOT/kernel"
exec 9>"$CACHE_ROOT/kernel/.lock"
flock 9

if [[ -f $stamp ]]; then
    log "cached kernel $src_version ($key)"
    echo "$kdir"
    exit 0
fi

log "building kernel $src_version ($key) in $(dirname "$kdir"); about 8 minutes on 2 cores"
rm -rf "$(dirname "$kdir")"
mkdir -p "$(dirname "$kdir")"
tar -C "$(dirname "$kdir")" -xf "$TARBALL"
cd "$kdir"

make -s ARCH=x86_64 tinyconfig >&2
scripts/kconfig/merge_config.sh -m .config "$FRAGMENT" >&2
make -s ARCH=x86_64 olddefconfig >&2

# Kconfig drops options whose dependencies are unmet without a word; refuse to go on.
dropped=()
while IFS= read -r line; do
    grep -qxF "$line" .config || dropped+=("$line")
done < <(grep -E '^CONFIG_[A-Z0-9_]+=' "$FRAGMENT")
if ((${#dropped[@]})); then
    if printf '%s\n' "${dropped[@]}" | grep -q '^CONFIG_RUST='; then
        make -s ARCH=x86_64 rustavailable >&2 || true
    fi
    die "options dropped by Kconfig: ${dropped[*]}"
fi

make -s ARCH=x86_64 -j"$(nproc)" all >&2
touch "$stamp"
log "kernel ready: $kdir/arch/x86/boot/bzImage"
echo "$kdir"
