# replicad refuses each kind of malformed input with its reason, writes nothing from
# it, and keeps serving a valid stream.
source "$(dirname "$0")/../lib.sh"
net_setup

state=/tmp/state-malformed
target=/tmp/malformed-target.img
size=$((64 << 20))
rm -rf "$state" "$target" /tmp/expected-*.img
truncate -s "$size" "$target"
replicad_start "$target" "$state"

send() { ip netns exec prod "$AREPL_SEND" --connect "$PRIMARY_ADDR" --volume mf --volume-size "$size" "$@"; }
target_sha() { sha256sum "$target" | cut -d' ' -f1; }

note "a valid stream first: the volume identity is recorded"
send stream --seed 1 --count 60 --expect-image /tmp/expected-1.img || fail "valid stream failed"
[[ $(target_sha) == $(sha256sum </tmp/expected-1.img | cut -d' ' -f1) ]] ||
    fail "target differs from the expected image after a valid stream"

declare -A reason=(
    [bad-magic]="bad magic"
    [bad-version]="unsupported protocol version"
    [bad-header-crc]="header crc32c mismatch"
    [unknown-kind]="unknown frame kind"
    [past-end]="past the end"
    [oversized]="length"
    [bad-payload-crc]="payload checksum mismatch"
    [sequence-gap]="sequence"
    [wrong-volume]="volume"
    [data-before-hello]="Hello"
    [ping-before-hello]="Hello"
    [bad-verify]="past the end"
    [bad-verify-payload]="malformed Verify payload"
    [mismatch-from-sender]="unexpected Mismatch frame"
)
for kind in bad-magic bad-version bad-header-crc unknown-kind past-end oversized ping-before-hello \
    bad-payload-crc sequence-gap wrong-volume data-before-hello bad-verify bad-verify-payload \
    mismatch-from-sender; do
    before=$(target_sha)
    lines=$(wc -l <"$state/replicad.log")
    send malformed "$kind" || fail "$kind: replicad did not drop the connection"
    sleep 0.3
    new_log=$(tail -n "+$((lines + 1))" "$state/replicad.log")
    grep -E 'dropping connection|refused session' <<<"$new_log" | grep -qiF "${reason[$kind]}" || {
        echo "$new_log" >&2
        fail "$kind: no log line naming '${reason[$kind]}'"
    }
    [[ $(target_sha) == "$before" ]] || fail "$kind: the target changed"
    kill -0 "$(cat "$state/replicad.pid")" || fail "$kind: replicad died"
    echo "refused $kind: $(grep -E 'dropping connection|refused session' <<<"$new_log" | tail -n1 | sed 's/.*: //')"
done

note "a valid stream still works afterwards"
send stream --seed 2 --count 60 --base-image /tmp/expected-1.img --expect-image /tmp/expected-2.img ||
    fail "valid stream after the bad ones failed"
[[ $(target_sha) == $(sha256sum </tmp/expected-2.img | cut -d' ' -f1) ]] ||
    fail "target differs from the expected image after the second stream"
replicad_stop "$state"
