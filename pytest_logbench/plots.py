"""Charts of a session's results (``--logbench-plot DIR``): throughput against the baseline,
and page-cache residency per segment over the rounds. Needs the ``plot`` extra (matplotlib).

A chart must say what it shows without the terminal beside it: titles name the run, the
baseline's spread is drawn like the run's (a difference inside both spreads is noise), the
gate's regressions are marked, and segments are labelled by topic (without the random token
of ``topic`` names, the same in every run), partition and base offset.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_logbench.baselines import Change
from pytest_logbench.results import Result
from pytest_logbench.tables import shorten
from pytest_logbench.topics import display_name

REGRESSED = "#c44e52"


def plots_unavailable() -> str | None:
    """Why ``--logbench-plot`` cannot work here (matplotlib missing), None when it can."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return (
            "--logbench-plot needs matplotlib, an optional extra: "
            "pip install 'logbench[plot]' (or pip install matplotlib)"
        )
    return None


def write_plots(
    directory: Path,
    results: Sequence[Result],
    baseline: dict[str, Result],
    changes: Sequence[Change] = (),
) -> list[Path]:
    """PNG and SVG charts: throughput per result against its baseline (``changes``, the
    gate's verdicts, mark the regressions), and for results measured with ``residency=True``
    the page-cache residency of each segment over time."""
    directory.mkdir(parents=True, exist_ok=True)
    figures = [("throughput", throughput_figure(results, baseline, changes))]
    for index, result in enumerate(r for r in results if r.residency):
        slug = re.sub(r"[^A-Za-z0-9]+", "-", result.key).strip("-")[-60:]
        figures.append((f"residency-{index}-{slug}", residency_figure(result)))
    written = []
    for stem, figure in figures:
        for extension in ("png", "svg"):
            path = directory / f"{stem}.{extension}"
            figure.savefig(path, bbox_inches="tight")
            written.append(path)
    return written


def throughput_figure(
    results: Sequence[Result], baseline: dict[str, Result], changes: Sequence[Change] = ()
) -> Any:
    """Bars: each result's median throughput with its IQR; diamonds: the baseline's median
    with its IQR; bars and labels of results the gate found regressed in red."""
    # Figure without pyplot: no global backend or state is touched in the user's process.
    from matplotlib.figure import Figure

    regressed = {c.key: c for c in changes if c.regressed}
    figure = Figure(figsize=(9, 1.6 + 0.45 * len(results)))
    axes = figure.add_subplot()
    labels = [
        shorten(r.key, 70)
        + (f"\nREGRESSED: {regressed[r.key].describe(verdict=False)}" if r.key in regressed else "")
        for r in results
    ]
    stats = [r.stats("throughput") for r in results]
    positions = list(range(len(results)))
    axes.barh(
        positions,
        [s.median for s in stats],
        height=0.6,
        color=[REGRESSED if r.key in regressed else "#4c72b0" for r in results],
        xerr=[[s.median - s.q1 for s in stats], [s.q3 - s.median for s in stats]],
        label="this run: median (IQR)",
    )
    old = [
        (i, baseline[r.key].stats("throughput"))
        for i, r in enumerate(results)
        if r.key in baseline and baseline[r.key].values("throughput")
    ]
    if old:
        axes.errorbar(
            [s.median for _, s in old],
            [i for i, _ in old],
            xerr=[[s.median - s.q1 for _, s in old], [s.q3 - s.median for _, s in old]],
            fmt="D",
            color="black",
            capsize=3,
            zorder=3,
            label="baseline: median (IQR)",
        )
    axes.set_yticks(positions, labels, fontsize=8)
    for tick, result in zip(axes.get_yticklabels(), results, strict=True):
        if result.key in regressed:
            tick.set_color(REGRESSED)
    axes.invert_yaxis()
    axes.set_xlabel("throughput (MB/s)")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    against = "against the baseline" if old else "(no baseline)"
    flagged = f", {len(regressed)} regressed" if regressed else ""
    axes.set_title(f"logbench: throughput of {len(results)} results {against}{flagged}")
    return figure


def segment_label(relative: str) -> str:
    """``<topic>-<partition>/<base offset>.log`` as ``topic p0 @0``: the topic without the
    token of ``topic`` fixture names, so labels read the same in every run."""
    directory, _, file = relative.rpartition("/")
    topic, _, partition = directory.rpartition("-")
    offset = file.removesuffix(".log")
    return f"{display_name(topic)} p{partition} @{int(offset) if offset.isdigit() else offset}"


def residency_figure(result: Result) -> Any:
    """Rows: segments (by topic, partition, base offset); columns: the samples around each
    round; colour: the resident fraction."""
    from matplotlib.figure import Figure

    # "<topic>-<partition>/<20-digit offset>.log": sorted by partition, then offset
    segments = sorted({name for sample in result.residency for name in sample.segments})
    matrix = [[sample.segments.get(name, 0.0) for sample in result.residency] for name in segments]
    figure = Figure(figsize=(9, 1.5 + 0.3 * len(segments)))
    axes = figure.add_subplot()
    image = axes.imshow(
        matrix, aspect="auto", interpolation="nearest", vmin=0.0, vmax=1.0, cmap="viridis"
    )
    axes.set_yticks(range(len(segments)), [segment_label(s) for s in segments], fontsize=7)
    axes.set_xticks(
        range(len(result.residency)),
        [f"{s.seconds:.1f}s\nr{s.round} {s.phase}" for s in result.residency],
        fontsize=6,
    )
    axes.set_title(f"page-cache residency per segment: {shorten(result.key, 80)}", fontsize=9)
    figure.colorbar(image, ax=axes, label="resident fraction")
    return figure
