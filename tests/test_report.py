"""report.py and the plugin's reporting options: JSON, baselines, the CI verdict on
regressions (it must fail on an injected 2x slowdown and stay quiet on an unchanged broker),
terminal summary and plots."""

from __future__ import annotations

import json
import sys

import pytest

from pytest_logbench.baselines import (
    Baselines,
    Change,
    Threshold,
    comparable_machines,
    compare,
    machine_id,
    parse_threshold,
)
from pytest_logbench.results import Result, Round
from pytest_logbench.stats import RatioBounds

pytest_plugins = ["pytester"]


def _result(name, mb_per_s, nodeid="t.py::test"):
    return Result(
        name,
        tuple(Round(bytes=10**8, records=10, seconds=100 / v) for v in mb_per_s),
        nodeid=nodeid,
    )


def test_parse_threshold():
    assert parse_threshold("throughput:10%") == Threshold("throughput", 0.10)
    assert parse_threshold(" cpu:2.5% ") == Threshold("cpu", 0.025)
    assert str(parse_threshold("syscalls:5%")) == "syscalls:5%"
    for bad in ("throughput", "throughput:10", "speed:10%", "throughput:-5%"):
        with pytest.raises(ValueError, match="METRIC:N%"):
            parse_threshold(bad)


def test_a_regression_needs_the_optimistic_bound_beyond_the_threshold():
    def change(metric, lower, upper, best):
        bounds = RatioBounds(1, lower, upper, 0.95)
        return Change(
            "k",
            metric,
            _result("r", [1]),
            None,
            bounds,
            Threshold(metric, 0.10),
            best,
            basis=metric,
            strict=bounds,
        )

    assert change("throughput", 0.5, 0.89, 0.6).regressed  # even the best case lost > 10 %
    assert not change("throughput", 0.5, 0.95, 0.6).regressed  # could be 5 % slower: noise
    assert not change("throughput", 0.5, 0.6, 0.95).regressed  # best rounds as fast as ever
    assert change("cpu", 1.11, 1.5, 1.2).regressed  # costs grew by > 10 % in the best case
    assert not change("cpu", 1.05, 1.5, 1.2).regressed
    assert not change("cpu", 1.2, 1.5, 1.05).regressed
    described = change("throughput", 0.5, 0.6, 0.55).describe()
    assert described == "+0% (95%: -50% to -40%; best round -45%) REGRESSION beyond throughput:10%"


def test_compare_flags_a_halving_but_not_noise():
    baseline = {
        r.key: r
        for r in [
            _result("fetch", [100, 110, 95, 105, 102]),
            _result("produce", [50, 52, 49, 51, 50]),
        ]
    }
    current = [
        _result("fetch", [52, 49, 55, 51, 50]),
        _result("produce", [49, 53, 50, 48, 52]),
        _result("new", [10, 11, 12]),
    ]
    changes = {c.key: c for c in compare(current, baseline, [Threshold("throughput", 0.10)])}
    assert changes["t.py::test (fetch)"].regressed
    assert not changes["t.py::test (produce)"].regressed
    assert changes["t.py::test (new)"].describe() == "no baseline"
    few = compare([_result("fetch", [50])], baseline, [Threshold("throughput", 0.1)])
    assert few[0].describe().startswith("undecided:") and not few[0].regressed


def test_baselines_save_and_find(tmp_path):
    store = Baselines(tmp_path)
    first = store.save("first", {"results": []})
    second = store.save("second", {"results": []})
    assert first.parent == tmp_path / machine_id()
    assert store.find("first") == first and store.find(str(second)) == second
    assert store.find(None) == second  # the latest save
    assert store.find("missing") is None
    with pytest.raises(ValueError, match="plain file name"):
        store.save("../escape", {})


# --- through pytest, as a CI job runs it -----------------------------------------------------

SCRIPTED = """
import time
from pytest_logbench.client import Transfer

class Sleeper:
    '''A run takes 100 ms times --factor (for the first --slow-runs runs; all by default):
    a stand-in for a broker whose speed we control, long enough that a loaded machine's late
    wake-ups stay far below the 10 % threshold.'''
    name = "sleeper"
    def __init__(self, factor, slow_runs):
        self.broker, self.factor, self.slow_runs = object(), factor, slow_runs
    def describe(self):
        return {"kind": "sleeper", "factor": self.factor}
    def setup(self): pass
    def prepare(self): pass
    def close(self): pass
    def run(self):
        self.slow_runs -= 1
        time.sleep(0.1 * (self.factor if self.slow_runs >= 0 else 1))
        return Transfer(bytes=10**7, records=100, batches=1, requests=1, seconds=0)

def test_sleeper(measure, request):
    option = request.config.getoption
    measure(Sleeper(option("factor"), option("slow_runs")), rounds=5, warmup=0, syscalls=False)
"""

CONFTEST = """
import json, os

def pytest_addoption(parser):
    parser.addoption("--factor", type=float, default=1.0)
    parser.addoption("--slowdown", type=float, default=1.0)
    parser.addoption("--slow-runs", type=int, default=10**6)

def pytest_logbench_result(result, nodeid):
    with open(os.path.join(os.path.dirname(__file__), "sink.jsonl"), "a") as sink:
        sink.write(json.dumps({"nodeid": nodeid, "name": result.name}) + "\\n")
"""


@pytest.fixture
def scripted(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_scripted=SCRIPTED)
    return pytester


def test_json_summary_and_result_hook(scripted):
    result = scripted.runpytest("-p", "no:cacheprovider", "--logbench-json", "out/run.json")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*= logbench =*",
            "result*metric*median*IQR*rounds*vs baseline",
            "test_scripted.py::test_sleeper (sleeper)*throughput*MB/s*5*-",
            "wrote out/run.json",
        ]
    )
    data = json.loads((scripted.path / "out" / "run.json").read_text())
    machine = data["machine_info"]
    assert {"cpu", "kernel", "python", "packages"} <= set(machine)
    assert machine["cpu"]["logical_cores"] >= 1 and "pytest" in machine["packages"]
    [saved] = data["results"]
    assert saved["nodeid"] == "test_scripted.py::test_sleeper" and len(saved["rounds"]) == 5
    assert {"median", "min", "max", "q1", "q3", "stdev"} <= set(saved["stats"]["throughput"])
    sink = (scripted.path / "sink.jsonl").read_text().splitlines()
    assert json.loads(sink[0]) == {"nodeid": "test_scripted.py::test_sleeper", "name": "sleeper"}


def test_compare_fails_on_a_slowdown_and_only_then(scripted):
    saved = scripted.runpytest("-p", "no:cacheprovider", "--logbench-save", "base")
    assert saved.ret == pytest.ExitCode.OK
    gate = [
        "-p",
        "no:cacheprovider",
        "--logbench-compare=base",
        "--logbench-compare-fail=throughput:10%",
    ]
    slow = scripted.runpytest(*gate, "--factor", "2", "--logbench-json", "gate.json")
    assert slow.ret == pytest.ExitCode.TESTS_FAILED
    slow.stdout.fnmatch_lines(
        [
            "*REGRESSION test_scripted.py::test_sleeper (sleeper): "
            "throughput -*% (99%: * REGRESSION beyond throughput:10%*"
        ]
    )
    # The gate fails the test that measured, as an item, with the verdict as its failure.
    slow.stdout.fnmatch_lines(
        ["FAILED test_scripted.py::test_sleeper - logbench gate: *", "*1 failed*"]
    )
    [verdict] = json.loads((scripted.path / "gate.json").read_text())["verdicts"]
    assert verdict["regressed"] and verdict["verdict"] == "regressed"
    assert verdict["threshold"] == "throughput:10%" and verdict["unit"] == "MB/s"
    assert verdict["upper"] < -0.1 and verdict["confidence"] == 0.99
    assert verdict["baseline_rounds"] == 15  # a saved baseline gets more rounds than asked
    for _ in range(3):
        same = scripted.runpytest(*gate)
        assert same.ret == pytest.ExitCode.OK, same.stdout.str()
        assert "REGRESSION" not in same.stdout.str()
    faster = scripted.runpytest(*gate, "--factor", "0.5")
    assert faster.ret == pytest.ExitCode.OK


def test_a_slow_spell_that_is_gone_in_later_rounds_passes(scripted):
    assert scripted.runpytest("-p", "no:cacheprovider", "--logbench-save", "base").ret == 0
    spell = scripted.runpytest(
        "-p",
        "no:cacheprovider",
        "--logbench-compare=base",
        "--logbench-compare-fail=throughput:10%",
        "--factor",
        "2",
        "--slow-runs",
        "2",
        "--logbench-max-rounds",
        "15",
    )
    assert spell.ret == pytest.ExitCode.OK, spell.stdout.str()
    # Two of the first five rounds are halved: undecided; the verdict waits for more rounds.
    spell.stdout.fnmatch_lines(["*sleeper*throughput*  1[05]  *"])


def test_compare_without_a_name_uses_the_latest_save(scripted):
    first = scripted.runpytest(
        "-p", "no:cacheprovider", "--logbench-compare", "--logbench-compare-fail=throughput:10%"
    )
    assert first.ret == pytest.ExitCode.OK  # a first CI run has nothing to compare with
    first.stdout.fnmatch_lines(["--logbench-compare: no saved baseline in *; nothing compared"])
    assert scripted.runpytest("-p", "no:cacheprovider", "--logbench-save", "a").ret == 0
    result = scripted.runpytest("-p", "no:cacheprovider", "--logbench-compare")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["baseline: *a.json", "*sleeper*(99%: *"])


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--logbench-compare-fail=throughput:10%"], "needs --logbench-compare"),
        (["--logbench-compare=x", "--logbench-compare-fail=fast:10%"], "METRIC:N%"),
        (["--logbench-compare=nosuch"], "no baseline 'nosuch' in"),
    ],
)
def test_reporting_options_fail_early(pytester, args, error):
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{error}*"])


def test_plot_option_without_matplotlib_says_how_to_get_it(pytester, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = pytester.runpytest("--logbench-plot", "plots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--logbench-plot needs matplotlib*pip install 'logbench[[]plot]'*"]
    )


def test_plots_are_written(scripted):
    pytest.importorskip("matplotlib")
    assert scripted.runpytest("-p", "no:cacheprovider", "--logbench-save", "base").ret == 0
    result = scripted.runpytest(
        "-p", "no:cacheprovider", "--logbench-compare=base", "--logbench-plot", "plots"
    )
    assert result.ret == pytest.ExitCode.OK
    for name in ("throughput.png", "throughput.svg"):
        assert (scripted.path / "plots" / name).stat().st_size > 1000


def test_a_missing_baseline_names_those_saved(scripted):
    assert scripted.runpytest("-p", "no:cacheprovider", "--logbench-save", "main").ret == 0
    result = scripted.runpytest("-p", "no:cacheprovider", "--logbench-compare=mian")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no baseline 'mian' in *; saved: main"])


def test_a_baseline_from_another_machine_warns(scripted):
    assert scripted.runpytest("-p", "no:cacheprovider", "--logbench-save", "base").ret == 0
    [saved] = (scripted.path / ".logbench").glob("*/base.json")
    data = json.loads(saved.read_text())
    data["machine_info"]["cpu"]["model"] = "a faster machine"
    saved.write_text(json.dumps(data))
    result = scripted.runpytest("-p", "no:cacheprovider", "--logbench-compare=base")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*WARNING: the baseline base.json was saved on another machine "
            "(CPU 'a faster machine' -> *"
        ]
    )
    assert comparable_machines(data["machine_info"], data["machine_info"]) == []


def test_results_from_xdist_workers_reach_the_report(scripted):
    scripted.makepyfile(test_second=SCRIPTED.replace("def test_sleeper", "def test_other"))
    result = scripted.runpytest("-p", "no:cacheprovider", "-n", "2", "--logbench-json", "x.json")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["*= logbench =*"])
    data = json.loads((scripted.path / "x.json").read_text())
    assert sorted(r["nodeid"] for r in data["results"]) == [
        "test_scripted.py::test_sleeper",
        "test_second.py::test_other",
    ]
