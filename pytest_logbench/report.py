"""What a session's measurements become: a terminal table, JSON, saved baselines, a CI verdict
on regressions, and charts.

Design, after looking at pytest-benchmark and pytest-codspeed:

* Storage follows pytest-benchmark's conventions so its users feel at home: one JSON document
  per saved run under ``<storage>/<machine id>/<NAME>.json`` (machine id as pytest-benchmark
  spells it, e.g. ``Linux-CPython-3.11-64bit``), with ``machine_info`` and ``commit_info``;
  ``--logbench-compare`` without a name takes the latest save; ``metric:N%`` expressions.
* The verdict does not: pytest-benchmark fails when one statistic of the current run exceeds
  the same statistic of the saved run by the threshold, a single pair of numbers that a noisy
  machine crosses at random. Here the current rounds and the baseline rounds are two samples,
  and a regression is declared only when the *optimistic* confidence bound of their ratio
  (Mann-Whitney / Hodges-Lehmann, 99 %) is beyond the threshold, and the best rounds agree
  (noise only slows rounds down; see ``Change.regressed``), and a measurement that looks
  regressed is taken once more during the test and judged on the rounds of both (``Meter``):
  on this VM the medians of sessions seconds apart vary by ~15 % and barely correlate, so a
  slow session is mostly a passing neighbour. Comparing medians as pytest-benchmark does
  raised 14 false alarms in 40 unchanged runs at a 10 % threshold here. What no saved
  baseline can tell apart from a regression is a machine that stays slower for the whole
  run: compare on one machine class, and use ``measure.compare`` (interleaved) where both
  set-ups can run side by side.
* From pytest-codspeed, the idea that counting beats timing where it applies: ``syscalls``
  (perf-counted syscalls per GB) can be compared like the timed metrics and does not move
  with the neighbours' load.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import re
import struct
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_logbench.measure import Verdict
from pytest_logbench.results import METRICS, Result
from pytest_logbench.stats import (
    InsufficientRounds,
    RatioBounds,
    format_number,
    per_look,
    ratio_bounds,
)

FORMAT_VERSION = 1
# The gate's confidence is stricter than the assertions' 95 %: the rounds of one session share
# that session's machine state, so a baseline comparison has a variance the rounds do not show.
# Measured on a shared 2-core VM (40 unchanged and 40 halved sessions, each against a baseline
# saved just before): 95 % raised 1 false alarm, 99 % none; both caught every halving.
GATE_CONFIDENCE = 0.99
PACKAGES = ("logbench", "pytest", "pluggy", "psutil", "matplotlib", "trustme",
            "confluent-kafka", "kafka-python", "aiokafka")

# --- machine and commit ----------------------------------------------------------------------


def machine_id() -> str:
    """The storage subdirectory: results from other interpreters or systems are not mixed."""
    bits = struct.calcsize("P") * 8
    version = ".".join(platform.python_version_tuple()[:2])
    return f"{platform.system()}-{platform.python_implementation()}-{version}-{bits}bit"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """What a reader needs to judge whether two documents' figures are comparable."""
    import psutil

    packages = {}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            packages[name] = importlib.metadata.version(name)
    return {
        "node": platform.node(),
        "system": platform.system(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu": {"model": _cpu_model(), "logical_cores": os.cpu_count(),
                "physical_cores": psutil.cpu_count(logical=False)},
        "memory_bytes": psutil.virtual_memory().total,
        "python": {"implementation": platform.python_implementation(),
                   "version": platform.python_version()},
        "packages": packages,
    }


def commit_info(directory: Path) -> dict[str, Any]:
    """The git commit measured (id, branch, uncommitted changes), {} outside a repository."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True,
                              timeout=10, check=True)
        return done.stdout.strip()

    try:
        return {"id": git("rev-parse", "HEAD"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {}


def document(results: Sequence[Result], directory: Path,
             changes: Sequence[Change] = ()) -> dict[str, Any]:
    """The JSON document of a session: results with machine and commit info, and the gate's
    verdicts against the baseline."""
    return {
        "logbench_format": FORMAT_VERSION,
        "datetime": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine_info": machine_info(),
        "commit_info": commit_info(directory),
        "results": [r.to_dict() for r in results],
        "verdicts": [c.to_dict() for c in changes],
    }


# --- baselines and thresholds ----------------------------------------------------------------

_THRESHOLD = re.compile(r"^(?P<metric>[a-z]+):(?P<percent>\d+(?:\.\d+)?)%$")


@dataclass(frozen=True)
class Threshold:
    """``throughput:10%``: fail when ``metric`` got worse by more than ``fraction``."""

    metric: str
    fraction: float

    def __str__(self) -> str:
        return f"{self.metric}:{self.fraction * 100:g}%"


def parse_threshold(text: str) -> Threshold:
    """Parse ``METRIC:N%`` (metrics: throughput, records, cpu, syscalls)."""
    match = _THRESHOLD.match(text.strip())
    if match is None or match["metric"] not in METRICS:
        raise ValueError(f"cannot parse {text!r}: expected METRIC:N% with METRIC one of "
                         f"{', '.join(METRICS)}, e.g. throughput:10%")
    return Threshold(match["metric"], float(match["percent"]) / 100)


class Baselines:
    """Saved runs under ``root/<machine id>/<NAME>.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.directory = root / machine_id()

    def save(self, name: str, data: dict[str, Any]) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"baseline name {name!r}: use a plain file name")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{name}.json"
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    def find(self, name: str | None) -> Path | None:
        """The file for ``name`` (a saved name or a path to a JSON document), or the latest
        save when ``name`` is None; None when there is none."""
        if name is None:
            saved = sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
            return saved[-1] if saved else None
        for candidate in (self.directory / f"{name}.json", Path(name)):
            if candidate.is_file():
                return candidate
        return None


def load_results(path: Path) -> dict[str, Result]:
    """Results of a saved document by key."""
    data = json.loads(path.read_text())
    return {r.key: r for r in map(Result.from_dict, data.get("results", []))}


@dataclass(frozen=True)
class Change:
    """One metric of one result against its baseline, as ratios current/baseline: ``bounds``
    of the typical round at the gate's confidence, ``strict`` the same at the confidence left
    per look when the measurement may be extended (``Result.looks``), ``best`` of the best
    rounds (max, or min for costs). ``basis`` is the metric the ratio was taken on:
    ``relative`` (throughput as a fraction of the same round's control) where both runs
    measured a control, else the thresholded metric itself."""

    key: str
    metric: str
    current: Result
    baseline: Result | None
    bounds: RatioBounds | None
    threshold: Threshold | None
    best: float | None = None
    note: str = ""
    basis: str = ""
    strict: RatioBounds | None = None
    control: Change | None = None

    @property
    def regressed(self) -> bool:
        """Worse than the threshold by the bound most favourable to the current run, and in
        the best round too, unless (where a control was measured) the run kept pace with the
        machine's ceiling. Contention only ever slows rounds down, so the best round is the
        least contaminated view of the code; and a machine slower because it is busy slows the
        control too, while a broker that regressed does not."""
        if self.strict is None or self.threshold is None or self.best is None:
            return False
        if self.control is not None and self.control.excuses(self.threshold):
            return False
        limit = self.threshold.fraction
        if self.basis == "relative":  # the best round of a ratio is as often a slow control
            return self._beyond(self.strict, limit)
        best = RatioBounds(self.best, self.best, self.best, 1.0)
        return self._beyond(self.strict, limit) and self._beyond(best, limit)

    def excuses(self, threshold: Threshold) -> bool:
        """Whether this change relative to the control says the run kept pace with the
        machine: its estimate is within the threshold. A control only ever vetoes a verdict
        (a machine slowed by its neighbours slowed the control too); it never makes one, since
        the control's own noise would then decide."""
        if self.bounds is None:
            return False
        if METRICS[self.basis].higher_is_better:
            return self.bounds.estimate >= 1 - threshold.fraction
        return self.bounds.estimate <= 1 + threshold.fraction

    def _beyond(self, bounds: RatioBounds, limit: float) -> bool:
        if METRICS[self.basis].higher_is_better:
            return bounds.upper < 1 - limit
        return bounds.lower > 1 + limit

    @property
    def verdict(self) -> Verdict:
        """``regressed``; ``ok`` once the bound least favourable to the current run is within
        the threshold (absolute or relative to the control); else ``undecided``."""
        if self.regressed:
            return "regressed"
        if self.threshold is None or self.baseline is None:
            return "ok"
        if self._within() or (self.control is not None and self.control._within()):
            return "ok"
        return "undecided"

    def _within(self) -> bool:
        if self.bounds is None or self.threshold is None:
            return False
        limit = self.threshold.fraction
        if METRICS[self.basis].higher_is_better:
            return self.bounds.lower >= 1 - limit
        return self.bounds.upper <= 1 + limit

    def describe(self, *, verdict: bool = True) -> str:
        if self.bounds is None or self.best is None:
            return self.note
        b = self.bounds
        text = (f"{b.estimate - 1:+.0%} ({b.confidence:.0%}: {b.lower - 1:+.0%} to "
                f"{b.upper - 1:+.0%}; best round {self.best - 1:+.0%})")
        if self.basis != self.metric:
            text += f" of {self.basis}"
        if self.control is not None:
            text += f"; vs control {self.control.describe(verdict=False)}"
        if verdict and self.regressed:
            text += f" REGRESSION beyond {self.threshold}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The verdict for the JSON report: what changed, how sure, on which basis."""
        data: dict[str, Any] = {
            "key": self.key, "metric": self.metric, "basis": self.basis,
            "unit": METRICS[self.basis].unit if self.basis else "",
            "threshold": str(self.threshold) if self.threshold else None,
            "verdict": self.verdict if self.threshold else None,
            "regressed": self.regressed, "note": self.note,
            "rounds": len(self.current.rounds),
            "baseline_rounds": len(self.baseline.rounds) if self.baseline else 0,
        }
        if self.bounds is not None:
            data.update(change=self.bounds.estimate - 1, lower=self.bounds.lower - 1,
                        upper=self.bounds.upper - 1, confidence=self.bounds.confidence,
                        best_round_change=None if self.best is None else self.best - 1)
        if self.strict is not None:
            data["strict_confidence"] = self.strict.confidence
        if self.control is not None:
            data["control"] = self.control.to_dict()
        return data


def compare(results: Iterable[Result], baseline: dict[str, Result],
            thresholds: Sequence[Threshold], confidence: float = GATE_CONFIDENCE,
            ) -> list[Change]:
    """Changes of every result for throughput and every thresholded metric. Where both runs
    measured a control, throughput's change carries the change relative to it (``control``)."""
    limits = {t.metric: t for t in thresholds}
    metrics = ["throughput", *(m for m in limits if m != "throughput")]
    changes = []
    for result in results:
        old = baseline.get(result.key)
        for metric in metrics:
            change = _change(result, old, metric, metric, limits.get(metric), confidence)
            if change is None:
                continue
            if (metric == "throughput" and result.values("relative") and old is not None
                    and old.values("relative")):
                control = _change(result, old, metric, "relative", limits.get(metric),
                                  confidence)
                change = replace(change, control=control)
            changes.append(change)
    return changes


def _change(result: Result, old: Result | None, metric: str, basis: str,
            threshold: Threshold | None, confidence: float) -> Change | None:
    current = result.values(basis)
    if not current:
        return None
    previous = old.values(basis) if old is not None else []
    if not previous:
        note = "no baseline" if old is None else f"baseline has no {basis}"
        return Change(result.key, metric, result, old, None, threshold, note=note, basis=basis)
    try:
        bounds = ratio_bounds(current, previous, confidence)
    except InsufficientRounds as exc:
        return Change(result.key, metric, result, old, None, threshold,
                      note=f"undecided: {exc}", basis=basis)
    strict = None
    with contextlib.suppress(InsufficientRounds):
        strict = ratio_bounds(current, previous, per_look(confidence, result.looks))
    pick = max if METRICS[basis].higher_is_better else min
    return Change(result.key, metric, result, old, bounds, threshold,
                  best=pick(current) / pick(previous), basis=basis, strict=strict)


def comparable_machines(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between the machine a baseline was saved on and this one (CPU model,
    cores, kernel): figures from different machines compare the machines, not the code."""
    differences = []
    for label, path in (("CPU", ("cpu", "model")), ("logical cores", ("cpu", "logical_cores")),
                        ("kernel", ("kernel",))):
        old, new = saved, current
        for part in path:
            old = old.get(part, {}) if isinstance(old, dict) else None
            new = new.get(part, {}) if isinstance(new, dict) else None
        if old != new:
            differences.append(f"{label} {old!r} -> {new!r}")
    return differences


# --- the session's report --------------------------------------------------------------------


@dataclass
class SessionReport:
    """Collects a session's results and turns them into files, a verdict and a table."""

    rootdir: Path
    storage: Path
    json_path: Path | None = None
    save: str | None = None
    compare_with: Path | None = None
    thresholds: tuple[Threshold, ...] = ()
    plot_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Loaded up front (before a save can overwrite it) for ``decide`` during the tests.
        self.baseline = load_results(self.compare_with) if self.compare_with else {}
        if self.compare_with is not None:
            saved = json.loads(self.compare_with.read_text()).get("machine_info", {})
            differences = comparable_machines(saved, machine_info())
            if differences:
                self.notes.append(f"WARNING: the baseline {self.compare_with.name} was saved on "
                                  f"another machine ({'; '.join(differences)}): its figures "
                                  "compare the machines as much as the code")

    def add(self, result: Result) -> None:
        """Record a result; an extension of a recorded measurement replaces it."""
        for index, seen in enumerate(self.results):
            if result.uid and seen.uid == result.uid:
                self.results[index] = result
                return
        self.results.append(result)

    def decide(self, result: Result) -> Verdict:
        """The gate's verdict on ``result`` so far: ``Meter`` records more rounds while it is
        undecided (within its budget)."""
        verdicts = [c.verdict for c in compare([result], self.baseline, self.thresholds)
                    if c.threshold is not None]
        if "regressed" in verdicts:
            return "regressed"
        return "undecided" if "undecided" in verdicts else "ok"

    def regressions_of(self, nodeid: str) -> list[Change]:
        """The regressions of the results a test measured (its item fails with them)."""
        mine = [r for r in self.results if r.nodeid == nodeid]
        return [c for c in compare(mine, self.baseline, self.thresholds) if c.regressed]

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.regressed]

    def finish(self) -> None:
        """Compare, then write (the baseline was read before any save overwrote it)."""
        baseline = self.baseline
        if self.compare_with is not None:
            self.changes = compare(self.results, baseline, self.thresholds)
        if not self.results:
            return
        data = document(self.results, self.rootdir, self.changes)
        if self.json_path is not None:
            self.json_path.parent.mkdir(parents=True, exist_ok=True)
            self.json_path.write_text(json.dumps(data, indent=2) + "\n")
            self.written.append(self.json_path)
        if self.save is not None:
            self.written.append(Baselines(self.storage).save(self.save, data))
        if self.plot_dir is not None:
            self.written += write_plots(self.plot_dir, self.results, baseline)

    def lines(self) -> list[str]:
        """The terminal summary: one row per result (and thresholded metric)."""
        if not self.results:
            return list(self.notes)
        rows = [("result", "metric", "median", "IQR", "rounds", "vs baseline")]
        by_key = {(c.key, c.metric): c for c in self.changes}
        metrics = ["throughput", *(t.metric for t in self.thresholds if t.metric != "throughput")]
        for result in self.results:
            for metric in metrics:
                values = result.values(metric)
                if not values:
                    continue
                stats, unit = result.stats(metric), METRICS[metric]
                change = by_key.get((result.key, metric))
                rows.append((_shorten(result.key, 64), metric, unit.format(stats.median),
                             format_number(stats.iqr), str(stats.n),
                             change.describe() if change else "-"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        out = list(self.notes)
        if self.compare_with is not None:
            out.append(f"baseline: {self.compare_with}")
        for row in rows:
            out.append("  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]),
                                  *(cell.rjust(w) for cell, w in zip(row[2:5], widths[2:5],
                                                                     strict=True)),
                                  row[5]]).rstrip())
        for change in self.regressions:
            out.append(f"REGRESSION {change.key}: {change.metric} {change.describe()}; "
                       f"baseline median {METRICS[change.metric].format(_median(change))}")
        out += [f"wrote {path}" for path in self.written]
        return out


def _median(change: Change) -> float:
    assert change.baseline is not None
    return change.baseline.stats(change.metric).median


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


# --- plots -----------------------------------------------------------------------------------


def plots_unavailable() -> str | None:
    """Why ``--logbench-plot`` cannot work here (matplotlib missing), None when it can."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return ("--logbench-plot needs matplotlib, an optional extra: "
                "pip install 'logbench[plot]' (or pip install matplotlib)")
    return None


def write_plots(directory: Path, results: Sequence[Result],
                baseline: dict[str, Result]) -> list[Path]:
    """PNG and SVG charts: throughput per result against its baseline, and for results
    measured with ``residency=True`` the page-cache residency of each segment over time."""
    directory.mkdir(parents=True, exist_ok=True)
    figures = [("throughput", _throughput_figure(results, baseline))]
    for index, result in enumerate(r for r in results if r.residency):
        slug = re.sub(r"[^A-Za-z0-9]+", "-", result.key).strip("-")[-60:]
        figures.append((f"residency-{index}-{slug}", _residency_figure(result)))
    written = []
    for stem, figure in figures:
        for extension in ("png", "svg"):
            path = directory / f"{stem}.{extension}"
            figure.savefig(path, bbox_inches="tight")
            written.append(path)
    return written


def _throughput_figure(results: Sequence[Result], baseline: dict[str, Result]) -> Any:
    # Figure without pyplot: no global backend or state is touched in the user's process.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 1.2 + 0.45 * len(results)))
    axes = figure.add_subplot()
    labels = [_shorten(r.key, 70) for r in results]
    stats = [r.stats("throughput") for r in results]
    positions = list(range(len(results)))
    axes.barh(positions, [s.median for s in stats], height=0.6, color="#4c72b0",
              xerr=[[s.median - s.q1 for s in stats], [s.q3 - s.median for s in stats]],
              label="median (IQR)")
    old = [(i, baseline[r.key].stats("throughput").median) for i, r in enumerate(results)
           if r.key in baseline and baseline[r.key].values("throughput")]
    if old:
        axes.scatter([v for _, v in old], [i for i, _ in old], marker="D", color="black",
                     zorder=3, label="baseline median")
    axes.set_yticks(positions, labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("throughput (MB/s)")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return figure


def _residency_figure(result: Result) -> Any:
    from matplotlib.figure import Figure

    segments = sorted({name for sample in result.residency for name in sample.segments})
    matrix = [[sample.segments.get(name, 0.0) for sample in result.residency]
              for name in segments]
    figure = Figure(figsize=(9, 1.5 + 0.3 * len(segments)))
    axes = figure.add_subplot()
    image = axes.imshow(matrix, aspect="auto", interpolation="nearest", vmin=0.0, vmax=1.0,
                        cmap="viridis")
    axes.set_yticks(range(len(segments)), segments, fontsize=7)
    axes.set_xticks(range(len(result.residency)),
                    [f"{s.seconds:.1f}s\nr{s.round} {s.phase}" for s in result.residency],
                    fontsize=6)
    axes.set_title(f"page-cache residency per segment: {_shorten(result.key, 80)}", fontsize=9)
    figure.colorbar(image, ax=axes, label="resident fraction")
    return figure
