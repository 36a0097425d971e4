"""Start-up stays lean: modules the broker needs only later, or only for a subcommand, are not
imported when it starts (each would add milliseconds to every start; issue 17 targets 100 ms
from process start to the READY line)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_logbench.client import HarnessClient
from reference_broker.protocol import ApiKey
from tests.kafka_group_clients import committed_offsets

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


def _offsets_partitions(broker) -> list[str]:
    return sorted(p.name for p in broker.log_dir.glob("__consumer_offsets-*"))


@pytest.mark.parametrize("first_use", ["group lookup", "metadata naming it"])
def test_the_offsets_topic_is_created_when_first_needed(broker_factory, first_use):
    """A new broker used to create ``__consumer_offsets`` (50 partitions) before its READY
    line. Kafka creates it when a client first looks up a group's coordinator or names it in
    a Metadata request; so does this broker, and a commit made then outlives a restart."""
    broker = broker_factory(offsets_topic_num_partitions=3)
    assert _offsets_partitions(broker) == []
    with HarnessClient(broker.bootstrap) as client:
        listed = client.request(ApiKey.METADATA, 12, {"topics": None})["topics"]
        assert "__consumer_offsets" not in [t["name"] for t in listed]
        if first_use == "metadata naming it":
            body = {"topics": [{"name": "__consumer_offsets"}], "allow_auto_topic_creation": True}
            [named] = client.request(ApiKey.METADATA, 12, body)["topics"]
            assert (named["error_code"], named["is_internal"]) == (0, True)
            assert len(named["partitions"]) == 3
        else:
            client.create_topic("t", 1)
            client.commit("g", "t", 0, 5)  # looks the coordinator up first, as clients do
    assert _offsets_partitions(broker) == [f"__consumer_offsets-{i}" for i in range(3)]
    if first_use == "group lookup":
        broker.restart()
        assert committed_offsets(broker.bootstrap, "g", "t", 1) == {0: 5}
