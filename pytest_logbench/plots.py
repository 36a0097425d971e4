"""Charts of a session's results (``--logbench-plot DIR``): throughput against the baseline,
and page-cache residency per segment over the rounds. Needs the ``plot`` extra (matplotlib)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_logbench.results import Result
from pytest_logbench.tables import shorten


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
    directory: Path, results: Sequence[Result], baseline: dict[str, Result]
) -> list[Path]:
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
    labels = [shorten(r.key, 70) for r in results]
    stats = [r.stats("throughput") for r in results]
    positions = list(range(len(results)))
    axes.barh(
        positions,
        [s.median for s in stats],
        height=0.6,
        color="#4c72b0",
        xerr=[[s.median - s.q1 for s in stats], [s.q3 - s.median for s in stats]],
        label="median (IQR)",
    )
    old = [
        (i, baseline[r.key].stats("throughput").median)
        for i, r in enumerate(results)
        if r.key in baseline and baseline[r.key].values("throughput")
    ]
    if old:
        axes.scatter(
            [v for _, v in old],
            [i for i, _ in old],
            marker="D",
            color="black",
            zorder=3,
            label="baseline median",
        )
    axes.set_yticks(positions, labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("throughput (MB/s)")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return figure


def _residency_figure(result: Result) -> Any:
    from matplotlib.figure import Figure

    segments = sorted({name for sample in result.residency for name in sample.segments})
    matrix = [[sample.segments.get(name, 0.0) for sample in result.residency] for name in segments]
    figure = Figure(figsize=(9, 1.5 + 0.3 * len(segments)))
    axes = figure.add_subplot()
    image = axes.imshow(
        matrix, aspect="auto", interpolation="nearest", vmin=0.0, vmax=1.0, cmap="viridis"
    )
    axes.set_yticks(range(len(segments)), segments, fontsize=7)
    axes.set_xticks(
        range(len(result.residency)),
        [f"{s.seconds:.1f}s\nr{s.round} {s.phase}" for s in result.residency],
        fontsize=6,
    )
    axes.set_title(f"page-cache residency per segment: {shorten(result.key, 80)}", fontsize=9)
    figure.colorbar(image, ax=axes, label="resident fraction")
    return figure
