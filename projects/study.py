"""What the projects' study scripts share: run `tools/train_net.py`, read a run's metrics.json.

The studies (`projects/maskrcnn/finetune_study.py`, `projects/optimizer_study.py`) train each
variant with the real command line, one run after another, and read the numbers back from the
runs' own records, so a table shows what the runs logged.
"""

import json
import os
import statistics
import subprocess
import sys

__all__ = [
    "ROOT",
    "final_metrics",
    "markdown_table",
    "median_step_time",
    "metrics_records",
    "train_net",
    "write_results",
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_net(*args: str) -> None:
    """Runs tools/train_net.py from the repo root; stops the study if it fails."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def metrics_records(run_dir: str) -> list[dict]:
    """The records of a run's metrics.json, in order."""
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: did the run in {run_dir} train?")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def final_metrics(run_dir: str, key: str = "segm/AP") -> dict:
    """Returns the last record of a run's metrics.json that has `key` (its last evaluation)."""
    evals = [r for r in metrics_records(run_dir) if key in r]
    if not evals:
        raise RuntimeError(f"{run_dir}/metrics.json has no record with {key!r} (no evaluation?)")
    return evals[-1]


def median_step_time(run_dir: str) -> float:
    """The median of the logged ``time`` (seconds per iteration, each log period's median)."""
    times = [r["time"] for r in metrics_records(run_dir) if "time" in r]
    if not times:
        raise RuntimeError(f"{run_dir}/metrics.json has no 'time' record")
    return statistics.median(times)


def markdown_table(header: list[str], rows: list[str]) -> list[str]:
    """The lines of a markdown table: `header`'s cells, the separator, then `rows` (lines)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows]


def write_results(out: str, *tables: list[str]) -> None:
    """Writes the tables (lists of lines) to ``<out>/results.md``, a blank line between them,
    and prints them."""
    text = "\n\n".join("\n".join(t) for t in tables)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text + "\n")
    print(text)
