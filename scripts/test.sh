#!/usr/bin/env bash
# The README's test command: from a fresh clone, set everything up and run every check.
#
#   bash scripts/test.sh [pytest arguments, default: tests/]
#
# Steps: .venv + editable install, build/reuse the control-plane binaries and Flux's controllers,
# ruff, mypy, pytest over tests/ (the e2e tests start a private, real etcd + kube-apiserver). Every step runs even
# when an earlier one failed, so one run reports everything; the exit status is non-zero if any
# step failed. A control plane that cannot start makes the e2e tests ERROR, never skip.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

set -e
respool_setup
set +e

failed=()
run_step() {
    local name="$1"; shift
    say "$name: $*"
    if ! "$@"; then
        failed+=("$name")
        say "$name FAILED"
    fi
}

# Deterministic property tests (tests/conftest.py's "ci" profile) unless the caller chose.
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-ci}"

# Flux CD's source-controller and kustomize-controller for the GitOps test
# (tests/e2e/test_gitops_flux.py), built from Go modules once and cached beside the control
# plane; built here, not inside the test, so that a cold build (10-50 minutes) is not cut by the
# test's timeout. If it fails, the other tests still run (and the GitOps test fails).
run_step flux-controllers "$VENV_BIN/respool" dev build --gitops
run_step ruff "$VENV_BIN/ruff" check .
run_step mypy "$VENV_BIN/mypy"
# Arguments replace the default selection (e.g. `bash scripts/test.sh tests/unit -x`).
if [ "$#" -eq 0 ]; then set -- tests/; fi
run_step pytest "$VENV_BIN/python" -m pytest "$@"

if [ "${#failed[@]}" -ne 0 ]; then
    say "failed steps: ${failed[*]}"
    exit 1
fi
say "all checks passed"
