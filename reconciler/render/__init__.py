"""Turning results into text: a plan (``plan``) and a status report (``status``), as text, JSON or
Markdown. Rendering reads the pure core's values only: no client, no factory, no keys."""

from reconciler.render.plan import SYMBOLS, operation_dict

__all__ = ["SYMBOLS", "operation_dict"]
