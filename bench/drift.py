"""Benchmark: the drift engine against Evidently's Report.run on the same data, same run.

Data: 200,000 reference and 200,000 current rows; 20 numerical columns (every fourth one
shifted) and 5 categorical string columns with 3, 5, 10, 20 and 50 levels (two of them with
their level frequencies reversed). Every measurement runs in its own fresh process, so peak
memory is not shared between them: the figures are wall time of the evaluation call and the
peak resident memory it added on top of the process that holds the data (VmHWM after
resetting it via /proc/self/clear_refs, minus VmRSS before).

    python bench/drift.py                                    # the engine only
    python bench/drift.py --evidently-python /tmp/evid-venv/bin/python

The Evidently side needs a Python with ``evidently==0.7.23`` and ``pandas<3`` (never a
project dependency); it builds the very same arrays from the same seed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
N_NUMERICAL = 20
LEVELS = (3, 5, 10, 20, 50)
REVERSED = (5, 50)


def build_side(rows: int, seed: int, current: bool) -> dict[str, Any]:
    """One side's columns as numpy arrays (float64 and object arrays of str)."""
    import numpy as np

    rs = np.random.RandomState(seed)
    data: dict[str, Any] = {}
    for i in range(N_NUMERICAL):
        shift = 0.15 if current and i % 4 == 0 else 0.0
        data[f"num_{i:02d}"] = rs.normal(i + shift, 1 + i / 10, rows)
    for k in LEVELS:
        levels = np.array([f"c{j:02d}" for j in range(k)], dtype=object)
        weights = np.linspace(1.0, 2.0, k)
        if current and k in REVERSED:
            weights = weights[::-1]
        data[f"cat_{k:02d}"] = levels[rs.choice(k, rows, p=weights / weights.sum())]
    return data


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak covers what follows only."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def measure(run: Any) -> dict[str, Any]:
    """Wall and CPU time of run() and the peak memory it added (MiB) over the current RSS.

    CPU time (all threads) does not depend on what else the machine runs; wall time does.
    """
    import gc

    gc.collect()
    _reset_peak()
    before = _rss_kib("VmRSS")
    start, cpu_start = time.perf_counter(), time.process_time()
    result = run()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = _rss_kib("VmHWM")
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_added_mib": (peak - before) / 1024,
        "peak_rss_mib": peak / 1024,
        "result": result,
    }


def worker_engine(rows: int, seed: int, variant: str) -> dict[str, Any]:
    """Time the engine in this process: import, build the data, warm up, then measure."""
    sys.path.insert(0, str(REPO))
    start = time.perf_counter()
    from node_exporter_ml.drift import Table, evaluate

    reference = build_side(rows, seed, current=False)
    current = build_side(rows, seed + 1, current=True)
    if variant == "json":
        # what the HTTP path holds after decoding JSON: Python lists
        reference = {k: v.tolist() for k, v in reference.items()}
        current = {k: v.tolist() for k, v in current.items()}
        run = lambda: evaluate({"columns": reference}, {"columns": current}, data_quality=False)  # noqa: E731
    else:
        ref_table, cur_table = Table.from_columns(reference), Table.from_columns(current)
        quality = variant == "quality"
        run = lambda: evaluate(ref_table, cur_table, data_quality=quality)  # noqa: E731
    warm = evaluate(
        {k: v[:2000] for k, v in build_side(2000, 1, False).items()},
        {k: v[:2000] for k, v in build_side(2000, 2, True).items()},
    )
    assert warm["columns"]
    setup = time.perf_counter() - start
    out = measure(run)
    report = out.pop("result")
    out["setup_seconds"] = setup
    out["columns"] = {
        name: {k: col[k] for k in ("stattest", "score", "drift_detected")}
        for name, col in report["columns"].items()
    }
    out["dataset_drift"] = report["dataset"]["dataset_drift"]
    return out


def worker_evidently(rows: int, seed: int) -> dict[str, Any]:
    """Time Evidently's Report([DataDriftPreset()]).run(current, reference) in this process."""
    import warnings

    start = time.perf_counter()
    import pandas as pd
    from evidently import Report
    from evidently.legacy.calculations.stattests.registry import _registered_stat_tests
    from evidently.presets import DataDriftPreset

    import_seconds = time.perf_counter() - start
    reference = pd.DataFrame(build_side(rows, seed, current=False))
    current = pd.DataFrame(build_side(rows, seed + 1, current=True))
    for frame in (reference, current):  # object columns of str, as read_csv would give
        for name in frame.columns:
            if frame[name].dtype == object:
                frame[name] = frame[name].astype(object)

    def run() -> dict[str, Any]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(
                Report([DataDriftPreset()], include_tests=True).run(current, reference).dict()
            )

    out = measure(run)
    result = out.pop("result")
    display = {t.display_name: n for n, by in _registered_stat_tests.items() for t in by.values()}
    columns: dict[str, dict[str, Any]] = {}
    dataset_drift = None
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            columns[config["column"]] = {
                "stattest": display.get(config["method"], config["method"]),
                "score": float(metric["value"]),
            }
    for test in result["tests"]:
        params = test["metric_config"]["params"]
        if test["id"] == "drift" and params.get("column") in columns:
            columns[params["column"]]["drift_detected"] = test["status"] == "FAIL"
        elif params["type"].endswith("DriftedColumnsCount"):
            dataset_drift = test["status"] == "FAIL"
    out["import_seconds"] = import_seconds
    out["columns"] = columns
    out["dataset_drift"] = dataset_drift
    return out


def spawn(python: str, args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run this script as a worker under `python`; its last stdout line is the JSON result."""
    done = subprocess.run(
        [python, str(Path(__file__).resolve()), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        raise SystemExit(f"worker {args} failed:\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def agreement(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Same tests, same verdicts, and the largest relative score difference."""
    worst = 0.0
    same_tests = same_verdicts = 0
    for name, want in theirs["columns"].items():
        got = ours["columns"].get(name)
        if got is None:
            continue
        same_tests += got["stattest"] == want["stattest"]
        same_verdicts += got["drift_detected"] == want["drift_detected"]
        if want["score"]:
            worst = max(worst, abs(got["score"] - want["score"]) / abs(want["score"]))
    return {
        "columns": len(theirs["columns"]),
        "same_tests": same_tests,
        "same_verdicts": same_verdicts,
        "same_dataset_verdict": ours["dataset_drift"] == theirs["dataset_drift"],
        "max_relative_score_difference": worst,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows per side")
    parser.add_argument("--seed", type=int, default=20_261_126)
    parser.add_argument("--evidently-python", help="a python with evidently 0.7.23 installed")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--worker", choices=["engine", "quality", "json", "evidently"])
    args = parser.parse_args()

    if args.worker == "evidently":
        print(json.dumps(worker_evidently(args.rows, args.seed)))
        return
    if args.worker:
        print(json.dumps(worker_engine(args.rows, args.seed, args.worker)))
        return

    common = ["--rows", str(args.rows), "--seed", str(args.seed)]
    results: dict[str, Any] = {"rows_per_side": args.rows, "cpus": os.cpu_count()}
    for variant in ("engine", "quality", "json"):
        results[variant] = spawn(sys.executable, ["--worker", variant, *common])
    if args.evidently_python:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        results["evidently"] = spawn(args.evidently_python, ["--worker", "evidently", *common], env)
        results["agreement"] = agreement(results["engine"], results["evidently"])
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print_summary(results)


def print_summary(results: dict[str, Any]) -> None:
    rows = results["rows_per_side"]
    print(f"{rows:,} + {rows:,} rows x 25 columns, {results['cpus']} CPUs")
    print(f"{'':38} {'seconds':>9} {'CPU s':>7} {'peak added MiB':>15} {'peak RSS MiB':>13}")
    labels = {
        "engine": "engine, evaluate(Table, Table)",
        "quality": "engine, with the data-quality section",
        "json": "engine, from JSON-decoded lists",
        "evidently": "Evidently Report.run",
    }
    for key, label in labels.items():
        if key in results:
            r = results[key]
            print(
                f"{label:38} {r['seconds']:9.3f} {r['cpu_seconds']:7.2f} "
                f"{r['peak_added_mib']:15.1f} {r['peak_rss_mib']:13.1f}"
            )
    if "evidently" in results:
        ours, theirs = results["engine"], results["evidently"]
        print(
            f"speed-up: {theirs['seconds'] / ours['seconds']:.1f}x wall, "
            f"{theirs['cpu_seconds'] / ours['cpu_seconds']:.1f}x CPU"
        )
        share = ours["peak_added_mib"] / theirs["peak_added_mib"]
        print(f"peak memory added: {share:.2f} of Evidently's")
        a = results["agreement"]
        print(
            f"agreement: tests {a['same_tests']}/{a['columns']}, verdicts "
            f"{a['same_verdicts']}/{a['columns']}, dataset verdict "
            f"{'same' if a['same_dataset_verdict'] else 'DIFFERENT'}, largest relative score "
            f"difference {a['max_relative_score_difference']:.1e}"
        )


if __name__ == "__main__":
    main()
