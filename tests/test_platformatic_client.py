"""@platformatic/kafka 1.x (Node.js), a client that speaks only flexible versions: it starts
with ApiVersions v3, and gave up at once when the broker answered UNSUPPORTED_VERSION. It
produces, reads from a middle offset, and commits in a group and resumes from the commit
(``tests/platformatic/check.mjs``). Its package is pinned in ``tests/platformatic``'s
package-lock.json and installed by ``npm ci --prefix tests/platformatic`` (``.ci/run``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_logbench.client import HarnessClient

CHECK = Path(__file__).parent / "platformatic"
COUNT, MIDDLE, COMMITTED = 100, 40, 10  # as in check.mjs


def test_platformatic_produces_reads_from_the_middle_and_resumes_from_a_commit(broker):
    node = shutil.which("node")
    if node is None or not (CHECK / "node_modules" / "@platformatic" / "kafka").exists():
        pytest.skip("needs node and `npm ci --prefix tests/platformatic`")
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("platformatic")

    done = subprocess.run(
        [node, str(CHECK / "check.mjs"), broker.bootstrap, "platformatic", "plt-group"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout)
    expected = [
        {"offset": i, "key": f"k{i}", "value": f"v{i}" * (i % 7), "header": str(i)}
        for i in range(COUNT)
    ]
    assert seen["middle"] == expected[MIDDLE:]
    assert seen["first"] == expected[:COMMITTED]
    assert seen["resumed"] == expected[COMMITTED : COMMITTED + 1]
