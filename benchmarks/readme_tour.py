"""The README tour's wall times, measured: `dlforge train` on each example spec the README times, one after the
other, each in a fresh process as a user types it, with the test headline metric it reached.

    uv run python benchmarks/readme_tour.py [--specs digits shapes_detection ...] [--runs-dir DIR]

Prints one markdown table, with the machine (CPU model, cores) and the load average before and after: the README's
"~N min on 2 CPU cores" figures come from here. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The README's timed commands, in its order (rotten_tomatoes is per epoch and takes minutes more: ask for it).
SPECS = ("digits", "shapes_detection", "co2_forecast", "adult")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else ():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def train(spec: str, runs_dir: Path) -> tuple[float, str]:
    """Seconds of one `dlforge train examples/<spec>.yaml`, and the run's headline metric."""
    before = set(runs_dir.iterdir()) if runs_dir.exists() else set()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dlforge.cli", "train", str(ROOT / "examples" / f"{spec}.yaml"),
                    "--runs-dir", str(runs_dir)], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    (run,) = [p for p in runs_dir.iterdir() if p not in before and p.is_dir()]
    headline = json.loads((run / "eval.json").read_text())["headline"]  # {"name": ..., "value": ...}
    return seconds, f"{headline['name']} {headline['value']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", nargs="+", default=list(SPECS))
    parser.add_argument("--runs-dir", type=Path, default=None, help="keep the runs here (default: a temp folder)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = args.runs_dir or Path(tmp)
        for spec in args.specs:
            seconds, metric = train(spec, runs_dir)
            rows.append((spec, seconds, metric))
            print(f"{spec}: {seconds:.0f} s", file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} cores; load average before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f} (1 min)\n")
    print("| spec | wall time | test headline |\n|---|---:|---|")
    for spec, seconds, metric in rows:
        print(f"| examples/{spec}.yaml | {seconds / 60:.1f} min ({seconds:.0f} s) | {metric} |")


if __name__ == "__main__":
    main()
