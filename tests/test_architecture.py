"""The design's contracts: one registry for targets, one reader for formats, one gate rule, no
import cycles, and a runtime path without torch. See ARCHITECTURE.md."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mxa_edge"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _top_level_imports(path: Path, name: str, modules: dict) -> set[str]:
    """mxa_edge modules imported when ``name`` is imported: module-level statements only (an
    import inside a function runs later, when both modules are loaded, and cannot cycle)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.parse(path.read_text()).body:
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        for t in targets:
            if t in modules and t != name:
                found.add(t)
    return found


def test_no_import_cycle_inside_the_package():
    modules = _modules()
    graph = {name: _top_level_imports(path, name, modules) for name, path in modules.items()}
    # Importing a.b.c also runs a/__init__ and a/b/__init__, unless the importer lives inside them.
    for name, deps in graph.items():
        for dep in list(deps):
            parts = dep.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent in modules and not (name == parent or name.startswith(parent + ".")):
                    deps.add(parent)
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, " | ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    # The walker above, on two modules that import each other, reports them.
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from mxa_edge.b import x\n")
    b.write_text("import mxa_edge.a\n")
    modules = {"mxa_edge.a": a, "mxa_edge.b": b}
    assert _top_level_imports(a, "mxa_edge.a", modules) == {"mxa_edge.b"}
    assert _top_level_imports(b, "mxa_edge.b", modules) == {"mxa_edge.a"}


def test_runtime_path_never_imports_torch():
    code = (
        "import sys, mxa_edge.formats, mxa_edge.backends, mxa_edge.runtime.engines, mxa_edge.runtime.predict, "
        "mxa_edge.gate, mxa_edge.scoring, mxa_edge.bench, mxa_edge_cli.app; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _code_files():
    for root in (PACKAGE, REPO / "cli"):
        yield from root.rglob("*.py")


def test_only_formats_reads_manifests_and_data_policy():
    """No module outside mxa_edge/formats names manifest.json / metrics.json or reads a data-policy
    key: they go through RunRecord, ArtifactManifest and DataSelection."""
    policy = re.compile(r"""(\[|\.get\()\s*["'](uncertainty|blank|frontal_only|ap_pa)["']""")
    # `data info` counts each label value, blanks included: a count, not the blank-label policy.
    allowed = {("cli/commands/data.py", 'str(v["blank"])')}
    offenders = []
    for path in _code_files():
        if (PACKAGE / "formats") in path.parents:
            continue
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and node.value in ("manifest.json", "metrics.json"):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} names {node.value}")
        for i, line in enumerate(text.splitlines(), 1):
            if policy.search(line) and not any(
                str(path.relative_to(REPO)) == f and snippet in line for f, snippet in allowed
            ):
                offenders.append(f"{path.relative_to(REPO)}:{i} reads a data-policy key: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_gate_comparison_exists_once():
    rule = re.compile(r"<\s*-\s*[\w.]*(bound|drop)")
    hits = [
        f"{path.relative_to(REPO)}:{i}"
        for path in _code_files()
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if rule.search(line)
    ]
    assert hits == ["mxa_edge/gate.py:" + hits[0].split(":")[1]] if hits else False, hits


# ----------------------------------------------------------------------------- the registry

torch = pytest.importorskip("torch")
from test_export import LOOSE, tiny_run  # noqa: E402,F401  (session fixture shared)


@pytest.fixture
def toy_target():
    from toy_backend import SPEC

    from mxa_edge import backends

    backends.register(SPEC)
    yield SPEC
    backends.unregister(SPEC.name)


@pytest.mark.slow
def test_a_toy_backend_goes_through_export_verify_predict_eval_and_bench(tiny_run, toy_target, tmp_path):  # noqa: F811
    """A target defined in tests/ alone (toy_backend.py), registered through the registry, is
    exported and gated, then verified, predicted with, evaluated and benchmarked like a built-in one."""
    from mxa_edge.bench import run_bench
    from mxa_edge.evaluation import evaluate_model
    from mxa_edge.export import export_run
    from mxa_edge.formats import RunRecord, load_artifact
    from mxa_edge.runtime.predict import Predictor

    out = tmp_path / "toy"
    res = export_run(tiny_run, "torchscript", out, n_boot=0, **LOOSE)
    # FP32 TorchScript of the same fused model: the gate sees no drift at all.
    assert res.passed and res.artifact == out and abs(res.summary["macro_delta"]) < 1e-6
    art = load_artifact(out)
    assert art.runtime == "torchscript" and art.entry.name == "model.ts"
    assert res.drift["gated_runtime"] == "torchscript" and (out / "drift.json").is_file()

    images = RunRecord.load(tiny_run).data.read("valid").paths[:3]
    ref = export_run(tiny_run, "onnx", tmp_path / "onnx", n_boot=0, **LOOSE).artifact
    toy = list(Predictor(out, threads=1).predict_files(images))
    onnx = list(Predictor(ref, threads=1).predict_files(images))
    got = np.array([list(r.probabilities.values()) for r in toy])
    want = np.array([list(r.probabilities.values()) for r in onnx])
    assert got.shape == (3, 14) and np.abs(got - want).max() < 1e-4
    assert np.allclose([r.roi_boxes for r in toy], [r.roi_boxes for r in onnx], atol=1e-2)

    from mxa_edge.runtime.verify import verify_artifact

    assert verify_artifact(art).passed  # its golden vectors reproduce through the toy runtime
    metrics = evaluate_model(out, n_boot=0)
    assert metrics["macro_auc"] == pytest.approx(res.summary["macro_auc_new"], abs=1e-6)

    bench = run_bench([out], batches=(1,), threads=1, seconds=0.2, warmup=0, rounds=1, peak_quick=True)
    (row,) = [r for r in bench["rows"] if r["backend"] == "TorchScript"]
    assert row["status"] == "pass" and row["precision"] == "FP32" and row["p50_ms"] > 0


def test_registry_refuses_clashes_and_unknown_targets(toy_target):
    from dataclasses import replace

    from mxa_edge import backends
    from mxa_edge.errors import ConfigError

    with pytest.raises(ConfigError, match="already registered"):
        backends.register(toy_target)
    with pytest.raises(ConfigError, match="runtime 'onnxruntime' already belongs to target 'onnx'"):
        backends.register(replace(toy_target, name="other", runtime="onnxruntime"))
    with pytest.raises(ConfigError, match="expected one of onnx, openvino, tensorrt, torchscript"):
        backends.get("coreml")
    with pytest.raises(ConfigError, match="exports FP32, not INT8"):
        backends.check_options(toy_target, backends.get("onnx").precisions[1])


def test_private_names_are_not_imported_across_packages():
    """``from a.b import _name`` only from inside package ``a.b``'s own parent package."""
    offenders = []
    for path in _code_files():
        rel = path.relative_to(REPO).with_suffix("").parts
        importer_pkg = ".".join(("mxa_edge_cli",) + rel[1:-1]) if rel[0] == "cli" else ".".join(rel[:-1])
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                source_pkg = node.module.rsplit(".", 1)[0]
                if private and not (importer_pkg + ".").startswith(source_pkg + "."):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {private} from {node.module}")
    assert not offenders, "\n".join(offenders)
