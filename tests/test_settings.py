"""Broker settings are declared once: the command line and the plugin's options derive from
the table, and a value given through the plugin reaches the broker's config unchanged."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_logbench.brokers import BrokerOptions
from reference_broker.__main__ import _broker_parser, config_from_args
from reference_broker.config import SETTINGS, BrokerConfig
from reference_broker.log import LogConfig

# A value other than the default for every setting, acceptable to the config's checks.
CHANGED = {
    "segment_bytes": 1 << 20,
    "index_interval_bytes": 8192,
    "retention_bytes": 1 << 30,
    "retention_ms": 60_000,
    "segment_ms": 3_600_000,
    "fsync": "always",
    "fsync_interval_ms": 50,
    "max_message_bytes": 2 << 20,
    "file_delete_delay_ms": 10,
    "host": "127.0.0.2",
    "port": 19092,
    "metrics_port": 19093,
    "metrics_host": "127.0.0.3",
    "copy": True,
    "auto_create_topics": False,
    "num_partitions": 3,
    "max_request_bytes": 1 << 20,
    "queued_max_request_bytes": 1 << 24,
    "connections_max_idle_ms": 1000,
    "max_connections": 50,
    "max_connections_per_ip": 5,
    "fetch_max_bytes": 1 << 20,
    "max_created_partitions_per_request": 10,
    "offsets_topic_num_partitions": 3,
    "tail_window_bytes": 1 << 20,
    "retention_check_interval_ms": 20,
    "group_min_session_timeout_ms": 500,
    "group_max_session_timeout_ms": 60_000,
    "group_initial_rebalance_delay_ms": 100,
    "warm_history_fetches": True,
    "fetch_slowdown": 2.0,
}


def test_every_setting_has_a_changed_value_here():
    assert set(CHANGED) == set(SETTINGS)  # a new setting must be added to this round trip


def test_every_setting_travels_from_the_plugin_to_the_broker_config():
    options = BrokerOptions().with_(**CHANGED)
    args = _broker_parser().parse_args(["--log-dir", "/tmp/x", *options.command_args()])
    config = config_from_args(args)
    for name, value in CHANGED.items():
        holder = config.log if SETTINGS[name].scope == "log" else config
        assert getattr(holder, name) == value, name


def test_defaults_come_from_the_config_classes():
    args = _broker_parser().parse_args(["--log-dir", "/tmp/x", "--port", "0"])
    config = config_from_args(args)
    assert dataclasses.replace(config, log_dir=config.log_dir) == BrokerConfig(
        log_dir=config.log_dir
    )
    assert config.log == LogConfig()
    assert _broker_parser().parse_args(["--log-dir", "x"]).port == 9092  # by hand: Kafka's


def test_options_name_the_valid_choices_and_go_back_to_defaults():
    with pytest.raises(TypeError, match=r"unknown broker option.*segment_bites.*segment_bytes"):
        BrokerOptions().with_(segment_bites=1)
    options = BrokerOptions().with_(segment_bytes=1 << 20, copy=True)
    assert options.segment_bytes == 1 << 20 and options.retention_ms is None
    assert options.local_only() == ["copy"]
    assert options.with_(segment_bytes=None).command_args() == ["--copy"]
    with pytest.raises(AttributeError, match="no option or broker setting 'colour'"):
        _ = options.colour


def test_every_setting_says_what_it_is():
    for item in SETTINGS.values():
        assert item.help and item.flag.startswith("--"), item
        assert item.local_only or item.kafka or item.name in ("fsync", "host", "port"), item
