"""mlops-gitops generator: validated release specs in, committed Kubernetes manifests out."""

__version__ = "0.1.0"
