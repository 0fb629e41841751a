# The kernel log holds no warning, bug or oops from the whole run.
source "$(dirname "$0")/../lib.sh"

dmesg_assert_clean
note "dmesg clean ($(dmesg | wc -l) lines)"
