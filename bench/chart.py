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
    router()
    print(f"charts in {RESULTS}")


if __name__ == "__main__":
    main()
