#!/usr/bin/env bash
# Checks the install targets without touching the system and without a kernel tree:
# `make install-userspace` into scratch DESTDIRs (the default PREFIX and PREFIX=/usr)
# and the exact file list it produces, the installed binaries, man pages, completions
# and systemd units; `make uninstall-userspace` leaving nothing behind; and
# `make dkms-source` copying every source the module build reads and nothing generated.
# Run by `make check`. Ends with "install-check: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
MAKE=${MAKE:-make}

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); }
fail() {
    echo "install-check: FAIL: $*" >&2
    failed=$((failed + 1))
}
# check DESCRIPTION COMMAND...: one assertion.
check() {
    local what=$1
    shift
    if "$@"; then pass; else fail "$what"; fi
}
# Files (and empty directories, with a trailing /) under $1, relative and sorted.
tree_list() {
    (cd "$1" && find . -mindepth 1 \( -type f -o -type l -o -type d -empty \) \
        -printf '%P%y\n' | sed 's|d$|/|; s|[fl]$||' | LC_ALL=C sort)
}

units=()
for unit in packaging/systemd/*.service packaging/systemd/*.socket packaging/systemd/*.timer; do
    [[ -e $unit ]] && units+=("${unit##*/}")
done
check "packaging/systemd/arepl.service exists" test -f packaging/systemd/arepl.service

# What an install with PREFIX=$1 must produce, exactly.
expected_files() {
    local prefix=${1#/}
    {
        echo etc/arepl/
        for unit in "${units[@]}"; do echo "lib/systemd/system/$unit"; done
        for cmd in arepl replicad; do
            echo "$prefix/sbin/$cmd"
            echo "$prefix/share/bash-completion/completions/$cmd"
            echo "$prefix/share/zsh/site-functions/_$cmd"
            echo "$prefix/share/fish/vendor_completions.d/$cmd.fish"
        done
        # One page per command and subcommand, as generated (arepl-docs checks that
        # every subcommand has one); these must be among them.
        for page in target/docs/man/*.8; do echo "$prefix/share/man/man8/${page##*/}"; done
    } | LC_ALL=C sort
}

# --- make install-userspace, default PREFIX (builds the binaries and the docs) -------
root=$scratch/local
"$MAKE" --no-print-directory install-userspace DESTDIR="$root"
for page in arepl arepl-create arepl-remove arepl-status replicad replicad-status; do
    check "man page $page.8 generated" test -f "target/docs/man/$page.8"
done
if diff -u <(expected_files /usr/local) <(tree_list "$root") >"$scratch/diff"; then
    pass
else
    fail "installed files differ from the expected list (- expected, + installed):"
    cat "$scratch/diff" >&2
fi

for cmd in arepl replicad; do
    bin=$root/usr/local/sbin/$cmd
    check "$cmd is executable" test -x "$bin"
    check "$cmd --version says $cmd $version" \
        test "$("$bin" --version 2>/dev/null || true)" = "$cmd $version"
    check "bash completion for $cmd parses" bash -n "$root/usr/local/share/bash-completion/completions/$cmd"
    check "bash completion for $cmd registers itself" \
        grep -q "complete .*$cmd" "$root/usr/local/share/bash-completion/completions/$cmd"
    if command -v zsh >/dev/null; then
        check "zsh completion for $cmd parses" zsh -n "$root/usr/local/share/zsh/site-functions/_$cmd"
    fi
    if command -v fish >/dev/null; then
        check "fish completion for $cmd parses" \
            fish -n "$root/usr/local/share/fish/vendor_completions.d/$cmd.fish"
    fi
done

for page in "$root"/usr/local/share/man/man8/*.8; do
    check "${page##*/} is a section 8 page" grep -q '^\.TH [^ ]* 8 ' "$page"
    if command -v groff >/dev/null; then
        warnings=$(groff -man -Tutf8 -ww -z "$page" 2>&1)
        check "${page##*/} renders without warnings: $warnings" test -z "$warnings"
    fi
done

unit_dir=$root/lib/systemd/system
check "every unit runs its binary from /usr/local/sbin" \
    bash -c '! grep -h "^Exec" "$@" | grep -v "^Exec[A-Za-z]*=[-@+!:]*/usr/local/sbin/"' _ "$unit_dir"/*
check "no @SBINDIR@ left in the installed units" \
    bash -c '! grep -l "@[A-Z]*@" "$@"' _ "$unit_dir"/*
check "arepl.service runs /usr/local/sbin/arepl up" \
    grep -qx 'ExecStart=/usr/local/sbin/arepl up' "$unit_dir/arepl.service"
check "arepl.service runs /usr/local/sbin/arepl down" \
    grep -qx 'ExecStop=/usr/local/sbin/arepl down' "$unit_dir/arepl.service"
check "arepl.service is a oneshot that remains after exit" \
    bash -c 'grep -qx Type=oneshot "$1" && grep -qx RemainAfterExit=yes "$1"' _ "$unit_dir/arepl.service"
if command -v systemd-analyze >/dev/null && [[ -d /lib/systemd/system ]]; then
    # A copy of the installed tree plus the host's targets (sysinit.target, ...), so
    # that dependencies resolve and ExecStart= paths are checked inside it.
    verify_root=$scratch/verify
    cp -a "$root" "$verify_root"
    cp /lib/systemd/system/*.target "$verify_root/lib/systemd/system/"
    for unit in "${units[@]}"; do
        # Templates are checked through an instance.
        name=${unit/@./@check.}
        out=$(systemd-analyze verify --man=no --root="$verify_root" "$name" 2>&1) && rc=0 || rc=$?
        check "systemd-analyze verify $name (exit $rc): $out" test "$rc" -eq 0 -a -z "$out"
    done
fi

# --- PREFIX=/usr, without building again -----------------------------------------------
usr_root=$scratch/usr
"$MAKE" --no-print-directory -s install-userspace NO_BUILD=1 PREFIX=/usr DESTDIR="$usr_root"
if diff -u <(expected_files /usr) <(tree_list "$usr_root") >"$scratch/diff"; then
    pass
else
    fail "PREFIX=/usr: installed files differ from the expected list:"
    cat "$scratch/diff" >&2
fi
check "PREFIX=/usr: arepl.service runs /usr/sbin/arepl" \
    grep -qx 'ExecStart=/usr/sbin/arepl up' "$usr_root/lib/systemd/system/arepl.service"
check "no unit runs a binary outside PREFIX=/usr" \
    bash -c '! grep -h "^Exec" "$@" | grep -v "^Exec[A-Za-z]*=[-@+!:]*/usr/sbin/"' _ "$usr_root"/lib/systemd/system/*

# --- make uninstall-userspace removes every file, keeps configuration ------------------
touch "$usr_root/etc/arepl/site.toml"
"$MAKE" --no-print-directory -s uninstall-userspace PREFIX=/usr DESTDIR="$usr_root"
left=$(cd "$usr_root" && find . -type f -printf '%P\n')
check "uninstall leaves only the configuration (left: $left)" test "$left" = etc/arepl/site.toml
"$MAKE" --no-print-directory -s uninstall-userspace DESTDIR="$root"
left=$(cd "$root" && find . \( -type f -o -type l \) -printf '%P\n')
check "uninstall removes every installed file (left: $left)" test -z "$left"
check "uninstall removes the empty /etc/arepl" test ! -e "$root/etc/arepl"

# --- make dkms-source --------------------------------------------------------------------
check "dkms.conf PACKAGE_VERSION is the workspace version $version" \
    grep -qx "PACKAGE_VERSION=\"$version\"" dkms.conf
"$MAKE" --no-print-directory -s dkms-source DESTDIR="$scratch/dkms"
src=$scratch/dkms/usr/src/dm-arepl-$version
for file in dkms.conf Kbuild kmod/Kbuild kmod/arepl.rs kmod/arepl_helpers.c \
    kmod/arepl_helpers.h kmod/bindings_wrapper.h; do
    check "DKMS tree has $file" test -f "$src/$file"
done
generated=$(cd "$src" && find . \( -name '*.o' -o -name '*.ko' -o -name '*.mod*' -o -name '.*.cmd' \
    -o -name bindings_generated.rs -o -name '*.order' -o -name '*.symvers' \) -printf '%P ')
check "DKMS tree has no generated files ($generated)" test -z "$generated"
# Every module the crate declares, and every #[path] it includes, is in the copy.
for rs in "$src"/kmod/*.rs; do
    base=${rs##*/}
    base=${base%.rs}
    while read -r kind target; do
        if [[ $kind == path ]]; then
            check "DKMS tree has $target (#[path] in $base.rs)" test -f "$src/kmod/$target"
        elif [[ $base == arepl ]]; then
            check "DKMS tree has kmod/$target.rs" \
                bash -c 'test -f "$1.rs" || test -f "$1/mod.rs"' _ "$src/kmod/$target"
        else
            check "DKMS tree has kmod/$base/$target.rs" test -f "$src/kmod/$base/$target.rs"
        fi
    done < <(awk '
        match($0, /^[ \t]*#\[path = "[^"]*"\]/) {
            s = substr($0, RSTART, RLENGTH); sub(/^[^"]*"/, "", s); sub(/".*/, "", s)
            print "path", s; skip = 1; next
        }
        /^[ \t]*(pub(\([a-z]+\))? )?mod [a-z_0-9]+;/ {
            if (!skip) { s = $0; sub(/^.*mod /, "", s); sub(/;.*/, "", s); print "mod", s }
        }
        { skip = 0 }' "$rs")
done
# When the module has been built here, every source its build read is in the copy.
if [[ -f kmod/.arepl.o.cmd ]]; then
    repo=$(pwd -P)
    for dep in $(tr ' ' '\n' <kmod/.arepl.o.cmd | grep "^$repo/.*\.rs$" | sort -u); do
        rel=$(realpath -m --relative-to="$repo" "$dep")
        [[ $rel == kmod/bindings_generated.rs || ! -f $rel ]] && continue
        check "DKMS tree has $rel (read by the last module build)" test -f "$src/$rel"
    done
fi

echo "install-check: $passed passed, $failed failed"
((failed == 0))
