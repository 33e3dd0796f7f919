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

import mxa_edge

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mxa_edge"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _import_targets(path: Path, name: str, modules: dict, nested: bool) -> set[str]:
    """Every module ``name`` imports: mxa_edge modules resolved (``from a import b`` names module
    a.b when it is one), others as written. ``nested``: imports inside functions count too (they
    run later, but they are dependencies all the same); ``if TYPE_CHECKING:`` blocks never run."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree) if nested else tree.body:
        if id(node) in skip:
            continue
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
        found.update(t for t in targets if t != name)
    return found


def _top_level_imports(path: Path, name: str, modules: dict, nested: bool = True) -> set[str]:
    """mxa_edge modules imported by ``name`` (function-level imports included unless ``nested``
    is False: a circle through a function-level import is a circle in the design all the same)."""
    return {t for t in _import_targets(path, name, modules, nested) if t in modules}


def test_no_import_cycle_inside_the_package():
    modules = _modules()
    graph = {name: _top_level_imports(path, name, modules) for name, path in modules.items()}
    # The one declared inversion: the core reaches the torch side only through the door, inside
    # its functions (test_the_core_never_imports_the_torch_side); that edge is not a circle of
    # the design, every other one is.
    graph[DOOR] = {t for t in graph[DOOR] if not _on_torch_side(t)}
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
    # ... and through an import inside a function, which the module-level walk alone would miss
    b.write_text("def f():\n    import mxa_edge.a\n")
    assert _top_level_imports(b, "mxa_edge.b", modules) == {"mxa_edge.a"}
    assert _top_level_imports(b, "mxa_edge.b", modules, nested=False) == set()


# The torch side: what needs the [train] extra. Everything else in mxa_edge is the torch-free
# core, which imports neither these packages nor torch & co., at module level or in a function,
# except through the one door, mxa_edge/torch_side/__init__.py (itself torch-free at import).
TORCH_SIDE = "mxa_edge.torch_side."  # every subpackage and module under it; the package itself is the door
TORCH_LIBS = frozenset({"torch", "torchvision", "timm", "torchxrayvision", "nncf", "onnxscript", "safetensors"})
DOOR = "mxa_edge.torch_side"


def _on_torch_side(module: str) -> bool:
    return module.startswith(TORCH_SIDE) or module.split(".")[0] in TORCH_LIBS


def _boundary_crossings(modules: dict) -> dict[str, list[str]]:
    """{core module: the torch-side modules it imports}, the door and the debt list aside."""
    out = {}
    for name, path in modules.items():
        if _on_torch_side(name) or name == DOOR:
            continue
        crossing = sorted(t for t in _import_targets(path, name, modules, nested=True) if _on_torch_side(t))
        if crossing:
            out[name] = crossing
    return out


def test_the_core_never_imports_the_torch_side():
    modules = _modules()
    crossings = _boundary_crossings(modules)
    assert not crossings, "core modules import the torch side outside mxa_edge/torch_side/__init__.py: " + "; ".join(
        f"{k} -> {', '.join(v)}" for k, v in crossings.items()
    )
    # The door imports the torch side only inside its functions: importing it costs nothing.
    door = _import_targets(modules[DOOR], DOOR, modules, nested=False)
    assert not [t for t in door if _on_torch_side(t)], door


# The tree shows the design: the torch side is one folder, and mxa_edge's root holds only the
# package marker and the label list (the one source of truth everything reads); every other
# module sits in the package named for its concern.
ROOT_MODULES = {"__init__.py", "labels.py"}
CORE_PACKAGES = {"formats", "decision", "imaging", "support", "data", "backends", "runtime", "report", "bench"}


def test_the_folder_tree_shows_the_two_sides():
    pkg = Path(mxa_edge.__file__).parent
    assert {p.name for p in pkg.glob("*.py")} == ROOT_MODULES
    folders = {p.name for p in pkg.iterdir() if (p / "__init__.py").is_file()}
    assert folders == CORE_PACKAGES | {"torch_side"}, folders
    torch_side = {p.name for p in (pkg / "torch_side").iterdir() if (p / "__init__.py").is_file()}
    assert torch_side == {"models", "training", "export"}, torch_side


def test_the_boundary_check_finds_a_function_level_crossing(tmp_path):
    core = tmp_path / "core.py"
    core.write_text("def f():\n    from mxa_edge.torch_side.models.weights import load_run\n    import torch\n")
    modules = {"mxa_edge.core": core, "mxa_edge.torch_side.models.weights": tmp_path / "w.py"}
    assert _boundary_crossings(modules) == {"mxa_edge.core": ["mxa_edge.torch_side.models.weights", "torch"]}


def test_runtime_path_never_imports_torch():
    code = (
        "import sys, mxa_edge.formats, mxa_edge.backends, mxa_edge.runtime.engines, mxa_edge.runtime.predict, "
        "mxa_edge.decision.gate, mxa_edge.decision.scoring, mxa_edge.bench, mxa_edge_cli.app; "
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
    assert hits == ["mxa_edge/decision/gate.py:" + hits[0].split(":")[1]] if hits else False, hits


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
    from mxa_edge.decision.evaluation import evaluate_model
    from mxa_edge.formats import RunRecord, load_artifact
    from mxa_edge.runtime.predict import Predictor
    from mxa_edge.torch_side.export import export_run

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
    from mxa_edge.support.errors import ConfigError

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


# ------------------------------------------------------------------ the CLI reads the library's defaults

# `train`: TrainConfig fields without an option, on purpose (library callers and benchmarks set them).
TRAIN_FIELDS_WITHOUT_OPTION = {
    "teacher_lr",  # the teacher's fine-tuning recipe (training.teacher)
    "min_lr",  # the paper's optimiser recipe: cosine floor, AdamW decay, warmup, gradient clipping
    "weight_decay",
    "warmup_epochs",
    "agc_clip",
    "ema_decay",  # None: derived from the run length (config.ema_decay_for); --no-ema turns it off
    "workers",  # image decoding threads
    "limit_train",  # subsets for tests and benchmarks
    "limit_valid",
    "n_boot",  # bootstrap resamples of the held-out metrics
    "extra",  # free-form notes a library caller records in the run
}
# On/off flags: off unless given. CLI name -> (TrainConfig field, the value the flag sets). Leaving the flag
# off must mean the library's default, so the flag's default (False) is compared with `field == value`.
TRAIN_FLAGS = {
    "no_mxa": ("mxa", False),
    "no_kd": ("kd", False),
    "kd_online": ("kd_online", True),
    "blank_mask": ("blank", "mask"),
    "include_lateral": ("frontal_only", False),
    "class_balanced": ("class_balanced", True),
    "no_calibrate": ("calibrate", False),
    "no_ema": ("ema", False),
    "resume": ("resume", True),
    "channels_last": ("channels_last", True),
    "compile_model": ("compile", True),
}
TRAIN_RENAMED = {}  # value options whose CLI name differs from their TrainConfig field: none today
# Options with a default of their own, on purpose.
TRAIN_OWN_DEFAULT = {"out"}  # None: a fresh runs/<date>-<time> per run, not TrainConfig's runs/default
# the DDP launcher, the output sink, and the preset (a bundle of field values, recorded in ``extra``): no field
TRAIN_CLI_ONLY = {"devices", "json_out", "quiet", "preset"}

# `export`: gate options -> GateSpec fields; the rest map to export_run's keywords.
EXPORT_GATE = {
    "max_macro_drop": "max_macro_drop",
    "max_drop": "max_drop",
    "max_sens_drop": "max_sens_drop",
    "max_spec_drop": "max_spec_drop",
    "min_agreement": "min_agreement",
    "max_ece_increase": "max_ece_increase",
    "max_guard_flag_increase": "max_guard_flag_increase",
    "gate_on": "mode",
    "gate_subgroups": "subgroups",
}
EXPORT_RENAMED = {"run": "run_dir", "out": "out_dir"}
EXPORT_KEYWORDS_WITHOUT_OPTION = {
    "max_macro_drop",  # export_run's own AUC bounds: the CLI passes the whole `gate` instead
    "max_drop",
    "gate",  # built from the gate options above
    "qat_epochs",  # the QAT recipe
    "qat_lr",
    "sign_password",  # $MXA_EDGE_SIGNING_KEY_PASSWORD: never a flag (it would show in the process list)
    "progress",  # the CLI's output sink
}
EXPORT_CLI_ONLY = {"json_out", "quiet"}


def _cli_params(command: str) -> list:
    import typer.main

    from mxa_edge_cli.app import app

    return list(typer.main.get_command(app).commands[command].params)


def _default_mismatches(params, expected: dict) -> list[str]:
    """``expected``: CLI parameter name -> the library's default. One line per parameter that is missing
    or defaults to something else (enum members compare by value)."""
    from enum import Enum

    def plain(v):
        return v.value if isinstance(v, Enum) else v

    by_name = {p.name: p for p in params}
    problems = []
    for name, want in expected.items():
        p = by_name.get(name)
        if p is None:
            problems.append(f"{name}: no such option")
        elif plain(p.default) != plain(want) or type(plain(p.default)) is not type(plain(want)):
            problems.append(f"{'/'.join(p.opts)} defaults to {plain(p.default)!r}, the library to {plain(want)!r}")
    return problems


def test_train_options_default_to_train_config():
    import dataclasses

    from mxa_edge.torch_side.training.config import TrainConfig

    cfg, params = TrainConfig(), _cli_params("train")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    expected, covered = {}, set()
    for p in params:
        if p.name in TRAIN_CLI_ONLY:
            continue
        if p.name in TRAIN_FLAGS:
            field, when_given = TRAIN_FLAGS[p.name]
            expected[p.name] = getattr(cfg, field) == when_given
        else:
            field = TRAIN_RENAMED.get(p.name, p.name)
            assert field in fields, f"train --{p.name}: no TrainConfig field of that name (map it in TRAIN_RENAMED)"
            if p.name not in TRAIN_OWN_DEFAULT:
                expected[p.name] = getattr(cfg, field)
        covered.add(field)
    assert not _default_mismatches(params, expected), _default_mismatches(params, expected)
    assert fields - covered == TRAIN_FIELDS_WITHOUT_OPTION, (
        "TrainConfig fields without a `train` option (add one, or list it in TRAIN_FIELDS_WITHOUT_OPTION): "
        f"{sorted(fields - covered - TRAIN_FIELDS_WITHOUT_OPTION)}; listed but now an option: "
        f"{sorted(TRAIN_FIELDS_WITHOUT_OPTION & covered)}"
    )


def test_a_preset_never_overrides_an_option_the_user_gave():
    from mxa_edge.torch_side.training.config import PRESETS, TrainConfig, with_preset
    from mxa_edge_cli.commands import train as train_cmd

    # The CLI tells given options from defaults by their TrainConfig field: its flag map is this file's.
    assert train_cmd._FIELD_OF_FLAG == {cli: f for cli, (f, _) in TRAIN_FLAGS.items() if cli != f}
    preset = PRESETS["small-real"].values
    cfg = with_preset(TrainConfig(), "small-real", given={"image_size", "kd"})
    assert cfg.image_size == TrainConfig.image_size and cfg.kd == TrainConfig.kd  # the user's
    assert cfg.epochs == preset["epochs"] and cfg.class_balanced == preset["class_balanced"]  # the preset's
    assert cfg.extra["preset"] == "small-real"
    assert set(preset) <= {f for f in TrainConfig.__dataclass_fields__}


def test_export_options_default_to_the_gate_and_export_run():
    import inspect

    from mxa_edge.decision.gate import DEFAULT_GATE
    from mxa_edge.torch_side.export.pipeline import export_run
    from mxa_edge.torch_side.export.sensitivity import DEFAULT_BUDGET

    keywords = inspect.signature(export_run).parameters
    params = _cli_params("export")
    expected, covered = {}, set()
    for p in params:
        if p.name in EXPORT_CLI_ONLY:
            continue
        if p.name in EXPORT_GATE:
            expected[p.name] = getattr(DEFAULT_GATE, EXPORT_GATE[p.name])
            continue
        keyword = EXPORT_RENAMED.get(p.name, p.name)
        assert keyword in keywords, f"export --{p.name}: no export_run keyword of that name (map it)"
        covered.add(keyword)
        if keywords[keyword].default is not inspect.Parameter.empty:  # RUN is required on both sides
            expected[p.name] = keywords[keyword].default
    assert not _default_mismatches(params, expected), _default_mismatches(params, expected)
    assert set(keywords) - covered == EXPORT_KEYWORDS_WITHOUT_OPTION, sorted(set(keywords) - covered)
    assert keywords["max_noise"].default == DEFAULT_BUDGET  # the sensitivity analysis owns its budget


def test_the_default_check_finds_a_wrong_default():
    # The comparison above, on a fake option whose default is not the library's, reports it.
    from enum import Enum
    from types import SimpleNamespace

    from mxa_edge.decision.gate import DEFAULT_GATE, MODES

    Mode = Enum("Mode", {m: m for m in MODES}, type=str)
    fake = [
        SimpleNamespace(name="max_drop", opts=["--max-drop"], default=0.05),
        SimpleNamespace(name="gate_on", opts=["--gate-on"], default=Mode("point")),
        SimpleNamespace(name="batch_size", opts=["--batch-size"], default=64.0),
    ]
    problems = _default_mismatches(
        fake, {"max_drop": DEFAULT_GATE.max_drop, "gate_on": "point", "batch_size": 64, "epochs": 16}
    )
    assert problems == [
        "--max-drop defaults to 0.05, the library to 0.02",
        "--batch-size defaults to 64.0, the library to 64",
        "epochs: no such option",
    ]
