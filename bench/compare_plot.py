"""compare.py's plot: time against N, one line per tool, one panel per workload.

Run by the peers venv's python (it has matplotlib; the project does not):
``PEERS/bin/python bench/compare_plot.py results/compare.json results/compare.png``.
Solid lines are whole-process wall times; dashed ones the engine's own time (planctl's
run as its state store recorded it; bare sqlite3 has only this one).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

TITLES = {"W1": "W1 chain of no-ops", "W2": "W2 fan-out of 0.5 s polled jobs",
          "W3": "W3 fail and revert", "L": "L validate a plan"}


def points(series: list[dict[str, Any]], tool: str, workload: str, key: str
           ) -> tuple[list[int], list[float]]:
    found = sorted((s["n"], s["median"][key]) for s in series
                   if s["tool"] == tool and s["workload"] == workload
                   and s["median"].get(key) is not None)
    return [n for n, _ in found], [t for _, t in found]


def main(argv: list[str]) -> int:
    source, target = argv
    with open(source) as handle:
        data = json.load(handle)
    series = data["series"]
    tools = list(dict.fromkeys(s["tool"] for s in series))
    colours = {tool: f"C{i}" for i, tool in enumerate(tools)}
    workloads = [w for w in TITLES if any(s["workload"] == w for s in series)]
    columns = min(2, len(workloads)) or 1
    rows = (len(workloads) + columns - 1) // columns or 1
    fig, axes = plt.subplots(rows, columns, figsize=(7 * columns, 5 * rows), squeeze=False)
    for ax, workload in zip(axes.flat, workloads, strict=False):
        for tool in tools:
            floor = tool.endswith("-limit")  # a floor has no whole process to plot
            if not floor:
                ns, ts = points(series, tool, workload, "wall")
                if ns:
                    ax.plot(ns, ts, "o-", color=colours[tool], label=tool)
            if tool == "planctl" or floor:
                ns, ts = points(series, tool, workload, "engine")
                if ns:
                    ax.plot(ns, ts, "s--", color=colours[tool], label=f"{tool} (engine)")
        if workload == "W2":
            ax.axhline(0.5, color="grey", linestyle=":", label="critical path 0.5 s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(TITLES[workload])
        ax.set_xlabel("N (commands)")
        ax.set_ylabel("seconds (median)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(workloads):]:
        ax.set_visible(False)
    fig.suptitle(f"planctl and its peers, {data['date']} ({data['machine']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
