"""logbench's command-line options, ini keys and markers: what a user can set, in one place."""

from __future__ import annotations

import pytest

BROKER_KINDS = ("reference", "kafka")

MARKERS = {
    "slow": "slow: takes more than a few seconds; still run in CI",
    "logbench_local": "logbench_local(*needs): the test needs what only a broker started by "
    "logbench gives: 'process' (the default: kill, restart, CPU, cgroups, copy/TLS), "
    "'log_dir' (page cache, segment files; --logbench-log-dir provides it) or 'metrics' "
    "(logbench_* counters; --logbench-metrics-url provides it). Against an external cluster "
    "(--logbench-bootstrap) the test is skipped before it runs unless the options provide "
    "every need. The plugin also reads these needs from the test's own code.",
}


def add_options(parser: pytest.Parser) -> None:
    """Every command-line option and ini key of logbench."""
    group = parser.getgroup("logbench", "logbench: Kafka page cache and zero-copy measurements")
    group.addoption(
        "--logbench-bootstrap",
        metavar="HOST:PORT",
        default=None,
        help="run broker fixtures against this external Kafka cluster instead of starting "
        "reference brokers (ini: logbench_bootstrap)",
    )
    group.addoption(
        "--logbench-log-dir",
        metavar="DIR",
        default=None,
        help="where the external broker keeps its data, enabling page-cache fixtures against it "
        "(ini: logbench_log_dir)",
    )
    group.addoption(
        "--logbench-metrics-url",
        metavar="URL",
        default=None,
        help="the metrics endpoint of the external broker (a reference broker's READY line "
        "names it), enabling broker.metric() and the counter assertions against it "
        "(ini: logbench_metrics_url)",
    )
    group.addoption(
        "--logbench-broker",
        choices=BROKER_KINDS,
        default=None,
        help="the broker the broker fixtures start: the reference broker (default) or Apache "
        "Kafka, fetched from Maven Central once, needs Java 17+ (ini: logbench_broker)",
    )
    group.addoption(
        "--logbench-keep-data",
        action="store_true",
        default=False,
        help="keep the reference brokers' log dirs after the tests (they are deleted otherwise)",
    )
    group.addoption(
        "--logbench-json",
        metavar="PATH",
        default=None,
        help="write every measurement result, with machine and commit info, to this JSON file",
    )
    group.addoption(
        "--logbench-save",
        metavar="NAME",
        default=None,
        help="save this session's results as baseline NAME in the storage dir",
    )
    group.addoption(
        "--logbench-compare",
        metavar="NAME",
        nargs="?",
        const="",
        default=None,
        help="compare results with saved baseline NAME (a saved name or a JSON path; the latest "
        "save when NAME is omitted: write --logbench-compare=NAME to avoid eating a test path)",
    )
    group.addoption(
        "--logbench-compare-fail",
        metavar="METRIC:N%",
        action="append",
        default=[],
        help="fail the session when METRIC got worse than the baseline by more than N%% at 99%% "
        "confidence (metrics: throughput, records, cpu, syscalls, latency_p99, ...); repeatable",
    )
    group.addoption(
        "--logbench-compare-ref",
        metavar="REV",
        default=None,
        help="measure each workload beside the reference broker of git revision REV (of the "
        "checkout logbench runs from), started with the test's options, in the same rounds; "
        "--logbench-compare-fail then judges throughput and cpu by the per-round ratios, "
        "which load on the machine cannot fool",
    )
    group.addoption(
        "--logbench-fetch-slowdown",
        metavar="FACTOR",
        type=float,
        default=None,
        help="make the reference brokers under test serve every fetch FACTOR times as slowly "
        "(never the reference revision's brokers or the raw peers): a regression to try the "
        "gate with, e.g. on your CI runner",
    )
    group.addoption(
        "--logbench-storage",
        metavar="DIR",
        default=None,
        help="where baselines are saved (default .logbench in the rootdir; ini: logbench_storage)",
    )
    group.addoption(
        "--logbench-plot",
        metavar="DIR",
        default=None,
        help="write PNG and SVG charts (throughput against the baseline, page-cache residency) "
        "to DIR; needs matplotlib (pip install 'logbench[plot]')",
    )
    group.addoption(
        "--logbench-max-rounds",
        metavar="N",
        type=int,
        default=None,
        help="while a verdict (the gate, assert_faster, ...) is undecided, record more rounds up "
        "to N per workload (default 25; ini: logbench_max_rounds)",
    )
    group.addoption(
        "--logbench-budget-seconds",
        metavar="S",
        type=float,
        default=None,
        help="... and for at most S seconds per measurement (default 90; ini: "
        "logbench_budget_seconds)",
    )
    parser.addini("logbench_max_rounds", "round budget (see --logbench-max-rounds)")
    parser.addini("logbench_budget_seconds", "time budget (see --logbench-budget-seconds)")
    parser.addini("logbench_bootstrap", "external cluster address (see --logbench-bootstrap)")
    parser.addini("logbench_log_dir", "external broker data dir (see --logbench-log-dir)")
    parser.addini("logbench_metrics_url", "external broker metrics (see --logbench-metrics-url)")
    parser.addini("logbench_storage", "baseline storage dir (see --logbench-storage)")
    parser.addini("logbench_broker", "broker kind: reference or kafka (see --logbench-broker)")


def setting(config: pytest.Config, name: str) -> str | None:
    """A logbench setting from its command-line option, else its ini key, else None."""
    value = config.getoption(f"logbench_{name}") or config.getini(f"logbench_{name}")
    return value or None
