"""What a session's measurements become: a terminal table, a JSON document, a saved baseline,
the gate's verdicts (``baselines.py``) and charts (``plots.py``)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_logbench.baselines import (
    Baselines,
    Change,
    Threshold,
    commit_info,
    comparable_machines,
    compare,
    load_results,
    machine_info,
)
from pytest_logbench.measure import Verdict
from pytest_logbench.plots import write_plots
from pytest_logbench.results import METRICS, Result
from pytest_logbench.stats import format_number
from pytest_logbench.tables import shorten

FORMAT_VERSION = 1
SAVED_ROUNDS = 15


def document(
    results: Sequence[Result], directory: Path, changes: Sequence[Change] = ()
) -> dict[str, Any]:
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


# --- the session's report --------------------------------------------------------------------


@dataclass
class SessionReport:
    """Collects a session's results and turns them into files, a verdict and a table."""

    rootdir: Path
    storage: Path
    json_path: Path | None = None
    save: str | None = None
    compare_with: Path | None = None
    reference: str | None = None  # the commit whose broker runs beside (--logbench-compare-ref)
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
                self.notes.append(
                    f"WARNING: the baseline {self.compare_with.name} was saved on "
                    f"another machine ({'; '.join(differences)}): its figures "
                    "compare the machines as much as the code"
                )

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
        verdicts = [
            c.verdict
            for c in compare([result], self.baseline, self.thresholds)
            if c.threshold is not None
        ]
        if "regressed" in verdicts:
            return "regressed"
        return "undecided" if "undecided" in verdicts else "ok"

    def decider(self, max_rounds: int) -> Callable[[Result], Verdict] | None:
        """When a measurement has enough rounds (for ``Meter``): a gate against a baseline adds
        rounds while its verdict is undecided; a run that saves a baseline records
        ``SAVED_ROUNDS`` rounds (within the budget), since every later gate is only as sharp as
        the baseline it compares with. None when neither applies."""
        gate = self.decide if self.thresholds and self.gating else None
        least = min(SAVED_ROUNDS, max_rounds) if self.save else 0
        if gate is None and not least:
            return None

        def decide(result: Result) -> Verdict:
            if len(result.rounds) < least:
                return "undecided"
            return gate(result) if gate is not None else "ok"

        return decide

    @property
    def gating(self) -> bool:
        """Whether there is anything to judge results against: a baseline or a revision."""
        return bool(self.baseline) or self.reference is not None

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
        if self.compare_with is not None or self.reference is not None:
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
            self.written += write_plots(self.plot_dir, self.results, baseline, self.changes)

    def lines(self) -> list[str]:
        """The terminal summary: one row per result and metric (throughput, p99 latency and
        each thresholded metric)."""
        if not self.results:
            return list(self.notes)
        rows = [("result", "metric", "median", "IQR", "rounds", "vs baseline")]
        by_key = {(c.key, c.metric): c for c in self.changes}
        # Throughput and the typical round's p99 latency always (where measured), then what
        # the gate thresholds.
        metrics = list(
            dict.fromkeys(["throughput", "latency_p99", *(t.metric for t in self.thresholds)])
        )
        for result in self.results:
            for metric in metrics:
                values = result.values(metric)
                if not values:
                    continue
                stats, unit = result.stats(metric), METRICS[metric]
                change = by_key.get((result.key, metric))
                rows.append(
                    (
                        shorten(result.key, 64),
                        metric,
                        unit.format(stats.median),
                        format_number(stats.iqr),
                        str(stats.n),
                        change.describe() if change else "-",
                    )
                )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        out = list(self.notes)
        if self.compare_with is not None:
            out.append(f"baseline: {self.compare_with}")
        if self.reference is not None:
            out.append(f"beside the reference broker of {self.reference[:12]}, in the same rounds")
        for row in rows:
            out.append(
                "  ".join(
                    [
                        row[0].ljust(widths[0]),
                        row[1].ljust(widths[1]),
                        *(cell.rjust(w) for cell, w in zip(row[2:5], widths[2:5], strict=True)),
                        row[5],
                    ]
                ).rstrip()
            )
        for change in self.regressions:
            line = f"REGRESSION {change.key}: {change.metric} {change.describe()}"
            if change.baseline is not None:
                line += f"; baseline median {METRICS[change.metric].format(_median(change))}"
            out.append(line)
        out += [f"wrote {path}" for path in self.written]
        return out


def _median(change: Change) -> float:
    assert change.baseline is not None
    return change.baseline.stats(change.metric).median
