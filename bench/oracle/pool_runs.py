"""Pool bench.sh runs made in both builder orders into one table of medians.

On this VM whichever builder bench.sh runs second is slower on CPU-bound cells: b2's edit
measured 2.69 s (BuildKit, first) against 3.13 s (pybuild, second), and 2.80 s (pybuild,
first) against 2.85 s (BuildKit, second) with the order swapped (bench/RESULTS.md). A
fair comparison takes the same number of repetitions from each order:

    python3 bench/oracle/pool_runs.py ../shared/oracle/results/raw-A.tsv raw-B.tsv

prints, per bench and phase, each builder's median over every successful repetition of
the given runs, and the ratio pybuild / docker (or the first two builders found).
"""
from __future__ import annotations

import csv
import statistics
import sys
from collections import defaultdict

PHASES = ("cold", "warm", "edit", "touch", "export_oci", "export_docker")


def pooled(paths: list[str]) -> dict[tuple[str, str, str], list[float]]:
    """(bench, builder, phase) -> wall seconds of every successful repetition."""
    runs: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if row["status"] == "ok":
                    runs[row["bench"], row["builder"], row["phase"]].append(float(row["wall_s"]))
    return runs


def table(runs: dict[tuple[str, str, str], list[float]]) -> str:
    benches = sorted({b for b, _, _ in runs})
    builders = sorted({k for _, k, _ in runs}, key=lambda k: (k != "docker", k))
    lines = ["| bench | builder | n | " + " | ".join(PHASES) + " |",
             "|---|---|---|" + "---|" * len(PHASES)]
    for bench in benches:
        medians: dict[str, dict[str, float]] = {}
        for builder in builders:
            cells, n = [], 0
            for phase in PHASES:
                xs = runs.get((bench, builder, phase), [])
                n = max(n, len(xs))
                if xs:
                    medians.setdefault(builder, {})[phase] = statistics.median(xs)
                    cells.append(f"{statistics.median(xs):.2f}")
                else:
                    cells.append("-")
            lines.append(f"| {bench} | {builder} | {n} | " + " | ".join(cells) + " |")
        if len(medians) >= 2:
            base, other = list(medians)[:2]
            ratios = []
            for phase in PHASES:
                a, b = medians[base].get(phase), medians[other].get(phase)
                ratios.append(f"{b / a:.2f}x" if a and b else "-")
            lines.append(f"| {bench} | {other}/{base} | | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    print(table(pooled(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
