"""Benchmark sizes: full by default; ``LOGBENCH_SMOKE=1`` shrinks every benchmark to a quick
run that CI uses to check they still work (its figures mean nothing)."""

from __future__ import annotations

import os

SMOKE = os.environ.get("LOGBENCH_SMOKE", "") not in ("", "0")


def scaled(full: int, smoke: int) -> int:
    """``full`` normally, ``smoke`` under LOGBENCH_SMOKE=1."""
    return smoke if SMOKE else full
