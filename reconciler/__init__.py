"""GitOps reconciler for production OTA waves: the packages and the rules between them are in
``docs/architecture.md``."""

__version__ = "0.1.0"
