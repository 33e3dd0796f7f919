"""The CLI as a user runs it: help without torch, the phantom command, errors, README/CI sync."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from mxa_edge.labels import CHEXPERT_COLUMNS, CHEXPERT_LABELS

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "mxa_edge_cli.app"]


def test_import_and_help_do_not_import_torch():
    code = (
        "import sys, runpy\n"
        "import mxa_edge, mxa_edge.imaging.preprocess, mxa_edge.imaging.imageio, mxa_edge.labels\n"
        "assert 'torch' not in sys.modules, 'import mxa_edge pulled in torch'\n"
        "sys.argv = ['mxa-edge', '--help']\n"
        "try:\n    runpy.run_module('mxa_edge_cli.app', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'mxa-edge --help pulled in torch'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for cmd in ("train", "eval", "export", "bench", "predict", "data", "report"):
        assert cmd in out.stdout


def test_version():
    out = subprocess.run(CLI + ["--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("mxa-edge ")


def test_data_phantom_acceptance(tmp_path):
    out = subprocess.run(
        CLI
        + [
            "data",
            "phantom",
            "--out",
            str(tmp_path / "D"),
            "--n-train",
            "200",
            "--n-valid",
            "100",
            "--seed",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    root = Path(summary["root"])
    assert root.parent == tmp_path / "D"
    for split in ("train", "valid"):
        with open(root / f"{split}.csv", newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == list(CHEXPERT_COLUMNS)
    train_rows = list(csv.DictReader(open(root / "train.csv", newline="")))
    assert len(train_rows) == 200
    for label in CHEXPERT_LABELS:
        assert any(r[label] in ("1.0", "-1.0") for r in train_rows), f"no positive for {label}"
    assert any(r[label] == "-1.0" for r in train_rows for label in CHEXPERT_LABELS)
    assert any(r[label] == "" for r in train_rows for label in CHEXPERT_LABELS)
    assert any(r["Frontal/Lateral"] == "Lateral" for r in train_rows)
    assert (root / "boxes.csv").is_file() and summary["boxes"] > 0
    from PIL import Image

    with Image.open(root.parent / train_rows[0]["Path"]) as im:
        im.load()


def test_user_errors_are_one_line_with_exit_codes(tmp_path):
    out = subprocess.run(CLI + ["eval", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 6
    assert out.stderr.strip().startswith("error: ") and "Traceback" not in out.stderr
    assert str(tmp_path) in out.stderr
    out = subprocess.run(CLI + ["data", "info", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 4 and "Traceback" not in out.stderr


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    blocks = [b for b in readme.split("```bash")[1:]]
    test_cmd = [
        line for b in blocks for line in b.split("```")[0].splitlines() if "pytest" in line and not line.startswith("#")
    ]
    assert len(test_cmd) == 1, "README must give exactly one test command"
    assert test_cmd[0] in ci, f"`.ci/run` must run README's test command: {test_cmd[0]}"
