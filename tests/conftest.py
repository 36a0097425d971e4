"""Hypothesis profiles for the whole suite (``ci`` by default, ``nightly`` for long runs), and
one Kafka jar cache for every run the suite starts.

Select a profile with ``--hypothesis-profile=nightly`` or ``LOGBENCH_HYPOTHESIS_PROFILE=nightly``.
"""

import pytest

from pytest_logbench.kafka.jars import kafka_home
from pytest_logbench.strategies import register_profiles

register_profiles()

pytest_plugins = ["tests.coordinator_harness"]  # the group coordinator's fixtures

KAFKA_HOME = kafka_home()  # read now: pytester points HOME at a temporary directory


@pytest.fixture(autouse=True)
def _one_kafka_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytester's runs (a temporary HOME) use the cache `.ci/run` filled, not one of their own."""
    monkeypatch.setenv("LOGBENCH_KAFKA_HOME", str(KAFKA_HOME))
