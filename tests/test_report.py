"""mxa-edge report: one self-contained HTML page per exported artifact.

A tiny run is trained once (real training pipeline, 1 epoch, no teacher) on a copy of the
session's phantom dataset whose validation split has NO Fracture positives, so one finding is
one-class; it is exported with the real ``export_run`` (ONNX, a gate v2 spec too loose to
fail). The page is checked as HTML (structure, nothing external) and, where Debian's chromium
is installed, in a real headless browser (DOM, console, screenshot). The gate v2 rendering
(a finding failing on sensitivity, gated subgroups, accuracy control, no drift.json) is
checked on copies of that artifact whose drift.json is rebuilt by ``drift.gate`` from
hand-made probabilities on the real held-out labels (drift.json is not covered by the
artifact digest; the manifest, when edited, is re-signed).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("matplotlib")

from conftest import tiny_config  # noqa: E402

from mxa_edge.decision.gate import GateSpec  # noqa: E402
from mxa_edge.labels import CHEXPERT_LABELS  # noqa: E402

ONE_CLASS = "Fracture"
N_BOOT = 100


def _one_class_copy(root: Path, dest: Path) -> Path:
    """``root`` with every Fracture label in valid.csv set to 0: images shared by symlink."""
    new = dest / root.name
    new.mkdir(parents=True)
    for sub in ("train", "valid"):
        (new / sub).symlink_to(root / sub, target_is_directory=True)
    for name in ("train.csv", "boxes.csv"):
        shutil.copy(root / name, new / name)
    with (root / "valid.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    with (new / "valid.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for row in rows:
            w.writerow({**row, ONE_CLASS: "0.0"})
    return new


@pytest.fixture(scope="module")
def artifact(phantom_root, tmp_path_factory) -> Path:
    from mxa_edge.torch_side.export import export_run
    from mxa_edge.torch_side.training.pipeline import train

    base = tmp_path_factory.mktemp("report")
    root = _one_class_copy(phantom_root, base / "data")
    run = base / "run"
    # One SGD step is enough: the report is under test, not the model.
    train(tiny_config(root, run, epochs=1, kd=False, teacher="none", n_boot=0, limit_train=32))
    loose = GateSpec(
        max_macro_drop=1,
        max_drop=1,
        max_sens_drop=1,
        max_spec_drop=1,
        min_agreement=0,
        max_ece_increase=1,
        max_guard_flag_increase=1,
    )
    return export_run(run, "onnx", gate=loose, n_boot=50).artifact


@pytest.fixture(scope="module")
def report(artifact, tmp_path_factory) -> Path:
    from mxa_edge.report import build_report

    out = tmp_path_factory.mktemp("html") / "report.html"
    return build_report(artifact, out=out, gallery=3, n_boot=N_BOOT)


class _Page(HTMLParser):
    """Tags with their attributes, table rows per table id, and the text."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.tables: dict[str, list[str]] = {}
        self._table: list[str | None] = []
        self._section: list[str] = []
        self._row: list[str] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table":
            self._table.append(a.get("id"))
            if a.get("id"):
                self.tables[a["id"]] = []
        elif tag in ("tbody", "thead", "tfoot"):
            self._section.append(tag)
        elif tag == "tr" and self._table and self._table[-1] and self._section and self._section[-1] == "tbody":
            self._row = []

    def handle_endtag(self, tag):
        if tag == "table" and self._table:
            self._table.pop()
        elif tag in ("tbody", "thead", "tfoot") and self._section:
            self._section.pop()
        elif tag == "tr" and self._row is not None:
            self.tables[self._table[-1]].append(" ".join(self._row))
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._row is not None:
            self._row.append(data.strip())


def _parse(html: str) -> _Page:
    p = _Page()
    p.feed(html)
    return p


def _assert_self_contained(html: str, page: _Page) -> None:
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I), "external src/href"
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", html, re.I), "external url() in CSS"
    assert "@import" not in html
    tags = {t for t, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed"}
    imgs = [a.get("src", "") for t, a in page.tags if t == "img"]
    assert imgs and all(s.startswith("data:image/png;base64,") for s in imgs)


def test_report_structure(report, artifact):
    from mxa_edge.formats import load_artifact
    from mxa_edge.report.records import artifact_sha256

    html = report.read_text(encoding="utf-8")
    page = _parse(html)
    _assert_self_contained(html, page)

    rows = page.tables["pathology-table"]
    assert len(rows) == 14
    for name, row in zip(CHEXPERT_LABELS, rows):
        assert row.startswith(name)
    fracture = rows[CHEXPERT_LABELS.index(ONE_CLASS)]
    assert "not evaluable" in fracture and "no positives" in fracture
    assert all(r.endswith("PASS") for r in rows)  # loose gate: nothing can fail (Fracture: specificity, agreement)
    evaluable = [r for r in rows if "not evaluable" not in r]
    assert len(evaluable) == 13
    assert all(re.search(r"\d\.\d{3} – \d\.\d{3}", r) for r in evaluable)  # per-model AUC CIs present
    assert all(len(re.findall(r"[+-]\d\.\d{4} – [+-]\d\.\d{4}", r)) == 3 for r in evaluable)  # Δ AUC, sens, spec CIs

    ids = {a.get("id") for _, a in page.tags}
    assert {
        "identity",
        "per-pathology",
        "subgroups",
        "roc",
        "calibration",
        "bench",
        "gallery",
        "export-settings",
    } <= ids
    text = " ".join(page.text)
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert artifact_sha256(load_artifact(artifact)) in text
    assert manifest["model_id"] in text and manifest["source_run"]["weights_sha256"] in text
    assert manifest["source_run"]["data_fingerprint"]["valid"] in text
    assert "same images as the drift gate" in text
    assert "no benchmark supplied: run `mxa-edge bench ... --json" in text
    assert "ECE" in text
    # The decision rule replaces the flat thresholds: one row per finding, with its source.
    rule = manifest["decision"]
    decision_rows = page.tables["decision-table"]
    assert len(decision_rows) == 14 and all(f"fitted ({rule['policy']})" in r for r in decision_rows)
    assert f"{rule['thresholds']['Edema']:.4f}" in decision_rows[CHEXPERT_LABELS.index("Edema")]
    assert f"the tuning split (tune): {rule['fitted_on']['n_images']} images" in text
    assert "Labels / thresholds" not in text
    # FP32 and exported both scored here: no "unavailable" gap, 3 gallery overlays + ROC + reliability.
    assert "curves unavailable" not in text
    assert sum(1 for t, _ in page.tags if t == "img") == 2 + 4  # + ROC, reliability, input-guard scores
    assert "Dashed cyan" in text
    # The manifest, pretty-printed in a <details>.
    assert any(t == "details" for t, _ in page.tags) and '"format": "mxa-edge-artifact"' in html.replace("&quot;", '"')
    # Written atomically: nothing else left beside it, readable by others.
    assert [p.name for p in report.parent.iterdir()] == ["report.html"]
    assert report.stat().st_mode & 0o044


def _text(html: str) -> str:
    return " ".join(_parse(html).text)


def test_verdict_names_the_held_out_split(report, artifact):
    """The page says which split produced the verdict: drift.json's, with its size and fingerprint."""
    html = report.read_text(encoding="utf-8")
    drift = json.loads((artifact / "drift.json").read_text())
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert drift["split"] == "valid" and manifest["drift"]["split"] == "valid"
    fp = manifest["source_run"]["data_fingerprint"]["valid"]
    sentence = (
        f"Verdict produced by the export's drift gate on the held-out split (valid): {drift['n_images']} images, "
        f"fingerprint {fp}."
    )
    page = _parse(html)
    assert sentence in " ".join(page.text)
    assert any(a.get("id") == "verdict-split" for _, a in page.tags)  # in the header too
    assert "Accuracy control" not in " ".join(page.text)  # ONNX: none ran


def test_subgroup_section_lists_slices_with_status(report, artifact):
    drift = json.loads((artifact / "drift.json").read_text())
    slices = drift["subgroups"]
    assert slices, "the phantom valid.csv records sex, age and projection"
    page = _parse(report.read_text(encoding="utf-8"))
    rows = page.tables["subgroup-table"]
    assert len(rows) == len(slices)
    for (name, sub), row in zip(slices.items(), rows):
        assert row.startswith(f"{name} {sub['n_images']} ")
        if sub["status"] is not None:
            assert "not evaluable" in row and sub["status"] in row
        else:
            assert "PASS" in row and "FAIL" not in row
    assert any(s["status"] is not None for s in slices.values())  # "Age: <40" is too small in this phantom
    assert any(s["status"] is None for s in slices.values())
    assert "REPORTED ONLY" in " ".join(page.text)  # gate.subgroups is off in the loose spec


def test_reliability_shows_ece_before_and_after_calibration(report, artifact):
    """FP32 before (sigmoid of the logits) and after (decision rule) calibration, and the exported
    model after: the held-out ECEs the training run recorded in metrics.json, and the gate's."""
    manifest = json.loads((artifact / "manifest.json").read_text())
    metrics = json.loads((Path(manifest["source_run"]["path"]) / "metrics.json").read_text())
    cal = metrics["calibration"]
    drift = json.loads((artifact / "drift.json").read_text())
    rows = _parse(report.read_text(encoding="utf-8")).tables["calibration-table"]
    before = next(r for r in rows if r.startswith("FP32, before calibration"))
    after = next(r for r in rows if r.startswith("FP32, after calibration"))
    exported = next(r for r in rows if r.startswith("exported, after calibration"))
    assert f"ECE {cal['ece_before']:.3f} " in before
    assert f"ECE {cal['ece_after']:.3f} " in after
    assert f"ECE {drift['ece_new']:.3f} " in exported
    gate_row = next(r for r in rows if r.startswith("At the drift gate"))
    assert f"FP32 {drift['ece_ref']:.3f} → exported {drift['ece_new']:.3f}" in gate_row


def _rebuilt_drift(artifact, spec, shifted: str, shift: float = 3.0) -> dict:
    """A drift table from ``drift.gate`` on the real held-out labels and slices: made-up
    FP32 probabilities, and the exported model's the same except ``shifted``'s logits lowered by
    ``shift`` (its ranking, so its AUC, unchanged; its sensitivity at the threshold falls)."""
    import numpy as np

    from mxa_edge.data.subgroups import subgroup_rows
    from mxa_edge.decision.drift import gate
    from mxa_edge.decision.metrics import sigmoid
    from mxa_edge.formats import load_artifact

    art = load_artifact(artifact)
    valid = art.manifest.source_run.selection().load("valid", art.preprocess)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=valid.targets.shape) + 1.5 * (valid.targets == 1)
    moved = logits.copy()
    moved[:, CHEXPERT_LABELS.index(shifted)] -= shift
    report = gate(
        valid.targets,
        valid.mask,
        sigmoid(logits),
        sigmoid(moved),
        thresholds=art.decision.threshold_array(),
        spec=spec,
        n_boot=50,
        subgroups=subgroup_rows(valid.split),
        split="valid",
    )
    return report.table


def test_finding_failing_on_sensitivity_and_gated_subgroups(artifact, tmp_path):
    """drift.json where one finding's decisions moved but not its ranking: the row fails on
    sensitivity (and only there), the AUC Δ is 0, the slices are gated and fail with their
    reasons; accuracy control, recorded in the manifest, is said to be fitted on the tuning split."""
    from mxa_edge.decision.gate import checks
    from mxa_edge.formats import ArtifactManifest
    from mxa_edge.report import build_report

    target = "Edema"
    spec = GateSpec(min_agreement=0.0, max_ece_increase=1.0, subgroups=True)  # sensitivity is what can fail
    table = _rebuilt_drift(artifact, spec, target)
    failing = [c for c in checks(table, spec) if c.failed and c.scope == target]
    assert [c.metric for c in failing] == ["sensitivity"]  # the premise: the gate fails it on sensitivity only
    assert table["per_label"][target]["delta"] == 0.0 and not table["passed"]

    moved = tmp_path / "artifact"
    shutil.copytree(artifact, moved)
    (moved / "drift.json").write_text(json.dumps(table, indent=2))
    m = json.loads((moved / "manifest.json").read_text())
    m["quantization"] = {
        "accuracy_control": {"tool": "nncf.quantize_with_accuracy_control", "split": "tune", "n_images": 20}
    }
    ArtifactManifest.from_dict(m).save(moved)  # re-signed, as an OpenVINO export records it

    page = _parse(build_report(moved, out=tmp_path / "r.html", gallery=0, n_boot=0).read_text())
    text = " ".join(page.text)
    rows = dict(zip(CHEXPERT_LABELS, page.tables["pathology-table"]))
    row = rows[target]
    assert "FAIL" in row and "PASS" not in row
    reason = row.split("FAIL", 1)[1]
    assert failing[0].describe()[len(target) + 1 :] in reason  # "sensitivity -0.xxxx (max drop 0.0xxx)"
    assert "specificity" not in reason and "AUC" not in reason and "agreement" not in reason
    assert "+0.0000" in row  # Δ AUC: the ranking did not move
    assert all(r.endswith("PASS") for name, r in rows.items() if name != target)
    assert re.search(r"Drift gate\s+FAIL", text)

    # Subgroups: gated, each slice with its status; evaluable slices fail on the shifted finding.
    assert "GATED" in text and "failing subgroup check(s)" in text
    sub_rows = page.tables["subgroup-table"]
    assert len(sub_rows) == len(table["subgroups"])
    for (name, sub), r in zip(table["subgroups"].items(), sub_rows):
        assert r.startswith(name)
        if sub["status"] is not None:
            assert "not evaluable" in r and sub["status"] in r
        else:
            assert ("FAIL" in r) == (not sub["passed"])
            for reason in sub["failures"]:
                assert reason in r

    tune_fp = m["source_run"]["data_fingerprint"]["tune"]
    assert f"fitted on the tuning split (tune): 20 images, fingerprint {tune_fp}" in text
    assert "the verdict is the held-out gate's" in text
    assert "Verdict produced by the export's drift gate on the held-out split (valid)" in text


def test_without_drift_json_the_table_is_computed_and_judged_here(artifact, tmp_path):
    """No drift.json: the table is computed as the export computes it (calibrated probabilities,
    the artifact's thresholds, the held-out slices) and judged with the manifest's gate."""
    from mxa_edge.formats.artifact import DIGEST_FIELD, manifest_digest
    from mxa_edge.report import build_report

    moved = tmp_path / "artifact"
    shutil.copytree(artifact, moved)
    (moved / "drift.json").unlink()
    drift = json.loads((artifact / "drift.json").read_text())
    manifest = json.loads((artifact / "manifest.json").read_text())
    # An artifact written without a drift.json (not one with the file deleted: that is refused).
    m = {**manifest, "files": {k: v for k, v in manifest["files"].items() if k != "drift.json"}}
    m[DIGEST_FIELD] = manifest_digest(m)
    (moved / "manifest.json").write_text(json.dumps(m))

    page = _parse(build_report(moved, out=tmp_path / "r.html", gallery=0, n_boot=20).read_text())
    text = " ".join(page.text)
    fp = manifest["source_run"]["data_fingerprint"]["valid"]
    assert f"Verdict computed by this report on the held-out split (valid): {drift['n_images']} images, " in text
    assert f"fingerprint {fp}" in text
    assert "Bounds from the manifest's drift summary" in text
    rows = page.tables["pathology-table"]
    assert len(rows) == 14 and all(r.endswith("PASS") for r in rows)
    sub_rows = page.tables["subgroup-table"]
    assert len(sub_rows) == len(drift["subgroups"])
    assert all(r.startswith(name) for name, r in zip(drift["subgroups"], sub_rows))


def test_table_judged_by_the_gate_with_its_recorded_or_default_spec():
    """No training: the table module on hand-made probabilities. Without any recorded bounds the
    default gate judges (said in a note); a drift.json whose ``passed`` disagrees with its own
    table is flagged, and the table's verdict is the one shown."""
    import numpy as np

    from mxa_edge.decision.drift import gate
    from mxa_edge.decision.gate import DEFAULT_GATE, verdict
    from mxa_edge.report.tables import FAIL, PASS, pathology_table

    rng = np.random.default_rng(1)
    y = (rng.random((120, 14)) < 0.4).astype(np.float32)
    mask = np.ones_like(y)
    ref = 1 / (1 + np.exp(-(rng.normal(size=y.shape) + 2 * y)))
    new = ref.copy()
    new[:, 3] = np.clip(new[:, 3] - 0.3, 0, 1)  # Lung Opacity: decisions move
    computed = dict(targets=y, mask=mask, ref_probs=ref, new_probs=new, thresholds=np.full(14, 0.5), subgroups={})

    t = pathology_table(CHEXPERT_LABELS, None, None, computed, None, 0, 0)
    assert t.spec == DEFAULT_GATE and t.computed_here and t.split == "valid"
    assert any("DEFAULT_GATE" in n for n in t.notes)
    lung = t.rows[3]
    assert lung.verdict == FAIL and "sensitivity" in {c.metric for c in lung.failures}
    assert t.passed is False and t.passed == verdict(gate(y, mask, ref, new, n_boot=0).table, DEFAULT_GATE).passed

    recorded = gate(y, mask, ref, ref, n_boot=0).table  # identical models: passes
    assert recorded["passed"] is True
    tampered = {**recorded, "passed": False}
    t = pathology_table(CHEXPERT_LABELS, tampered, None, {}, None, 0, 0)
    assert t.passed is True and all(r.verdict == PASS for r in t.rows)
    assert any("drift.json records the export as failed" in n for n in t.notes)
    assert t.spec_source == "drift.json" and not t.computed_here


def test_cli_with_bench_json_rendered_defensively(artifact, tmp_path):
    """`mxa-edge report --bench --json` through the CLI; the bench file has odd and missing fields."""
    from typer.testing import CliRunner

    from mxa_edge_cli.app import app

    bench = tmp_path / "bench.json"
    bench.write_text(
        json.dumps(
            {
                "rows": [
                    {
                        "backend": "onnxruntime",
                        "precision": "fp32",
                        "status": "pass",
                        "latency_ms": {"p50": 1.25, "p90": 1.5, "p99": 2.0},
                        "throughput_img_s": 800.0,
                        "gflops": 0.012,
                        "macro_auc": 0.49,
                    },
                    {"backend": "tensorrt", "precision": "int8", "status": "failed: TensorRT is not installed"},
                    "not a row",
                ],
                "compute_bound": {"peak_gflops": 100.0, "bound_img_s": 8333.3},
                "machine": {"cpu": "test cpu", "cores": 2},
                "schema": 1,
            }
        )
    )
    out = tmp_path / "cli.html"
    args = [
        "report",
        str(artifact),
        "--bench",
        str(bench),
        "--out",
        str(out),
        "--gallery",
        "0",
        "--n-boot",
        "0",
        "--json",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["report"] == str(out) and payload["bytes"] == out.stat().st_size

    html = out.read_text()
    page = _parse(html)
    _assert_self_contained(html, page)
    assert len(page.tables["bench-table"]) == 2
    text = " ".join(page.text)
    for needle in (
        "latency_ms.p50",
        "1.25",
        "failed: TensorRT is not installed",
        "peak_gflops",
        "test cpu",
        "row 2 is a str",
    ):
        assert needle in text
    assert "no benchmark supplied" not in text
    assert "curves unavailable" not in text


def test_bad_bench_and_bad_data_are_user_errors(artifact, tmp_path):
    from mxa_edge.report import build_report
    from mxa_edge.support.errors import ConfigError, DatasetError

    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a JSON file"):
        build_report(artifact, bench=tmp_path / "bad.json", out=tmp_path / "r.html")
    with pytest.raises(DatasetError):
        build_report(artifact, data=tmp_path / "nowhere", out=tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_gaps_are_stated_when_the_source_run_is_gone(artifact, tmp_path):
    """An artifact copied away from its run: FP32 curves unavailable with why; without --data no images."""
    from mxa_edge.formats import ArtifactManifest
    from mxa_edge.report import build_report

    moved = tmp_path / "artifact"
    shutil.copytree(artifact, moved)
    m = json.loads((moved / "manifest.json").read_text())
    data_root = json.loads((Path(m["source_run"]["path"]) / "manifest.json").read_text())["data"]["root"]
    m["source_run"]["path"] = str(tmp_path / "gone-run")
    m["source_run"]["data"]["root"] = str(tmp_path / "gone-data")  # the artifact carries its data policy
    ArtifactManifest.from_dict(m).save(moved)  # as it would read on another machine (re-signed)

    text = " ".join(_parse(build_report(moved, out=tmp_path / "a.html", gallery=0, n_boot=0).read_text()).text)
    assert "pass --data" in text and "is not on this machine" in text
    assert "not evaluable" in text  # the table still comes from drift.json

    html = build_report(moved, data=data_root, out=tmp_path / "b.html", gallery=1, n_boot=0).read_text()
    page = _parse(html)
    text = " ".join(page.text)
    assert "FP32 (PyTorch, source run) curves unavailable" in text and "not on this machine" in text
    assert sum(1 for t, _ in page.tags if t == "img") == 2 + 2  # exported ROC + reliability, input-guard scores
    assert len(page.tables["pathology-table"]) == 14


def _chromium() -> str:
    for name in ("/usr/bin/chromium", "chromium"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is absent: install Debian's chromium package to run the browser check")


def test_report_opens_in_headless_chromium(report, tmp_path):
    exe = _chromium()
    flags = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    url = report.absolute().as_uri()
    env = {**os.environ, "HOME": str(tmp_path)}
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=90, env=env)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = _parse(dom.stdout)
    assert len(page.tables["pathology-table"]) == 14
    assert "not evaluable" in " ".join(page.text)
    for bad in ("Failed to load resource", "Uncaught", "net::ERR_", "Refused to load"):
        assert bad not in dom.stderr, [ln for ln in dom.stderr.splitlines() if bad in ln]

    png = tmp_path / "report.png"
    shot = subprocess.run(
        flags + [f"--screenshot={png}", "--window-size=1280,3000", "--hide-scrollbars", url],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (1280, 3000)
        gray = im.convert("L")
        lo, hi = gray.getextrema()
        assert hi - lo > 100 and len(gray.getcolors(1 << 16) or range(300)) > 50  # rendered, not blank
