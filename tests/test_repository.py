"""Checks on the repository itself: lint, and CI running exactly what the README says."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    return re.findall(r"```\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_opens_with_the_main_job_and_the_test_command():
    first, second = _readme_commands()[:2]
    assert "pytest examples" in first
    assert second.endswith("-m pytest")


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = _readme_commands()[1]
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the 'test' extra)")
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run([ruff, *command, str(ROOT)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _readme_python_files() -> dict[str, str]:
    """The runnable examples of the README and docs/: python blocks whose first line names
    their file."""
    blocks = []
    for doc in DOCS:
        blocks += re.findall(r"```python\n# (\S+\.py)\n(.*?)```", doc.read_text(), re.DOTALL)
    names = [name for name, _ in blocks]
    assert len(names) == len(set(names)), f"two examples share a file name: {sorted(names)}"
    return dict(blocks)


def test_readme_has_runnable_examples_for_every_fixture():
    text = "\n".join(_readme_python_files().values())
    fixtures = ("broker", "broker_factory", "page_cache", "producer", "consumer", "measure")
    for fixture in (*fixtures, "topic", "topic_factory"):
        assert re.search(rf"def test_\w+\([^)]*\b{fixture}\b", text), fixture


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(n for n in _readme_python_files() if n != "conftest.py"))
def test_readme_example_runs(pytester, name):
    files = _readme_python_files()
    pytester.makepyfile(**{name.removesuffix(".py"): files[name]})
    if name == "test_first.py":  # the conftest example changes every broker: check it too
        pytester.makeconftest(files["conftest.py"])
    # A subprocess: in-process runs re-import modules, which confuses cryptography (trustme).
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert result.ret == 0 and outcomes.get("passed", 0) >= 1, outcomes


# Records every test that skipped only after its body began (it did work first).
LATE_SKIPS = """
from pathlib import Path


def pytest_runtest_logreport(report):
    if report.skipped and report.when == "call":
        with Path(__file__).with_name("late-skips.txt").open("a") as f:
            f.write(report.nodeid + "\\n")
"""


@pytest.mark.slow
@pytest.mark.parametrize("provided", [(), ("log_dir", "metrics_url")], ids=["address", "all"])
def test_the_docs_examples_run_unchanged_against_an_external_broker(pytester, tmp_path, provided):
    """Every example passes, or skips before its body runs, at its own location; the log dir
    and the metrics endpoint, when given, let more of them run."""
    from pytest_logbench.brokers import ReferenceBroker

    examples = {n.removesuffix(".py"): t for n, t in _readme_python_files().items()}
    del examples["conftest"]  # a launch hook: external runs launch nothing
    pytester.makeconftest(LATE_SKIPS)
    pytester.makepyfile(**examples)
    broker = ReferenceBroker(tmp_path / "external").start()
    try:
        args = ["--logbench-bootstrap", broker.bootstrap, "-rs", "-p", "no:cacheprovider"]
        if provided:
            args += ["--logbench-log-dir", str(broker.log_dir)]
            args += ["--logbench-metrics-url", broker.metrics_url]
        result = pytester.runpytest_subprocess(*args)
    finally:
        broker.stop()
    outcomes = result.parseoutcomes()
    assert result.ret == 0 and outcomes.get("passed", 0) >= 1, outcomes
    late = pytester.path / "late-skips.txt"
    assert not late.exists(), f"skipped after doing work: {late.read_text()}"
    skips = [line for line in result.outlines if line.startswith("SKIPPED")]
    assert skips and not [line for line in skips if "pytest_logbench" in line], skips
    if provided:  # the README's first test needs the counters, the page-cache one the log dir
        assert not [line for line in skips if "test_first" in line or "test_page_cache.py" in line]


@pytest.mark.slow
def test_the_readme_examples_run_on_apache_kafka(pytester):
    """`pytest --logbench-broker=kafka` runs the README's examples with no failure: each
    passes, or skips with its reason (counters, the copy path: the reference broker's own)."""
    from pytest_logbench import kafka

    if (reason := kafka.unavailable_reason()) is not None:
        pytest.skip(reason)
    examples = {n.removesuffix(".py"): t for n, t in _readme_python_files().items()}
    del examples["conftest"]  # its launch hook starts reference brokers: not a Kafka run
    pytester.makepyfile(**examples)
    # The LogStateMachine example runs 60 examples (minutes on Kafka): the conformance step of
    # .ci/run runs the machine on Kafka already.
    args = (
        "--logbench-broker=kafka",
        "-rs",
        "-p",
        "no:cacheprovider",
        "-k",
        "not repeated_produce",
    )
    result = pytester.runpytest_subprocess(*args)
    outcomes = result.parseoutcomes()
    assert result.ret == 0 and outcomes.get("passed", 0) >= 1, outcomes


def test_the_docs_document_every_metric():
    from reference_broker.metrics import METRIC_HELP

    docs = "\n".join(doc.read_text() for doc in DOCS)
    for name in METRIC_HELP:
        assert f"`{name}" in docs, name


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) < 250


def test_the_public_api_is_reachable_from_the_package():
    import pytest_logbench

    for name in pytest_logbench.__all__:
        assert getattr(pytest_logbench, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = pytest_logbench.nothing
