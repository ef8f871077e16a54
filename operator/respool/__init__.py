"""respool: reservable shared hardware on Kubernetes (ResourcePool / ResourceReservation)."""

__version__ = "0.1.0"

GROUP = "respool.io"
VERSION = "v1alpha1"
