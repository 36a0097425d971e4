"""@platformatic/kafka 1.x (Node.js), a client that speaks only flexible versions: it starts
with ApiVersions v3, and gave up at once when the broker answered UNSUPPORTED_VERSION. It
produces, reads from a middle offset, commits in a group and resumes from the commit, also
after a broker restart (``tests/clients/node/platformatic.mjs``). Its package is pinned in
``tests/clients/node``'s package-lock.json and installed by ``npm ci --prefix
tests/clients/node`` (``.ci/run``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pytest_logbench.client import HarnessClient

NODE_CLIENTS = Path(__file__).parent / "clients" / "node"
COUNT, MIDDLE, COMMITTED = 100, 40, 10  # as in platformatic.mjs


def _run(node: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [node, str(NODE_CLIENTS / "platformatic.mjs"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_platformatic_produces_reads_from_the_middle_and_resumes_from_a_commit(broker):
    node = shutil.which("node")
    if node is None or not (NODE_CLIENTS / "node_modules" / "@platformatic" / "kafka").exists():
        pytest.skip("needs node and `npm ci --prefix tests/clients/node`")
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("platformatic")

    seen = _run(node, broker.bootstrap, "platformatic", "plt-group")
    expected = [
        {"offset": i, "key": f"k{i}", "value": f"v{i}" * (i % 7), "header": str(i)}
        for i in range(COUNT)
    ]
    assert seen["middle"] == expected[MIDDLE:]
    assert seen["first"] == expected[:COMMITTED]
    assert seen["resumed"] == expected[COMMITTED : COMMITTED + 1]

    broker.restart()
    after = _run(node, broker.bootstrap, "platformatic", "plt-group", "resume")
    assert after["resumed"] == expected[COMMITTED : COMMITTED + 1]
