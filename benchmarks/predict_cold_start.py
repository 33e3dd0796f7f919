"""Cold start of ``mxa-edge predict``: process start -> first result, for one image.

    python benchmarks/predict_cold_start.py --model ARTIFACT --image one.png [-n 7] [--threads N]

Two measurements, each in N fresh Python processes (nothing warm but the OS file cache):

1. end to end: ``mxa-edge predict IMAGE --model ARTIFACT --json`` exactly as a user runs it;
   time from spawning the process to the first byte of its JSON on stdout ("first result")
   and to its exit;
2. the split, in a child that runs the same library steps and timestamps each one:
   interpreter start, CLI + runtime imports, model load (manifest, SHA-256 of every model
   file, runtime import, compile), first image (decode, preprocess, inference, outputs).

Prints medians (and min/max) as a table, or JSON with ``--json``. Also reports whether torch
was imported anywhere in the child (it must not be). ``--importtime`` prints the 15 slowest
imports of the child (``python -X importtime``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Runs in a fresh interpreter; MXA_T0 is the parent's wall clock just before spawning.
_CHILD = r"""
import os, sys, time, json
t_start = time.time()
t0 = float(os.environ["MXA_T0"])
from mxa_edge_cli.app import app  # the CLI with every command registered, as `mxa-edge` loads it
from mxa_edge.runtime.predict import Predictor
t_import = time.time()
pred = Predictor(sys.argv[1], threads=int(sys.argv[3]) if sys.argv[3] != "None" else None)
t_load = time.time()
res = next(iter(pred.predict_files([sys.argv[2]])))
t_first = time.time()
assert not hasattr(res, "problem"), res
print(json.dumps({
    "interpreter_s": t_start - t0, "imports_s": t_import - t_start, "model_load_s": t_load - t_import,
    "first_image_s": t_first - t_load, "total_s": t_first - t0, "torch_imported": "torch" in sys.modules,
    "engine": pred.engine.name, "model_id": pred.model_id,
}))
"""


def _cli_command(args) -> list[str]:
    script = Path(sys.executable).parent / "mxa-edge"
    cmd = [str(script)] if script.exists() else [sys.executable, "-c", "from mxa_edge_cli.app import main; main()"]
    cmd += ["predict", str(args.image), "--model", str(args.model), "--json"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd


def end_to_end(args) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(_cli_command(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = os.read(proc.stdout.fileno(), 1)  # unbuffered: communicate() reads the rest
    t_first = time.perf_counter()
    out, err = proc.communicate()
    t_exit = time.perf_counter()
    if proc.returncode != 0 or not first:
        raise SystemExit(f"predict failed (exit {proc.returncode}): {err.decode(errors='replace').strip()}")
    json.loads(first + out)  # the output is the JSON result
    return {"first_result_s": t_first - t0, "exit_s": t_exit - t0}


def split(args) -> dict:
    env = dict(os.environ, MXA_T0=repr(time.time()))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(args.model), str(args.image), str(args.threads)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise SystemExit(f"split run failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def importtime(args) -> list[tuple[float, str]]:
    code = _CHILD
    env = dict(os.environ, MXA_T0=repr(time.time()))
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, str(args.model), str(args.image), str(args.threads)],
        capture_output=True,
        text=True,
        env=env,
    )
    rows = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cum, name = line.split("|", 2)
            if not name.startswith("  "):  # top-level imports only (cumulative includes children)
                rows.append((int(cum.strip()) / 1e6, name.strip()))
    return sorted(rows, reverse=True)[:15]


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=Path, help="exported artifact folder")
    ap.add_argument("--image", required=True, type=Path, help="one radiograph (PNG, JPEG or DICOM)")
    ap.add_argument("-n", type=int, default=7, help="fresh processes per measurement (default 7)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--importtime", action="store_true", help="also list the slowest top-level imports")
    args = ap.parse_args(argv)

    e2e = [end_to_end(args) for _ in range(args.n)]
    parts = [split(args) for _ in range(args.n)]
    keys = ("interpreter_s", "imports_s", "model_load_s", "first_image_s", "total_s")
    report = {
        "model": str(args.model),
        "model_id": parts[0]["model_id"],
        "engine": parts[0]["engine"],
        "image": str(args.image),
        "n": args.n,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "end_to_end": {k: _stats([r[k] for r in e2e]) for k in ("first_result_s", "exit_s")},
        "split": {k: _stats([r[k] for r in parts]) for k in keys},
        "torch_imported": any(r["torch_imported"] for r in parts),
    }
    if args.importtime:
        report["slowest_imports_s"] = importtime(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{report['model_id']} via {report['engine']}, {args.image.name}, {args.n} fresh processes, "
        f"{report['cpu_count']} CPUs, load average {report['load_average']}"
    )
    print(f"{'':34}{'median':>9}{'min':>9}{'max':>9}")
    rows = [
        ("CLI: start -> first result", report["end_to_end"]["first_result_s"]),
        ("CLI: start -> exit", report["end_to_end"]["exit_s"]),
    ]
    rows += [(f"split: {k[:-2].replace('_', ' ')}", report["split"][k]) for k in keys]
    for name, s in rows:
        print(f"{name:34}{s['median']:9.3f}{s['min']:9.3f}{s['max']:9.3f}")
    print(f"torch imported: {report['torch_imported']}")
    for secs, name in report.get("slowest_imports_s", []):
        print(f"  import {name:40}{secs:8.3f} s")


if __name__ == "__main__":
    main()
