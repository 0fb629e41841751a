# Shared settings for the project's scripts; sourced, never run.
# shellcheck shell=bash
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_ROOT="${AREPL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dm-arepl}"
BINDGEN_VERSION=0.69.5
VNG_VERSION=1.42
VNG_VENV="$CACHE_ROOT/vng-venv"
export PATH="$VNG_VENV/bin:$HOME/.cargo/bin:$PATH"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }
