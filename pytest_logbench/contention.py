"""Contention on purpose: the load of a CI runner shared with other jobs, to try a comparison
under it (``benchmarks/test_gate.py``, the regression-guard tutorial)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def busy_cores(count: int | None = None) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` processes (default: one per core) spinning in a loop while the block runs;
    killed when it ends, also on an error."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(count if count is not None else os.cpu_count() or 1)
    ]
    try:
        yield spinners
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
