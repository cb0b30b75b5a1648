"""`make bench`: every benchmark, one after the other, then the charts."""

from __future__ import annotations

import subprocess
import sys


def main() -> None:
    for mod in ("bench.writer", "bench.router", "bench.e2e", "bench.recovery", "bench.chart"):
        print(f"== {mod}", flush=True)
        subprocess.run([sys.executable, "-m", mod, *sys.argv[1:]], check=True)


if __name__ == "__main__":
    main()
