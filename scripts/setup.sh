#!/usr/bin/env bash
# Shared set-up for scripts/test.sh and scripts/demo.sh (source it; it defines functions only).
#
#   respool_setup   create .venv (Python >= 3.11) if missing, install respool editable with its
#                   test and dev extras when pyproject.toml changed, then build or reuse the
#                   cached kube-apiserver, kubectl, etcd and helm (`respool dev build`).
#
# After it: $VENV_BIN holds python, respool, ruff, mypy, pytest; $RESPOOL_BIN_DIR_BUILT the binaries.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="$REPO_ROOT/.venv"
VENV_BIN="$VENV_DIR/bin"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

respool_setup() {
    cd "$REPO_ROOT"
    if [ ! -x "$VENV_BIN/python" ]; then
        local python
        python="$(find_python)" || die "Python >= 3.11 is needed (set PYTHON=/path/to/python3.11)"
        say "creating .venv with $python"
        "$python" -m venv "$VENV_DIR"
    fi
    # Reinstall only when the project's metadata changed: an editable install picks up code edits.
    local stamp="$VENV_DIR/.respool-installed" digest
    digest="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ] || [ ! -x "$VENV_BIN/respool" ]; then
        say "installing respool (editable) with test and dev extras"
        "$VENV_BIN/python" -m pip install --quiet -e '.[test,dev]'
        echo "$digest" > "$stamp"
    fi
    say "building or reusing the control-plane binaries (first run: 10-30 minutes)"
    RESPOOL_BIN_DIR_BUILT="$("$VENV_BIN/respool" dev build)" || die "could not build the control-plane binaries (see above)"
    export RESPOOL_BIN_DIR_BUILT
    say "binaries: $RESPOOL_BIN_DIR_BUILT"
}
