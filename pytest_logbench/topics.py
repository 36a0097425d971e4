"""Topic names of one test: unique, so tests sharing a broker never read each other's data.

On a broker started for the test a fixed name would do; on an external cluster every test
(and every run of it) writes to the same brokers, and a test reading ``events`` back would
count an earlier test's records. The names carry the test's name, so a look at the cluster (or
a residency plot) says whose data it is, and a short random token, so a rerun gets fresh ones.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

TOKEN_LENGTH = 8
# Kafka's topic names: [A-Za-z0-9._-], at most 249 characters.
_NOT_TOPIC = re.compile(r"[^A-Za-z0-9._-]+")
_TOKEN = re.compile(rf"-[0-9a-f]{{{TOKEN_LENGTH}}}(?=(-\d+)?$)")


def display_name(name: str) -> str:
    """``name`` without the token of ``TopicNames`` (for labels: the same across runs)."""
    return _TOKEN.sub("", name)


class TopicNames:
    """The ``topic_factory`` fixture: ``topic_factory()`` or ``topic_factory("orders")``
    returns a new topic name for this test; ``names`` lists them in order.

    External brokers whose ``broker_factory`` options shape topics (``segment_bytes``,
    ``num_partitions``...) are attached: each name, made before or after, is created on them
    with those configs, so the settings hold for the test's topics.
    """

    def __init__(self, test_name: str) -> None:
        self.prefix = _NOT_TOPIC.sub("-", test_name).strip("-.")[:120] or "test"
        self.names: list[str] = []
        self.brokers: list[Any] = []

    def __call__(self, label: str = "") -> str:
        suffix = f"-{_NOT_TOPIC.sub('-', label)}" if label else ""
        name = f"{self.prefix}{suffix}-{uuid.uuid4().hex[:TOKEN_LENGTH]}"
        self.names.append(name)
        for broker in self.brokers:
            broker.create_topic(name)
        return name

    def attach(self, broker: Any) -> None:
        """Create this test's topics on ``broker``, and the ones named later too."""
        for name in self.names:
            broker.create_topic(name)
        self.brokers.append(broker)


TOPICS_KEY = pytest.StashKey[TopicNames]()


def topics_of(request: pytest.FixtureRequest) -> TopicNames:
    """This test's ``TopicNames`` (the ``topic_factory`` fixture's), made on first use."""
    node = request.node
    if TOPICS_KEY not in node.stash:
        node.stash[TOPICS_KEY] = TopicNames(getattr(node, "originalname", node.name))
    return node.stash[TOPICS_KEY]
