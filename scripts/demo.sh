#!/usr/bin/env bash
# The main job: boots the test kernel and shows an arepl device at work.
# Run through `make demo`, which builds the kernel, the module and the tools first.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

exec "$REPO_ROOT/scripts/vm-run.sh" --disk-mb 256 --disk-mb 256 -- "$REPO_ROOT/scripts/demo-guest.sh"
