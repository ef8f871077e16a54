#!/usr/bin/env bash
# Shared set-up for scripts/test.sh and scripts/demo.sh (source it; it defines functions only).
#
#   respool_setup   create .venv (Python >= 3.11) if missing, make it hold exactly the locked
#                   closure of uv.lock (respool editable, with its client, test and dev extras), then
#                   build or reuse the cached dev-cluster binaries (kube-apiserver, kubectl,
#                   kube-scheduler, kube-controller-manager, etcd, helm, kwok)
#                   (`respool dev build`).
#
# uv.lock is the single source of the Python closure. uv itself is bootstrapped into the venv
# with pip at UV_VERSION (the version the lock pins in the dev extra; a test checks they agree),
# then `uv sync --locked` installs the lock exactly, removes anything else, and refuses to run
# when pyproject.toml and uv.lock disagree (refresh: `.venv/bin/uv lock`, see README).
#
# After it: $VENV_BIN holds python, respool, ruff, mypy, pytest, uv; $RESPOOL_BIN_DIR_BUILT the binaries.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="$REPO_ROOT/.venv"
VENV_BIN="$VENV_DIR/bin"
UV_VERSION="0.13.9"

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
    if [ "$("$VENV_BIN/uv" --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
        say "bootstrapping uv $UV_VERSION into .venv"
        # `uv sync` removes pip (it is not in the lock); bring it back for the bootstrap only.
        "$VENV_BIN/python" -m pip --version >/dev/null 2>&1 || "$VENV_BIN/python" -m ensurepip --quiet
        "$VENV_BIN/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION" \
            || die "could not install uv $UV_VERSION from the package index"
    fi
    # Cheap when nothing changed (a few milliseconds), so it runs every time: code edits need
    # nothing (editable install), a changed lock is applied, and a pyproject.toml edited without
    # refreshing the lock stops here with uv's message instead of testing something else.
    say "installing the locked closure (uv.lock) into .venv"
    UV_PROJECT_ENVIRONMENT="$VENV_DIR" UV_PYTHON_DOWNLOADS=never \
        "$VENV_BIN/uv" sync --locked --extra client --extra test --extra dev --quiet \
        || die "uv sync failed: if pyproject.toml changed, refresh the lock with '.venv/bin/uv lock' and commit uv.lock"
    say "building or reusing the control-plane binaries (first run: 15-40 minutes)"
    RESPOOL_BIN_DIR_BUILT="$("$VENV_BIN/respool" dev build)" || die "could not build the control-plane binaries (see above)"
    export RESPOOL_BIN_DIR_BUILT
    say "binaries: $RESPOOL_BIN_DIR_BUILT"
}
