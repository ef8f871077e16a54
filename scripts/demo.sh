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

after_control_plane() {
    :  # (install CRDs, start the operator, apply example pools and reservations)
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

Status and shutdown:

  $VENV_BIN/respool dev status
  $VENV_BIN/respool dev down
MSG
