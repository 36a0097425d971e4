"""The pytest entry point of logbench: options, ini keys, markers and fixtures, in one place.

Fixtures:
    broker_factory  start reference brokers with options (``copy=True``, ``tls=True``, ...)
    broker          one fresh reference broker (or the external cluster) per test
    producer        the harness producer bound to ``broker``
    consumer        the harness consumer bound to ``broker``
    page_cache      evict / warm / residency of files or of a broker's segments
    measure         measure workloads over rounds (``measure(w)``, ``measure.compare(a, b)``);
                    results feed the terminal summary, JSON, baselines and plots
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_logbench import external, hookspecs
from pytest_logbench.baselines import Baselines, parse_threshold
from pytest_logbench.brokers import (
    BrokerOptions,
    LocalOnly,
    ReferenceBroker,
    ReferenceOnly,
)
from pytest_logbench.client import Consumer, Producer
from pytest_logbench.contract import Broker, LocalBroker
from pytest_logbench.measure import Budget, Meter
from pytest_logbench.options import BROKER_KINDS, MARKERS, add_options, setting
from pytest_logbench.plots import plots_unavailable
from pytest_logbench.report import SessionReport
from pytest_logbench.results import Result
from pytest_logbench.topics import TopicNames, topics_of
from pytest_logbench.workloads import client_options

if TYPE_CHECKING:
    from pytest_logbench.disk import DiskThrottle
    from pytest_logbench.memory import MemoryBudget
    from pytest_logbench.revisions import BrokerCode, ReferenceTwins

REPORT_KEY = pytest.StashKey[SessionReport]()
CODE_KEY = pytest.StashKey["BrokerCode | None"]()
BUDGET_KEY = pytest.StashKey[Budget]()
WORKER_RESULTS = "logbench_results"


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS.values():
        config.addinivalue_line("markers", line)
    bootstrap = setting(config, "bootstrap")
    port = bootstrap.rsplit(":", 1)[-1] if bootstrap else ""
    if bootstrap is not None and (":" not in bootstrap or not port.isdigit()):
        raise pytest.UsageError(f"--logbench-bootstrap expects HOST:PORT, got {bootstrap!r}")
    if setting(config, "broker") not in (None, *BROKER_KINDS):
        raise pytest.UsageError(
            f"logbench_broker must be one of {BROKER_KINDS}, got {setting(config, 'broker')!r}"
        )
    log_dir = setting(config, "log_dir")
    if log_dir is not None and not Path(log_dir).is_dir():
        raise pytest.UsageError(f"--logbench-log-dir {log_dir!r} is not a directory")
    slowdown = config.option.logbench_fetch_slowdown
    if slowdown is not None and (slowdown < 1 or setting(config, "broker") == "kafka" or bootstrap):
        raise pytest.UsageError(
            f"--logbench-fetch-slowdown={slowdown:g} needs a factor >= 1 and the reference "
            "broker (Kafka and external clusters have no injected slowdown)"
        )
    if bootstrap is not None and not (config.option.help or config.option.markers):
        external.check_reachable(bootstrap)
    config.stash[CODE_KEY] = _reference_code(config)
    config.stash[REPORT_KEY] = _session_report(config)
    _register_hypothesis_profiles()
    config.stash[BUDGET_KEY] = _budget(config)
    for note in config.stash[REPORT_KEY].notes:
        if note.startswith("WARNING"):
            config.issue_config_time_warning(pytest.PytestWarning(note), stacklevel=2)


def _register_hypothesis_profiles() -> None:
    """The ``ci`` and ``nightly`` profiles, before Hypothesis's plugin loads the one named by
    ``--hypothesis-profile`` (this hook runs first)."""
    try:
        from pytest_logbench.strategies import register_profiles
    except ImportError:  # Hypothesis is a dependency, but a broken install should not stop pytest
        return
    register_profiles(load=False)


def _budget(config: pytest.Config) -> Budget:
    rounds = config.getoption("logbench_max_rounds") or config.getini("logbench_max_rounds")
    seconds = config.getoption("logbench_budget_seconds") or config.getini(
        "logbench_budget_seconds"
    )
    try:
        budget = Budget(
            max_rounds=int(rounds) if rounds else Budget.max_rounds,
            seconds=float(seconds) if seconds else Budget.seconds,
        )
    except ValueError as exc:
        raise pytest.UsageError(f"logbench budget: {exc}") from None
    if budget.max_rounds < 1 or budget.seconds <= 0:
        raise pytest.UsageError(
            "--logbench-max-rounds and --logbench-budget-seconds must be "
            f"positive, got {budget.max_rounds} and {budget.seconds:g}"
        )
    return budget


def _reference_code(config: pytest.Config) -> BrokerCode | None:
    """The code of ``--logbench-compare-ref``'s revision, checked before anything runs."""
    revision = config.option.logbench_compare_ref
    if revision is None:
        return None
    if setting(config, "bootstrap") or setting(config, "broker") not in (None, "reference"):
        raise pytest.UsageError(
            "--logbench-compare-ref runs the reference broker of a revision beside the "
            "reference broker under test; it cannot pair with --logbench-bootstrap or "
            "--logbench-broker=kafka"
        )
    from pytest_logbench.revisions import RevisionError, broker_code

    try:
        return broker_code(revision)
    except RevisionError as exc:
        raise pytest.UsageError(f"--logbench-compare-ref: {exc}") from None


def _session_report(config: pytest.Config) -> SessionReport:
    """Validate the reporting options up front: a CI job should fail at start, not after an
    hour of measuring, when its baseline is missing or a threshold is mistyped."""
    option = config.option
    root = config.rootpath
    storage = Path(setting(config, "storage") or root / ".logbench")
    try:
        thresholds = tuple(parse_threshold(t) for t in option.logbench_compare_fail)
    except ValueError as exc:
        raise pytest.UsageError(f"--logbench-compare-fail: {exc}") from None
    if thresholds and option.logbench_compare is None and option.logbench_compare_ref is None:
        raise pytest.UsageError(
            "--logbench-compare-fail needs --logbench-compare[=NAME] or --logbench-compare-ref=REV"
        )
    compare_with, notes = None, []
    if option.logbench_compare is not None:
        name = option.logbench_compare or None
        compare_with = Baselines(storage).find(name)
        if compare_with is None and name is not None:
            saved = sorted(p.stem for p in Baselines(storage).directory.glob("*.json"))
            raise pytest.UsageError(
                f"--logbench-compare: no baseline {name!r} in {Baselines(storage).directory}; "
                f"saved: {', '.join(saved) if saved else 'none'}"
            )
        if compare_with is None:  # a first CI run: nothing saved yet, nothing to fail on
            notes.append(
                f"--logbench-compare: no saved baseline in "
                f"{Baselines(storage).directory}; nothing compared"
            )
    if option.logbench_plot and (reason := plots_unavailable()):
        raise pytest.UsageError(reason)
    return SessionReport(
        rootdir=root,
        storage=storage,
        json_path=Path(option.logbench_json) if option.logbench_json else None,
        save=option.logbench_save,
        compare_with=compare_with,
        reference=code.commit if (code := config.stash[CODE_KEY]) is not None else None,
        thresholds=thresholds,
        plot_dir=Path(option.logbench_plot) if option.logbench_plot else None,
        notes=notes,
    )


@pytest.hookimpl(trylast=True)
def pytest_logbench_launch_broker(
    log_dir: Path, options: BrokerOptions, work_dir: Path
) -> LocalBroker:
    """The default launcher: a reference broker subprocess, or Apache Kafka for
    ``kind="kafka"`` (skipped with the reason where Java or its jars are missing)."""
    if options.kind == "kafka":
        from pytest_logbench import kafka

        broker = kafka.KafkaBroker(log_dir, options, work_dir=work_dir)  # checks the options
        if (reason := kafka.unavailable_reason()) is not None:
            pytest.skip(reason)
        return broker
    return ReferenceBroker(log_dir, options, work_dir=work_dir)


BrokerFactory = Callable[..., Any]


@pytest.fixture
def broker_factory(request: pytest.FixtureRequest) -> Iterator[BrokerFactory]:
    """Start brokers with options; all are stopped and their data removed at teardown.

    ``broker_factory(copy=True, segment_bytes=1 << 20)`` takes ``BrokerOptions``' fields and
    any broker setting (``reference_broker.config.SETTINGS``); ``kind="kafka"`` starts Apache
    Kafka (default: ``--logbench-broker``). Against an external cluster it returns a view of
    the cluster: topic-level settings become topic configs of the test's ``topic`` names,
    settings that need this broker's own process skip the test. Settings a kind of broker
    cannot honour skip it too. The launch hook is called through the test's own conftests.
    """
    config = request.config
    bootstrap = setting(config, "bootstrap")
    hook = request.node.ihook  # only the conftests of the test's own directories
    # Under pytest's basetemp: if pytest itself is killed, its retention policy removes what
    # the teardown below could not.
    work_root = request.getfixturevalue("tmp_path_factory").mktemp("logbench")
    started: list[Any] = []
    budgets: list[Any] = []
    twins = _twins(request)

    def start(**changes: Any) -> Any:
        changes.setdefault("kind", setting(config, "broker") or "reference")
        options = BrokerOptions().with_(**changes)
        if bootstrap is not None:
            return external.external_broker(request, bootstrap, options)
        log_dir = work_root / f"broker{len(started)}"
        launched = options
        if (slowdown := config.option.logbench_fetch_slowdown) and options.kind == "reference":
            launched = options.with_(fetch_slowdown=slowdown)
        try:
            broker = hook.pytest_logbench_launch_broker(
                log_dir=log_dir, options=launched, work_dir=work_root
            )
        except ReferenceOnly as exc:  # e.g. copy=True on Kafka
            pytest.skip(str(exc))
        if options.memory_limit_bytes is not None:
            budgets.append(_attach_memory_budget(broker, options.memory_limit_bytes))
        if options.disk is not None:
            budgets.append(_attach_disk_throttle(broker, options.disk))
        broker.after_start.append(lambda b: hook.pytest_logbench_broker_ready(broker=b))
        if twins is not None:
            twins.launched(broker, options)
        started.append(broker)
        return broker.start()

    try:
        yield start
    finally:
        errors = []
        for broker in reversed(started):
            try:
                broker.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(f"{broker}: {exc}")
        for budget in budgets:
            budget.close()
        if not config.getoption("logbench_keep_data"):
            shutil.rmtree(work_root, ignore_errors=True)
        elif started:
            reporter = config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(
                    f"logbench: kept the brokers' data of {request.node.nodeid} in {work_root}"
                )
        if errors:
            raise RuntimeError("stopping brokers failed: " + "; ".join(errors))


@pytest.fixture
def topic_factory(request: pytest.FixtureRequest) -> TopicNames:
    """New topic names for this test: ``topic_factory()``, ``topic_factory("orders")``.
    Unique per test and run, so tests sharing a cluster never read each other's records."""
    return topics_of(request)


@pytest.fixture
def topic(topic_factory: TopicNames) -> str:
    """A topic name of this test's own (see ``topic_factory``)."""
    return topic_factory()


def _attach_memory_budget(broker: LocalBroker, limit_bytes: int) -> MemoryBudget:
    from pytest_logbench.memory import MemoryBudget, cgroup_support, reap_stale

    supported, reason = cgroup_support()
    if not supported:
        pytest.skip(f"memory budget unavailable: {reason}")
    reap_stale()  # budgets left by a run that was killed before its teardown
    budget = MemoryBudget(limit_bytes)
    broker.memory_budget = budget
    broker.after_start.append(lambda b: budget.add(b.pid))
    return budget


def _attach_disk_throttle(broker: LocalBroker, disk: Any) -> DiskThrottle:
    from pytest_logbench.disk import DiskThrottle, disk_support, profile, reap_stale

    profile(disk)  # a misspelt profile is an error, not a skip
    broker.log_dir.mkdir(parents=True, exist_ok=True)
    supported, reason = disk_support(broker.log_dir)
    if not supported:
        pytest.skip(f"disk profile unavailable: {reason}")
    reap_stale()  # throttles left by a run that was killed before its teardown
    throttle = DiskThrottle(disk, broker.log_dir)
    broker.disk_throttle = throttle
    broker.after_start.append(lambda b: throttle.add(b.pid))
    return throttle


@pytest.fixture(scope="session")
def _logbench_reference_twins(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReferenceTwins]:
    """The brokers of ``--logbench-compare-ref``'s revision, shared by the session's tests."""
    from pytest_logbench.revisions import ReferenceTwins

    code = request.config.stash[CODE_KEY]
    assert code is not None
    twins = ReferenceTwins(code, tmp_path_factory.mktemp("logbench-revision"))
    try:
        yield twins
    finally:
        twins.close()


def _twins(request: pytest.FixtureRequest) -> ReferenceTwins | None:
    if request.config.stash.get(CODE_KEY, None) is None:
        return None
    return request.getfixturevalue("_logbench_reference_twins")


@pytest.fixture
def broker(broker_factory: BrokerFactory) -> Broker:
    """A fresh broker in its own temporary log dir: the reference broker, or Apache Kafka
    under ``--logbench-broker=kafka`` (or the external cluster)."""
    return broker_factory()


@pytest.fixture
def producer(broker: Broker) -> Iterator[Producer]:
    """The harness producer bound to ``broker``: ``producer.produce(topic, total_bytes)``."""
    client = Producer(broker.bootstrap, **client_options(broker))
    yield client
    client.close()


@pytest.fixture
def consumer(broker: Broker) -> Iterator[Consumer]:
    """The harness consumer bound to ``broker``: ``consumer.consume(topic)`` counts bytes and
    batches without decoding records."""
    client = Consumer(broker.bootstrap, **client_options(broker))
    yield client
    client.close()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Against an external cluster, skip before any fixture or work a test that needs what
    this run does not provide (its ``logbench_local`` marker, fixtures and calls)."""
    bootstrap = setting(item.config, "bootstrap")
    if bootstrap is not None:
        provided = {n for n, key in external.PROVIDED_BY.items() if setting(item.config, key)}
        external.skip_unless_provided(item, bootstrap, provided)


@pytest.fixture
def page_cache() -> Any:
    """Page-cache controls: ``evict``, ``warm``, ``residency`` of paths or of a broker's
    segment files (``page_cache.residency(broker)``)."""
    from pytest_logbench.pagecache import PageCache

    return PageCache()


@pytest.fixture
def measure(request: pytest.FixtureRequest) -> Iterator[Meter]:
    """Measure workloads over rounds: ``measure(FetchWorkload(broker, "64 MiB"))`` or
    ``measure.compare(workload_a, workload_b)`` (interleaved). Each result is recorded for the
    session's reports and passed to the ``pytest_logbench_result`` hook; under
    ``--logbench-compare-fail`` rounds are added while the gate's verdict is undecided, within
    the budget (``--logbench-max-rounds``, ``--logbench-budget-seconds``)."""
    config = request.config
    nodeid = request.node.nodeid

    report = config.stash[REPORT_KEY]

    def sink(result: Any) -> None:
        report.add(result)
        config.hook.pytest_logbench_result(result=result, nodeid=nodeid)

    twins = _twins(request)
    meter = Meter(
        nodeid=nodeid,
        sink=sink,
        budget=config.stash[BUDGET_KEY],
        decide=report.decider(config.stash[BUDGET_KEY].max_rounds),
        reference=twins.twin if twins is not None else None,
    )
    try:
        yield meter
    finally:
        meter.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A test whose measurements regressed beyond a ``--logbench-compare-fail`` threshold
    fails as an item, with the verdict as its failure text."""
    report = yield
    if (
        report.skipped
        and call.excinfo is not None
        and call.excinfo.errisinstance(external.ExternalSkip)
    ):  # the test's own location in -rs, not the plugin line that raised
        path, line = item.reportinfo()[:2]
        report.longrepr = (str(path), (line or 0) + 1, f"Skipped: {call.excinfo.value.msg}")
    session_report = item.config.stash.get(REPORT_KEY, None)
    if (
        call.when == "call"
        and report.passed
        and session_report is not None
        and session_report.thresholds
        and session_report.gating
    ):
        regressions = session_report.regressions_of(item.nodeid)
        if regressions:
            report.outcome = "failed"
            report.longrepr = "\n".join(
                f"logbench gate: {c.key}: {c.metric} {c.describe()}" for c in regressions
            )
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the reports and fail the session on a regression beyond a threshold. A
    pytest-xdist worker writes nothing: it hands its results to the controller, whose report
    holds every worker's (``pytest_testnodedown``)."""
    report = session.config.stash.get(REPORT_KEY, None)
    if report is None:
        return
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[WORKER_RESULTS] = [r.to_dict() for r in report.results]
        return
    report.finish()
    if report.regressions and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist: a worker finished; its results join the controller's report."""
    report = node.config.stash.get(REPORT_KEY, None)
    output = getattr(node, "workeroutput", {}) or {}
    if report is not None:
        for data in output.get(WORKER_RESULTS, []):
            report.add(Result.from_dict(data))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The logbench section: one row per result, regressions, files written."""
    report = config.stash.get(REPORT_KEY, None)
    lines = report.lines() if report is not None else []
    if lines:
        terminalreporter.section("logbench")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Iterator[None]:
    """Turn ``LocalOnly`` from an external cluster into a skip with its reason."""
    try:
        return (yield)
    except LocalOnly as exc:
        external.skip(str(exc))
