"""Start-up stays lean: modules the broker needs only later, or only for a subcommand, are not
imported when it starts (each would add milliseconds to every start; issue 17 targets 100 ms
from process start to the READY line)."""

from __future__ import annotations

import subprocess
import sys

import pytest

LATER = {
    "urllib.request": "only the 'groups' subcommand reads a metrics URL",
    "crc32c": "needed at the first produce or recovery, and its import is slow",
}


@pytest.mark.parametrize("module", sorted(LATER))
def test_starting_the_broker_does_not_import(module):
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, reference_broker.__main__; print({module!r} in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert found == "False", f"{module} is imported at start-up ({LATER[module]})"


def test_a_broker_caches_its_bytecode_outside_the_tree_when_writing_it_is_off(
    broker_factory, monkeypatch, tmp_path
):
    """PYTHONDONTWRITEBYTECODE (set on some machines) would make every broker start compile
    all its modules; the launcher keeps their bytecode in logbench's cache instead."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    broker_factory()
    prefix = tmp_path / "logbench" / "pycache"
    assert any(prefix.rglob("reference_broker/server*.pyc")), "no bytecode cached"
