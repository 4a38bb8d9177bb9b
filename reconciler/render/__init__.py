"""Turning results into text: a plan (``plan``) and a status report (``status``), as text, JSON or
Markdown, and the status report as one self-contained HTML page (``report``, built from the status JSON).
Rendering reads the pure core's values only: no client, no factory, no keys."""

from reconciler.render.plan import SYMBOLS, operation_dict

__all__ = ["SYMBOLS", "operation_dict"]
