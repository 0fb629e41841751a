# Malformed table lines fail dmsetup create with a precise message in dmesg.
source "$(dirname "$0")/../lib.sh"
load_module

disk=$(disk_by_serial arepl0)
size=$(sectors_of "$disk")

expect_refused() { # table arguments after "arepl", expected dmesg text
    local args=$1 expected=$2 mark out
    mark=$(dmesg_mark)
    if out=$(dmsetup create arepl-bad --table "0 $size arepl $args" 2>&1); then
        dmsetup remove arepl-bad
        fail "accepted: arepl $args"
    fi
    if dmsetup info arepl-bad >/dev/null 2>&1; then
        dmsetup remove arepl-bad
        fail "refused table left device arepl-bad behind: arepl $args"
    fi
    if ! dmesg_since "$mark" | grep -qF -- "$expected"; then
        dmesg_since "$mark" >&2
        fail "no '$expected' in dmesg for: arepl $args"
    fi
    echo "refused: arepl $args -> $expected"
}

expect_refused "" "missing arguments: got 0"
expect_refused "$disk" "missing arguments: got 1"
expect_refused "$disk nowhere" "invalid primary link address 'nowhere'"
expect_refused "$disk 10.90.0.2" "invalid primary link address '10.90.0.2'"
expect_refused "$disk 10.90.0.2:0" "invalid primary link address: port must not be 0"
expect_refused "$disk $PRIMARY_ADDR 10.91.0.2:http" "invalid backup link address '10.91.0.2:http'"
expect_refused "$disk $PRIMARY_ADDR $PRIMARY_ADDR" "primary and backup links must be different"
expect_refused "$disk $PRIMARY_ADDR 2 queue_mb:8" "feature argument count is 2 but 1 argument(s) follow"
expect_refused "$disk $PRIMARY_ADDR 1 queue_mb:0" "invalid queue_mb '0'"
expect_refused "$disk $PRIMARY_ADDR 1 queue_mb:lots" "invalid queue_mb 'lots'"
expect_refused "$disk $PRIMARY_ADDR 1 fast:yes" "unknown feature argument 'fast:yes'"
expect_refused "$disk $PRIMARY_ADDR 2 volume:a volume:b" "feature argument volume given twice"
expect_refused "$disk $PRIMARY_ADDR 1 volume:a/b" "invalid volume name 'a/b'"
expect_refused "$disk $PRIMARY_ADDR 1 wire_crc:maybe" "invalid wire_crc 'maybe': expected on or off"
expect_refused "/dev/arepl-no-such-disk $PRIMARY_ADDR" "cannot open local device '/dev/arepl-no-such-disk'"
expect_refused "$disk $PRIMARY_ADDR $BACKUP_ADDR 1 2 3 4 5 6 7 8 9 10 11 12 13 14" "too many table arguments"

note "a valid line with every option is accepted"
dmsetup create arepl-good --table "0 $size arepl $disk $PRIMARY_ADDR $BACKUP_ADDR 2 queue_mb:8 volume:db-01"
table=$(dmsetup table arepl-good)
[[ $table == *" $PRIMARY_ADDR $BACKUP_ADDR 2 queue_mb:8 volume:db-01" ]] || fail "table reads back as '$table'"
dmsetup remove arepl-good

note "one live target per volume: a second device and a live reload are refused"
dmsetup create arepl-one --table "0 $size arepl $disk $PRIMARY_ADDR 1 volume:shared"
spare=$(disk_by_serial arepl2)
expect_refused_named() { # device name, table, expected dmesg text
    local mark
    mark=$(dmesg_mark)
    # shellcheck disable=SC2086 # $1 is "create NAME" or "reload NAME"
    if printf "%s\n" "$2" | dmsetup $1 2>/dev/null; then fail "accepted: $2"; fi
    dmesg_since "$mark" | grep -qF -- "$3" || fail "no '$3' in dmesg"
    echo "refused: $2 -> $3"
}
expect_refused_named "create arepl-two" "0 $(sectors_of "$spare") arepl $spare $PRIMARY_ADDR 1 volume:shared" \
    "volume shared is already replicated by another live arepl target"
dmsetup info arepl-two >/dev/null 2>&1 && fail "refused device arepl-two exists"
expect_refused_named "reload arepl-one" "0 $size arepl $disk $PRIMARY_ADDR 1 volume:shared" \
    "reloading a live arepl table is not supported yet"
[[ $(dmsetup table arepl-one) == *"volume:shared" ]] || fail "arepl-one lost its table"
dmsetup remove arepl-one
dmsetup create arepl-one --table "0 $size arepl $disk $PRIMARY_ADDR 1 volume:shared" ||
    fail "the volume was not released by dmsetup remove"
dmsetup remove arepl-one
