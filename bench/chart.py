"""Charts of the latest results: bench/results/*.png."""

from __future__ import annotations

import json
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.common import RESULTS


def e2e() -> None:
    path = RESULTS / "e2e.json"
    if not path.exists():
        return
    data = json.loads(path.read_text())["results"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"tuned": "-", "default": "--"}
    for label, by_rate in data.items():
        rates = sorted(by_rate, key=float)
        for key, marker in (("p50_ms", "o"), ("p99_ms", "s")):
            ys = [by_rate[r][key]["median"] for r in rates]
            ax.plot(
                [float(r) for r in rates],
                ys,
                styles.get(label, "-"),
                marker=marker,
                label=f"{label} {key[:3]}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (notifications/s)")
    ax.set_ylabel("commit -> frame latency (ms)")
    ax.set_title("End to end: tuned connector vs Debezium defaults (median of runs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "e2e.png", dpi=110)


STAGES = (("capture", "commit -> Debezium", "#1d4ed8"), ("ship", "Connect -> router read", "#0891b2"),
          ("route", "router read -> frame", "#16a34a"), ("deliver", "frame -> client", "#ca8a04"))  # fmt: skip


def _config_bars(name: str, key: str) -> list[tuple[str, dict[str, Any]]]:
    """(bar name, figures) for each config and rate of ``bench/results/<name>.json``
    whose figures hold ``key``; empty without the file."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return []
    results = json.loads(path.read_text())["results"]
    return [(f"{label}\n{float(r):.0f}/s", by_rate[r]) for label, by_rate in results.items()
            for r in sorted(by_rate, key=float) if key in by_rate[r]]  # fmt: skip


def _label_totals(ax: Any, totals: list[float], unit: str) -> None:
    for x, t in enumerate(totals):
        ax.annotate(f"{t:.0f} {unit}", (x, t), textcoords="offset points", xytext=(0, 4),
                    ha="center", fontsize=8)  # fmt: skip


def e2e_stages(name: str = "e2e") -> None:
    """Where the latency goes: each stage's median p50 and p99, stacked, for each
    config and rate of the file."""
    bars = _config_bars(name, "stages")
    if not bars:
        return
    names = [n for n, _ in bars]
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 2.6 * len(bars)), 4.8))
    for ax, key in zip(axes, ("p50_ms", "p99_ms"), strict=True):
        bottom = [0.0] * len(bars)
        for stage, label, color in STAGES:
            ys = [d["stages"][stage][key]["median"] for _, d in bars]
            ax.bar(names, ys, bottom=bottom, label=label, color=color)
            bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
        totals = [d["stages"]["total"][key]["median"] for _, d in bars]
        ax.plot(names, totals, "k_", markersize=30, label="total (measured)")
        _label_totals(ax, totals, "ms")  # the small bars beside Debezium's defaults
        log = max(totals) > 50 * max(1.0, min(totals))  # a saturated rate beside fast ones
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(f"{key[:3]} latency per stage (ms{', log scale' if log else ''})")
        ax.set_title(f"{key[:3]}: stages stacked (the deliver stage is the rest)")
        ax.grid(True, axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Commit -> browser frame, per stage ({name}.json, median of runs)")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}-stages.png", dpi=110)


def e2e_cpu(name: str = "e2e-fresh") -> None:
    """Where the CPU goes: each part's CPU per committed notification (median of
    runs), stacked, for each config and rate of the file."""
    bars = [
        (n, d["cpu_us_per_notification"]) for n, d in _config_bars(name, "cpu_us_per_notification")
    ]
    if not bars:
        return
    names = [n for n, _ in bars]
    fig, ax = plt.subplots(figsize=(max(7, 1.8 * len(bars)), 4.8))
    bottom = [0.0] * len(bars)
    for part in bars[0][1]:
        ys = [cpu[part]["median"] for _, cpu in bars]
        ax.bar(names, ys, bottom=bottom, label="load (writer, clients)" if part == "load" else part)
        bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
    _label_totals(ax, bottom, "us")
    ax.set_ylabel("CPU us per notification (1,000 = a core at 1,000/s)")
    ax.set_title(f"Where the CPU goes, by process ({name}.json, median of runs)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}-cpu.png", dpi=110)


def e2e_timeline(name: str = "e2e-long") -> None:
    """Latency over time of one pipeline under a steady load, per window."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return
    raw = json.loads(path.read_text())["raw"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, by_rate in raw.items():
        for rate, runs in by_rate.items():
            for i, run in enumerate(runs):
                ws = run.get("windows", [])
                xs = [w["from_s"] for w in ws]
                tag = f"{label} {float(rate):.0f}/s" + (f" run {i + 1}" if len(runs) > 1 else "")
                ax.plot(xs, [w["p99_ms"] for w in ws], "-", marker=".", label=f"{tag} p99")
                ax.plot(xs, [w["p50_ms"] for w in ws], "--", label=f"{tag} p50")
    ax.set_yscale("log")
    ax.set_xlabel("seconds into the run (window start)")
    ax.set_ylabel("commit -> frame latency (ms)")
    ax.set_title("One pipeline under a steady load: latency over time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)


def router() -> None:
    path = RESULTS / "router.json"
    if not path.exists():
        return
    d = json.loads(path.read_text())
    fig, ax = plt.subplots(figsize=(5, 4))
    names = ["router", "bare websockets"]
    vals = [d["router_frames_per_s"]["median"], d["bare_frames_per_s"]["median"]]
    errs = [[v - d[k]["min"] for v, k in zip(vals, ("router_frames_per_s", "bare_frames_per_s"), strict=True)],
            [d[k]["max"] - v for v, k in zip(vals, ("router_frames_per_s", "bare_frames_per_s"), strict=True)]]  # fmt: skip
    ax.bar(names, vals, yerr=errs, color=["#1d4ed8", "#9ca3af"], capsize=6)
    ax.set_ylabel("frames/s (topic -> WebSocket)")
    ax.set_title(f"Router vs bare broadcast, {d['settings']['teachers']} connections")
    fig.tight_layout()
    fig.savefig(RESULTS / "router.png", dpi=110)


def main() -> None:
    e2e()
    e2e_stages()
    e2e_stages("e2e-fresh")
    e2e_cpu("e2e-fresh")
    e2e_stages("e2e-rates")
    e2e_cpu("e2e-rates")
    e2e_timeline()
    e2e_timeline("e2e-long-batched")
    router()
    print(f"charts in {RESULTS}")


if __name__ == "__main__":
    main()
