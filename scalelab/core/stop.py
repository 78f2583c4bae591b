"""Stop requests (SIGTERM, SIGINT) as a flag that a run checks between steps.

`catch_signals()` is called first thing by the CLI, so a signal during start-up
(importing jax, loading data, compiling) is remembered rather than raised as an
exception wherever Python happens to be (it can land in a garbage-collection
callback and be lost). The loop checks the flag before its first step and
between steps.
"""
from __future__ import annotations

import signal
import threading

requested = threading.Event()


def catch_signals() -> dict:
    """Route SIGTERM and SIGINT to `requested`; returns the previous handlers."""
    return {sig: signal.signal(sig, lambda *_: requested.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
