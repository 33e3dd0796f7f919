"""A toy export target for the registry test: TorchScript files run by TorchScript.

Everything a target needs, in one module and nothing else: an exporter (torch side) and an
engine (here it needs torch too, which is fine for a test target; a real target keeps its
engine torch-free). Registered only by the test that uses it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from mxa_edge.backends import BackendOutput, BackendSpec, Engine, ExportOptions, check_batch
from mxa_edge.formats import Precision
from mxa_edge.formats.precision import FP32

FILE = "model.ts"


class TorchScriptExporter:
    def available(self) -> tuple[bool, str]:
        return True, ""

    def export(self, model, example, out_dir: Path, opts: ExportOptions) -> BackendOutput:
        import torch

        from mxa_edge.torch_side.export.prepare import AuxOutputs

        wrapper = AuxOutputs(model).eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated; fine for a toy
            traced = torch.jit.trace(wrapper, example, check_trace=False)
        traced.save(str(Path(out_dir) / FILE))
        opts.notes["output_names"] = list(wrapper.output_names)
        return BackendOutput([FILE], FP32)


class TorchScriptEngine(Engine):
    name = "torchscript"

    def __init__(self, path: Path, threads: int | None = None):
        import torch

        self.torch = torch
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self.module = torch.jit.load(str(path)).eval()
        # The exported graph's outputs, in AuxOutputs' order (the model under test has MXA).
        self.output_names = ["logits", "roi", "attention", "attention_box", "features"]

    def run(self, batch):
        with self.torch.no_grad():
            outs = self.module(self.torch.from_numpy(check_batch(batch)))
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        return {n: np.asarray(o.numpy()) for n, o in zip(self.output_names, outs)}


def open_torchscript(model_file: Path, *, precision=None, threads=None, cache=True) -> TorchScriptEngine:
    return TorchScriptEngine(model_file, threads)


SPEC = BackendSpec(
    name="torchscript",
    runtime="torchscript",
    display="TorchScript",
    files=FILE,
    exporter=TorchScriptExporter,
    engine=open_torchscript,
    precisions=(Precision.FP32,),
    cpu=True,
    order=90,
    standard_exports=(Precision.FP32,),
)
