"""The `respool` command (also installed as the kubectl plugin `kubectl-respool`)."""
