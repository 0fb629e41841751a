# The kernel log holds no warning, bug or oops from the whole run.
source "$(dirname "$0")/../lib.sh"

if dmesg | grep -E 'WARNING:|BUG:|Oops|Call Trace|kernel panic|UBSAN|refcount_t:|general protection' >&2; then
    fail "kernel log has warnings or oopses (above)"
fi
note "dmesg clean ($(dmesg | wc -l) lines)"
