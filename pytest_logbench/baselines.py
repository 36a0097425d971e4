"""Saved baselines and the verdicts against them: what machine measured, where results are
stored, thresholds, and the change of each result with its confidence bounds.

Design, after looking at pytest-benchmark and pytest-codspeed:

* Storage follows pytest-benchmark's conventions so its users feel at home: one JSON document
  per saved run under ``<storage>/<machine id>/<NAME>.json`` (machine id as pytest-benchmark
  spells it, e.g. ``Linux-CPython-3.11-64bit``), with ``machine_info`` and ``commit_info``;
  ``--logbench-compare`` without a name takes the latest save; ``metric:N%`` expressions.
* The verdict does not: pytest-benchmark fails when one statistic of the current run exceeds
  the same statistic of the saved run by the threshold, a single pair of numbers that a noisy
  machine crosses at random (14 false alarms in 40 unchanged runs at 10 % here). Here the
  current rounds and the baseline rounds are two samples; a regression is declared only when
  the *optimistic* confidence bound of their ratio (Mann-Whitney / Hodges-Lehmann, 99 %, the
  confidence spread over the looks of a measurement that grew) is beyond the threshold and
  the best rounds agree, and not when the run kept pace with its control (the machine's own
  ceiling measured in the same rounds: a busy machine slows both).
* A run measured beside the broker of a reference revision (``--logbench-compare-ref``) needs
  no saved figures for throughput and CPU: each round compares the two brokers under the same
  load, so the signed-rank bounds of the per-round ratios decide (``paired_change``).
* From pytest-codspeed, the idea that counting beats timing where it applies: ``syscalls``
  (perf-counted syscalls per GB) can be compared like the timed metrics and does not move
  with the neighbours' load.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import re
import struct
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytest_logbench.measure import Verdict
from pytest_logbench.results import METRICS, Result
from pytest_logbench.stats import (
    InsufficientRounds,
    RatioBounds,
    paired_ratio_bounds,
    per_look,
    ratio_bounds,
)

# The gate's confidence is stricter than the assertions' 95 %: the rounds of one session share
# that session's machine state, so a baseline comparison has a variance the rounds do not show.
# Measured on a shared 2-core VM (40 unchanged and 40 halved sessions, each against a baseline
# saved just before): 95 % raised 1 false alarm, 99 % none; both caught every halving.
GATE_CONFIDENCE = 0.99


PACKAGES = (
    "logbench",
    "pytest",
    "pluggy",
    "psutil",
    "matplotlib",
    "trustme",
    "confluent-kafka",
    "kafka-python",
    "aiokafka",
)


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
        "cpu": {
            "model": _cpu_model(),
            "logical_cores": os.cpu_count(),
            "physical_cores": psutil.cpu_count(logical=False),
        },
        "memory_bytes": psutil.virtual_memory().total,
        "python": {
            "implementation": platform.python_implementation(),
            "version": platform.python_version(),
        },
        "packages": packages,
    }


def commit_info(directory: Path) -> dict[str, Any]:
    """The git commit measured (id, branch, uncommitted changes), {} outside a repository."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=directory, capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        return {
            "id": git("rev-parse", "HEAD"),
            "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        }
    except (OSError, subprocess.SubprocessError):
        return {}


_THRESHOLD = re.compile(r"^(?P<metric>[a-z][a-z0-9_]*):(?P<percent>\d+(?:\.\d+)?)%$")


@dataclass(frozen=True)
class Threshold:
    """``throughput:10%``: fail when ``metric`` got worse by more than ``fraction``."""

    metric: str
    fraction: float

    def __str__(self) -> str:
        return f"{self.metric}:{self.fraction * 100:g}%"


def parse_threshold(text: str) -> Threshold:
    """Parse ``METRIC:N%`` (any of ``METRICS``: throughput, records, cpu, syscalls,
    latency_p99 ...); each metric knows whether higher is worse."""
    match = _THRESHOLD.match(text.strip())
    if match is None or match["metric"] not in METRICS:
        raise ValueError(
            f"cannot parse {text!r}: expected METRIC:N% with METRIC one of "
            f"{', '.join(METRICS)}, e.g. throughput:10%"
        )
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
    measured a control, else the thresholded metric itself. ``reference`` is the commit whose
    broker the run was measured beside (``paired_change``): the ratios are then the change."""

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
    reference: str | None = None

    @property
    def regressed(self) -> bool:
        """Worse than the threshold by the bound most favourable to the current run, and in
        the best round too, unless (where a control was measured) the run kept pace with the
        machine's ceiling. Contention only ever slows rounds down, so the best round is the
        least contaminated view of the code; and a machine slower because it is busy slows the
        control too, while a broker that regressed does not. Beside a reference revision the
        per-round ratios alone decide: load hits both brokers of a round alike."""
        if self.strict is None or self.threshold is None:
            return False
        if self.reference is not None:
            return self._beyond(self.strict, self.threshold.fraction)
        if self.best is None:
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
        the threshold (absolute or relative to the control), or when the baseline lacks the
        metric (saved before it was measured: more rounds cannot decide); else
        ``undecided``."""
        if self.regressed:
            return "regressed"
        if self.threshold is None:
            return "ok"
        if self.reference is None and (
            self.baseline is None or not self.baseline.values(self.basis)
        ):
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
        if self.bounds is None or (self.best is None and self.reference is None):
            return self.note
        b = self.bounds
        text = (
            f"{b.estimate - 1:+.0%} ({b.confidence:.0%}: {b.lower - 1:+.0%} to {b.upper - 1:+.0%}"
        )
        text += ")" if self.best is None else f"; best round {self.best - 1:+.0%})"
        if self.reference is not None:
            text += f" vs the broker of {self.reference[:12]} in the same rounds"
        elif self.basis != self.metric:
            text += f" of {self.basis}"
        if self.control is not None:
            text += f"; vs control {self.control.describe(verdict=False)}"
        if verdict and self.regressed:
            text += f" REGRESSION beyond {self.threshold}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The verdict for the JSON report: what changed, how sure, on which basis."""
        data: dict[str, Any] = {
            "key": self.key,
            "metric": self.metric,
            "basis": self.basis,
            "unit": METRICS[self.basis].unit if self.basis else "",
            "threshold": str(self.threshold) if self.threshold else None,
            "verdict": self.verdict if self.threshold else None,
            "regressed": self.regressed,
            "note": self.note,
            "rounds": len(self.current.rounds),
            "baseline_rounds": len(self.baseline.rounds) if self.baseline else 0,
            "reference": self.reference,
        }
        if self.bounds is not None:
            data.update(
                change=self.bounds.estimate - 1,
                lower=self.bounds.lower - 1,
                upper=self.bounds.upper - 1,
                confidence=self.bounds.confidence,
                best_round_change=None if self.best is None else self.best - 1,
            )
        if self.strict is not None:
            data["strict_confidence"] = self.strict.confidence
        if self.control is not None:
            data["control"] = self.control.to_dict()
        return data


def compare(
    results: Iterable[Result],
    baseline: dict[str, Result],
    thresholds: Sequence[Threshold],
    confidence: float = GATE_CONFIDENCE,
) -> list[Change]:
    """Changes of every result for throughput and every thresholded metric. Where both runs
    measured a control, throughput's change carries the change relative to it (``control``);
    a run measured beside a reference revision is judged on its own rounds for the metrics
    that have a per-round ratio (``paired_change``)."""
    limits = {t.metric: t for t in thresholds}
    metrics = ["throughput", *(m for m in limits if m != "throughput")]
    changes = []
    for result in results:
        old = baseline.get(result.key)
        for metric in metrics:
            paired = paired_change(result, metric, limits.get(metric), confidence)
            if paired is not None:
                changes.append(paired)
                continue
            change = _change(result, old, metric, metric, limits.get(metric), confidence)
            if change is None:
                continue
            if (
                metric == "throughput"
                and result.values("relative")
                and old is not None
                and old.values("relative")
            ):
                control = _change(result, old, metric, "relative", limits.get(metric), confidence)
                change = replace(change, control=control)
            changes.append(change)
    return changes


# The metrics a run beside a reference revision can judge round by round, and their ratios.
PAIRED = {"throughput": "relative", "cpu": "relative_cpu"}


def paired_change(
    result: Result, metric: str, threshold: Threshold | None, confidence: float = GATE_CONFIDENCE
) -> Change | None:
    """``metric``'s change in a run measured beside the broker of a reference revision: the
    typical per-round ratio (this broker / the revision's) with signed-rank bounds. None
    when the run had no such control or ``metric`` has no per-round ratio."""
    control = result.workload.get("control") or {}
    basis = PAIRED.get(metric)
    if control.get("kind") != "reference" or basis is None or not result.values(basis):
        return None
    values = result.values(basis)
    commit = control["commit"]
    try:
        bounds = paired_ratio_bounds(values, confidence)
    except InsufficientRounds as exc:
        return Change(
            result.key,
            metric,
            result,
            None,
            None,
            threshold,
            note=f"undecided: {exc}",
            basis=basis,
            reference=commit,
        )
    strict = None
    with contextlib.suppress(InsufficientRounds):
        strict = paired_ratio_bounds(values, per_look(confidence, result.looks))
    return Change(
        result.key,
        metric,
        result,
        None,
        bounds,
        threshold,
        basis=basis,
        strict=strict,
        reference=commit,
    )


def _change(
    result: Result,
    old: Result | None,
    metric: str,
    basis: str,
    threshold: Threshold | None,
    confidence: float,
) -> Change | None:
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
        return Change(
            result.key, metric, result, old, None, threshold, note=f"undecided: {exc}", basis=basis
        )
    strict = None
    with contextlib.suppress(InsufficientRounds):
        strict = ratio_bounds(current, previous, per_look(confidence, result.looks))
    pick = max if METRICS[basis].higher_is_better else min
    return Change(
        result.key,
        metric,
        result,
        old,
        bounds,
        threshold,
        best=pick(current) / pick(previous),
        basis=basis,
        strict=strict,
    )


def comparable_machines(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between the machine a baseline was saved on and this one (CPU model,
    cores, kernel): figures from different machines compare the machines, not the code."""
    differences = []
    for label, path in (
        ("CPU", ("cpu", "model")),
        ("logical cores", ("cpu", "logical_cores")),
        ("kernel", ("kernel",)),
    ):
        old, new = saved, current
        for part in path:
            old = old.get(part, {}) if isinstance(old, dict) else None
            new = new.get(part, {}) if isinstance(new, dict) else None
        if old != new:
            differences.append(f"{label} {old!r} -> {new!r}")
    return differences
