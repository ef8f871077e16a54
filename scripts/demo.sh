#!/usr/bin/env bash
# The README's run command: from a fresh clone, set everything up and run respool on the
# embedded local cluster (control plane, controller-manager, scheduler, and kwok simulating
# the Nodes the example pools name).
#
#   bash scripts/demo.sh
#
# Safe to run again: it reuses the running cluster, replaces the operator a previous run
# started, and re-applies the examples. It leaves everything running so you can look around
# with kubectl; stop it all with `.venv/bin/respool dev down`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

respool_setup

# The example pools' hosts (manifests/examples/01-pool-rack-a.yaml and 02-pool-gpu-lab.yaml),
# as simulated Nodes: kwok keeps them Ready, so the pools' trackNodes sees them, and Pods
# scheduled onto them run.
DEMO_NODES=(--node 'rack-a-n[0-3]' --node 'lab-cpu[1-2]' --node 'lab-gpu[1-2]' --node 'gpu-rack-n[0-1]')
say "starting the local cluster with simulated Nodes (respool dev up ${DEMO_NODES[*]})"
"$VENV_BIN/respool" dev up "${DEMO_NODES[@]}"
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
WEBHOOK_PORT="${RESPOOL_DEMO_WEBHOOK_PORT:-9466}"
OPERATOR_PID_FILE="$OPERATOR_DIR/operator.pid"
OPERATOR_LOG="$OPERATOR_DIR/operator.log"

after_control_plane() {
    say "installing the CRDs"
    kubectl apply --server-side --force-conflicts -f "$REPO_ROOT/crds/" >/dev/null
    kubectl wait --for=condition=Established --timeout=60s \
        crd/resourcepools.respool.io crd/resourcereservations.respool.io >/dev/null

    # One operator per cluster: stop the one a previous demo started (by its pid), if alive,
    # and make sure it is gone before the next one binds the same metrics port: it gets 30 s
    # to stop (a loaded machine can take long), then SIGKILL.
    if [ -f "$OPERATOR_PID_FILE" ]; then
        local previous
        previous="$(cat "$OPERATOR_PID_FILE")"
        if kill -0 "$previous" 2>/dev/null && grep -qa "respool" "/proc/$previous/cmdline" 2>/dev/null; then
            say "stopping the operator a previous demo started (pid $previous)"
            kill "$previous" 2>/dev/null || true
            for _ in $(seq 150); do kill -0 "$previous" 2>/dev/null || break; sleep 0.2; done
            if kill -0 "$previous" 2>/dev/null; then
                say "it did not stop within 30 s; killing it"
                kill -9 "$previous" 2>/dev/null || true
                for _ in $(seq 50); do kill -0 "$previous" 2>/dev/null || break; sleep 0.2; done
            fi
        fi
        rm -f "$OPERATOR_PID_FILE"
    fi
    say "starting the operator (respool run), logging to $OPERATOR_LOG"
    mkdir -p "$OPERATOR_DIR"
    # --webhook-port: the admission webhook for Pods labelled respool.io/reservation, on
    # 127.0.0.1 where the local API server reaches it (docs/api.md, "Workloads").
    nohup "$VENV_BIN/respool" run --metrics-port "$METRICS_PORT" --liveness "http://127.0.0.1:$LIVENESS_PORT/healthz" \
        --webhook-port "$WEBHOOK_PORT" >"$OPERATOR_LOG" 2>&1 &
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

    # Workloads consume reservations: llm-finetune holds gpu-rack-n0 (tainted while Active);
    # the Pod that names it lands there, the one that does not is kept off.
    say "running a Pod on the reserved Node gpu-rack-n0 and one that is kept off it"
    kubectl wait --for=jsonpath='{.status.phase}'=Active rsv/llm-finetune -n team-a --timeout=60s >/dev/null \
        || die "llm-finetune did not become Active"
    for _ in $(seq 150); do
        kubectl get mutatingwebhookconfiguration respool.io -o jsonpath='{.webhooks[0].clientConfig.caBundle}' 2>/dev/null \
            | grep -q . && break
        sleep 0.2
    done
    kubectl delete pod trainer squatter -n team-a --ignore-not-found >/dev/null
    kubectl apply -f "$REPO_ROOT/manifests/examples/workloads/" 2>&1 | sed 's/^/    /' >&2
    kubectl wait --for=condition=Ready pod/trainer -n team-a --timeout=120s >/dev/null \
        || die "the Pod trainer did not start on the reserved Node"

    # A workload on the simulated Nodes: the scheduler places the Pods, kwok runs them (no
    # container exists; the image is never pulled).
    say "running a Deployment on the simulated Nodes"
    kubectl create deployment hello -n team-a --image=registry.invalid/hello:1 --replicas=4 \
        --dry-run=client -o yaml | kubectl apply -f - >/dev/null
    kubectl rollout status deployment/hello -n team-a --timeout=120s >/dev/null \
        || die "the demo Deployment did not become available (see respool dev status)"
    sleep 3
    echo >&2
    kubectl get nodes >&2
    echo >&2
    kubectl get pods -n team-a -o wide >&2
    echo >&2
    kubectl get rpool,rsv -A >&2
}

after_control_plane

cat <<MSG

respool's local control plane is running: $(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
(kube-apiserver $(kubectl version -o json | "$VENV_BIN/python" -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'), etcd on tmpfs, kube-controller-manager, kube-scheduler,
and kwok simulating the Nodes rack-a-n[0-3], lab-cpu[1-2] and lab-gpu[1-2]: Pods run on them
without containers)

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
Both pools track their Nodes (trackNodes): cordon one and its rank goes down, uncordon it
and the rank returns (watch the DOWN column and the Active reservations' conditions):
  kubectl cordon rack-a-n1 && kubectl get rpool rack-a -w
  kubectl uncordon rack-a-n1
  kubectl drain rack-a-n2 --ignore-daemonsets  # cordons it and moves its hello Pods away
  kubectl get pods -n team-a -o wide

Workloads consume reservations (gpu-rack enforces them): trainer, labelled
respool.io/reservation: llm-finetune, runs on the reserved Node; squatter stays Pending:
  kubectl get pods trainer squatter -n team-a -o wide
  kubectl get nodes -L respool.io/reservation
  kubectl delete rsv llm-finetune -n team-a    # the taint goes and squatter is scheduled there

Status and shutdown:

  $VENV_BIN/respool dev status
  $VENV_BIN/respool dev down                   # stops the operator and every process of the cluster
MSG
