"""Charts of the latest results: bench/results/*.png."""

from __future__ import annotations

import json

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


def e2e_stages(name: str = "e2e") -> None:
    """Where the latency goes: each stage's median p50 and p99, stacked, at each rate."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return
    data = json.loads(path.read_text())["results"].get("tuned", {})
    rates = sorted((r for r in data if "stages" in data[r]), key=float)
    if not rates:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, key in zip(axes, ("p50_ms", "p99_ms"), strict=True):
        bottom = [0.0] * len(rates)
        for stage, label, color in STAGES:
            ys = [data[r]["stages"][stage][key]["median"] for r in rates]
            ax.bar(
                [f"{float(r):.0f}/s" for r in rates], ys, bottom=bottom, label=label, color=color
            )
            bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
        totals = [data[r]["stages"]["total"][key]["median"] for r in rates]
        ax.plot(
            [f"{float(r):.0f}/s" for r in rates],
            totals,
            "k_",
            markersize=30,
            label="total (measured)",
        )
        ax.set_ylabel(f"{key[:3]} latency per stage (ms)")
        ax.set_title(f"{key[:3]}: stages stacked (the deliver stage is the rest)")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Commit -> browser frame, per stage ({name}.json, median of runs)")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}-stages.png", dpi=110)


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
    e2e_timeline()
    e2e_timeline("e2e-long-batched")
    router()
    print(f"charts in {RESULTS}")


if __name__ == "__main__":
    main()
