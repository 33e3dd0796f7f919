"""The one door from the torch-free core to the torch side.

The torch side is this package's subpackages, what needs the [train] extra: ``models``,
``training`` and ``export``, and torch itself. The core (everything else under ``mxa_edge``:
formats, decision logic, imaging, support, backends and engines, runtime, report, bench) never
imports them, at module level or inside a function (``tests/test_architecture.py`` walks every
import), except through this module, the package's ``__init__``, which is torch-free at import. So
this file is the complete list of what the core borrows from PyTorch: running a training run's
FP32 model (eval of a run folder, the report's FP32 curves, bench's PyTorch rows), creating
missing exports (bench), torch's GEMM as a compute-bound probe, its thread count and CUDA device.

Each function imports the torch side when called and raises MissingDependencyError with the
install line where torch is absent; ``installed()`` asks without importing anything.
"""

from __future__ import annotations

import importlib.util

from mxa_edge.support.errors import MissingDependencyError

INSTALL = "pip install 'mxa-edge[train]'"


def installed() -> bool:
    """Whether torch can be imported here, without importing it."""
    try:
        return importlib.util.find_spec("torch") is not None
    except ValueError:  # sys.modules["torch"] is None: imports of torch are blocked
        return False


def require(what: str) -> None:
    if not installed():
        raise MissingDependencyError(f"{what} needs PyTorch, which is not installed here: {INSTALL}")


def load_run_model(run):
    """The run's FP32 student, eval mode, weights checked (``models.weights.load_run``)."""
    require("running a training run's model")
    from mxa_edge.torch_side.models.weights import load_run

    model, _ = load_run(run)
    return model


def initial_student(run):
    """(the run's model at initialisation, None) or (None, why not): ``models.weights``."""
    if not installed():
        return None, "torch is not installed"
    from mxa_edge.torch_side.models.weights import initial_student as build

    return build(run)


def deployed_graph(model):
    """The graph the exports contain: Conv+BN fused, every output (logits, features, MXA boxes)."""
    from mxa_edge.torch_side.export.prepare import AuxOutputs, fuse_model

    return AuxOutputs(fuse_model(model)).eval()


def count_flops(model, image_size: int) -> dict:
    """FLOPs / MACs / params at batch 1, as export counts them (``export.prepare.count_flops``)."""
    from mxa_edge.torch_side.export.prepare import count_flops as count

    return count(model, image_size)


def model_runner(model, *, device=None, prepare=None, aux: bool | None = None):
    """``scoring.score``'s ``run_batch`` for a PyTorch model (``models.execution.torch_runner``)."""
    from mxa_edge.torch_side.models.execution import torch_runner

    return torch_runner(model, device=device, prepare=prepare, aux=aux)


def model_bind(model, device: str = "cpu", autocast: str | None = None):
    """bench's timed call of a PyTorch model (``models.execution.model_bind``)."""
    from mxa_edge.torch_side.models.execution import model_bind as bind

    return bind(model, device, autocast)


def gemm(n: int, dtype: str = "float32"):
    """One n x n ``torch.mm`` in ``dtype``, as a callable (bench's compute-bound probe)."""
    require("a torch GEMM probe")
    from mxa_edge.torch_side.models.execution import gemm as make

    return make(n, dtype)


def export_run(*args, **kwargs):
    """``mxa_edge.torch_side.export.export_run`` (bench's --export-missing)."""
    require("exporting")
    from mxa_edge.torch_side.export import export_run as run

    return run(*args, **kwargs)


def get_threads() -> int | None:
    """torch's intra-op thread count, or None without torch."""
    if not installed():
        return None
    import torch

    return torch.get_num_threads()


def set_threads(n: int) -> None:
    if installed():
        import torch

        torch.set_num_threads(n)


def cuda_status() -> tuple[bool, str]:
    """(whether PyTorch sees a CUDA GPU, why not)."""
    if not installed():
        return False, f"torch is not installed ({INSTALL})"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU here"
    return True, ""


def gpu_name() -> str | None:
    """The CUDA device's name when torch sees one; None otherwise."""
    ok, _ = cuda_status()
    if not ok:
        return None
    import torch

    return torch.cuda.get_device_name(0)
