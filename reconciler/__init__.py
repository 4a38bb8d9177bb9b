"""GitOps reconciler for production OTA waves (see DESIGN.md)."""

__version__ = "0.1.0"
