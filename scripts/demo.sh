#!/usr/bin/env bash
# The README's run command: from a fresh clone, set everything up and run respool on the
# embedded local control plane.
#
#   bash scripts/demo.sh
#
# It leaves the control plane running so you can look around with kubectl; stop it with
# `.venv/bin/respool dev down`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

respool_setup

say "starting the local control plane (respool dev up)"
"$VENV_BIN/respool" dev up
KUBECONFIG="$("$VENV_BIN/respool" dev kubeconfig)"
PATH="$RESPOOL_BIN_DIR_BUILT:$VENV_BIN:$PATH"
export KUBECONFIG PATH
kubectl get --raw /readyz >/dev/null || die "the control plane is not answering"

# ---------------------------------------------------------------------------------------------
# After the control plane: everything below runs against $KUBECONFIG with kubectl, helm and
# respool on PATH. This is where the operator is installed and the examples are applied.
# ---------------------------------------------------------------------------------------------

# The dev home of `respool dev` (respool.devcluster.shared.dev_home): `respool dev down` finds
# the operator's pid file there and stops it together with the control plane.
OPERATOR_DIR="${RESPOOL_DEV_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/respool/dev}"
METRICS_PORT="${RESPOOL_DEMO_METRICS_PORT:-9464}"
LIVENESS_PORT="${RESPOOL_DEMO_LIVENESS_PORT:-9465}"
OPERATOR_PID_FILE="$OPERATOR_DIR/operator.pid"
OPERATOR_LOG="$OPERATOR_DIR/operator.log"

after_control_plane() {
    say "installing the CRDs"
    kubectl apply --server-side --force-conflicts -f "$REPO_ROOT/crds/" >/dev/null
    kubectl wait --for=condition=Established --timeout=60s \
        crd/resourcepools.respool.io crd/resourcereservations.respool.io >/dev/null

    # One operator per cluster: stop the one a previous demo started (by its pid), if alive.
    if [ -f "$OPERATOR_PID_FILE" ] && kill -0 "$(cat "$OPERATOR_PID_FILE")" 2>/dev/null; then
        say "stopping the operator a previous demo started (pid $(cat "$OPERATOR_PID_FILE"))"
        kill "$(cat "$OPERATOR_PID_FILE")"
        for _ in $(seq 50); do kill -0 "$(cat "$OPERATOR_PID_FILE")" 2>/dev/null || break; sleep 0.2; done
    fi
    say "starting the operator (respool run), logging to $OPERATOR_LOG"
    mkdir -p "$OPERATOR_DIR"
    nohup "$VENV_BIN/respool" run --metrics-port "$METRICS_PORT" --liveness "http://127.0.0.1:$LIVENESS_PORT/healthz" \
        >"$OPERATOR_LOG" 2>&1 &
    echo $! >"$OPERATOR_PID_FILE"
    disown || true
    for _ in $(seq 150); do
        grep -q "respool controller started" "$OPERATOR_LOG" 2>/dev/null && break
        kill -0 "$(cat "$OPERATOR_PID_FILE")" 2>/dev/null || { tail -20 "$OPERATOR_LOG" >&2; die "the operator exited"; }
        sleep 0.2
    done
    grep -q "respool controller started" "$OPERATOR_LOG" || die "the operator did not start (see $OPERATOR_LOG)"

    say "applying the examples (manifests/examples/)"
    kubectl apply -f "$REPO_ROOT/manifests/examples/00-namespaces.yaml" >/dev/null
    kubectl apply -f "$REPO_ROOT/manifests/examples/" 2>&1 | sed 's/^/    /' >&2
    sleep 3
    echo >&2
    kubectl get rpool,rsv -A >&2
}

after_control_plane

cat <<MSG

respool's local control plane is running: $(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
(kube-apiserver $(kubectl version -o json | "$VENV_BIN/python" -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'), etcd on tmpfs; no controller-manager or scheduler: Pods do not run)

Use it from this shell with:

  export KUBECONFIG=$KUBECONFIG
  export PATH=$RESPOOL_BIN_DIR_BUILT:$VENV_BIN:\$PATH
  kubectl get namespaces
  kubectl api-resources | head

The operator is running (pid $(cat "$OPERATOR_PID_FILE"), log $OPERATOR_LOG) with the example
pools and reservations of manifests/examples/. Things to look at:

  kubectl get rpool,rsv -A                     # phases, IDs, windows, free cores and GPUs
  kubectl get rsv -A -w                        # watch them move (Scheduled ones start later)
  kubectl describe rsv -n team-a               # conditions, messages and the decision Events
  kubectl get events -A --field-selector involvedObject.kind=ResourceReservation
  kubectl get rpool rack-a -o yaml             # the pool's status: capacity, down, summary
  $VENV_BIN/respool get pools                  # the same through respool's own CLI
  $VENV_BIN/respool describe pool rack-a       # utilization and a timeline of bookings per rank
  curl -s localhost:$METRICS_PORT/metrics | grep ^respool_

Try: delete a reservation and watch a waiting one get in; mark a rank down with
  kubectl patch rpool rack-a --type=merge -p '{"spec":{"down":"0"}}'

Status and shutdown:

  $VENV_BIN/respool dev status
  $VENV_BIN/respool dev down                   # stops the operator and the control plane
MSG
