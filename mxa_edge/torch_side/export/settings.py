"""``ExportConfig``: the defaults of ``export_run``'s options, torch-free at import.

The CLI reads its option defaults here (as ``train`` reads ``TrainConfig``'s) so that starting
``mxa-edge`` never imports the export pipeline; ``export_run``'s keyword defaults are these
fields, and ``tests/test_architecture.py`` checks that the CLI's and the library's agree. The
gate's bounds are ``decision.gate.DEFAULT_GATE``'s, not repeated here.
"""

from __future__ import annotations

from dataclasses import dataclass

from mxa_edge.formats.precision import Int8Scheme
from mxa_edge.torch_side.export.sensitivity import DEFAULT_BUDGET


@dataclass(frozen=True)
class ExportConfig:
    target: str = "onnx"
    int8: bool = False
    qat: bool = False
    fp16: bool = False
    calib_size: int = 300  # stratified training images in the default calibration set
    calib_method: str = "minmax"
    seed: int = 0
    qat_epochs: int = 1
    qat_lr: float = 1e-5
    n_boot: int = 1000  # paired bootstrap resamples of the gate's CIs
    max_noise: float = DEFAULT_BUDGET  # the mixed-precision analysis' simulated logit-noise budget
    static_batch: int | None = None
    int8_scheme: Int8Scheme | str = Int8Scheme.PORTABLE


EXPORT_DEFAULTS = ExportConfig()
