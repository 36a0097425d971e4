"""Side-by-side tables of measured set-ups, as the tutorials and benchmarks print them."""

from __future__ import annotations

import statistics

from pytest_logbench.results import METRICS, Result, paired_ratios
from pytest_logbench.stats import format_number


def print_comparison(
    title: str, a: Result, b: Result, metrics: tuple[str, ...] = ("throughput", "cpu")
) -> dict[str, float]:
    """Print each metric's median and spread for ``a`` and ``b`` and the median of their
    round-by-round ratios (a / b); return those median ratios by metric."""
    print(f"\n--- {title} ---")
    print(f"{'set-up':<24} {'metric':<10} {'median':>12} {'min':>10} {'max':>10} {'IQR':>9}")
    ratios: dict[str, float] = {}
    for metric in metrics:
        if not a.values(metric) or not b.values(metric):
            print(f"({metric} not measured here)")
            continue
        unit = METRICS[metric].unit
        for result in (a, b):
            s = result.stats(metric)
            print(
                f"{result.name:<24} {unit:<10} {format_number(s.median):>12} "
                f"{format_number(s.min):>10} {format_number(s.max):>10} "
                f"{format_number(s.iqr):>9}"
            )
        per_round = paired_ratios(a, b, metric)
        ratios[metric] = statistics.median(per_round)
        print(
            f"{'':<24} {a.name} / {b.name} per round: median {ratios[metric]:.2f} "
            f"(rounds {', '.join(f'{r:.2f}' for r in per_round)})"
        )
    return ratios


def shorten(text: str, width: int) -> str:
    """``text`` cut from the left to ``width`` characters (test ids end in what matters)."""
    return text if len(text) <= width else "..." + text[-(width - 3) :]
