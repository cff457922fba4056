#!/usr/bin/env bash
# Create one virtual environment per peer under .bench/venvs/<peer>, from pinned requirements.
#
#   bash benchmarks/peers/setup_envs.sh [peer ...]     (default: every peer)
#
# Each venv gets torch==2.13.0 first (the local CPU wheel), then the peer's fully pinned
# requirements (benchmarks/peers/requirements/<peer>.txt) with --no-deps and a constraints file
# pinning torch, so nothing can pull another torch build or torchvision. A venv whose stamp
# matches its requirements file and whose runner imports is kept as is (idempotent). A peer that
# fails to install is reported and skipped; the exit code is the number of failed peers.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEERS_DIR="$ROOT/benchmarks/peers"
REQS="$PEERS_DIR/requirements"
VENVS="$ROOT/.bench/venvs"
ALL_PEERS=(hf_datasets mosaic_mds litdata parquet array_record)
TORCH_PIN="torch==2.13.0"

stamp_of() { sha256sum "$REQS/$1.txt" | cut -d' ' -f1; }

# A venv works if its stamp matches the requirements and the runner imports its peer.
venv_ok() {
    local peer=$1 venv="$VENVS/$1"
    [[ -x "$venv/bin/python" && -f "$venv/.stamp" ]] || return 1
    [[ "$(cat "$venv/.stamp")" == "$(stamp_of "$peer")" ]] || return 1
    (cd "$PEERS_DIR" && "$venv/bin/python" "${peer}_bench.py" --help >/dev/null 2>&1)
}

install_peer() {
    local peer=$1 venv="$VENVS/$1"
    rm -rf "$venv"
    python3 -m venv "$venv" &&
        "$venv/bin/pip" install -q "$TORCH_PIN" &&
        "$venv/bin/pip" install -q --no-deps -c "$REQS/constraints.txt" -r "$REQS/$peer.txt" &&
        stamp_of "$peer" >"$venv/.stamp"
}

main() {
    local peers=("$@") failed=0
    [[ ${#peers[@]} -eq 0 ]] && peers=("${ALL_PEERS[@]}")
    mkdir -p "$VENVS"
    for peer in "${peers[@]}"; do
        if venv_ok "$peer"; then
            echo "[$peer] ok (kept)"
            continue
        fi
        echo "[$peer] installing into $VENVS/$peer"
        if install_peer "$peer" 2> >(grep -v "^WARNING: Location" >&2) && venv_ok "$peer"; then
            echo "[$peer] ok"
        else
            echo "[$peer] FAILED" >&2
            failed=$((failed + 1))
        fi
    done
    return "$failed"
}

main "$@"
