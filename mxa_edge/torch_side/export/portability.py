"""Is this INT8 artifact the same model on every x86 CPU? Checked at export, recorded for verify.

Two kinds of evidence, both in the manifest's ``verification.checked_on``:

* **run**: the golden images through the exported model on the build CPU (the gate's own run)
  and, from a VNNI (or AVX-512) build machine, on the AVX2 kernel path through the qemu
  harness (``runtime.kernel_paths``), compared with verify's own tolerance;
* **bound**: the largest |int8 weight| in front of an int8 kernel (ONNX models). At most 64,
  no u8 x s8 pair sum can saturate int16 on any kernel path, so the VNNI and non-VNNI paths
  compute the same integers: what an AVX2 build machine, which cannot emulate VNNI, can say
  about VNNI CPUs.

A PORTABLE export whose AVX2-path outputs leave the tolerance is refused (it would compute
something else on an AVX2 workstation than what the gate passed); a VNNI-scheme export records
the failure and is published for VNNI/AMX CPUs only (``verify`` refuses it on AVX2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from mxa_edge.decision.guard import FEATURES_OUTPUT
from mxa_edge.formats.naming import GOLDEN_FILES
from mxa_edge.formats.precision import Int8Scheme
from mxa_edge.formats.records import GoldenRecord
from mxa_edge.runtime import kernel_paths
from mxa_edge.runtime.verify import golden_gaps
from mxa_edge.support.machine import VNNI_CLASSES, int8_kernel_class


def check_kernel_paths(
    *,
    model: Path,
    runtime: str,
    inference_precision: str | None,
    int8: bool,
    scheme: Int8Scheme,
    quantization: dict | None,
    x: np.ndarray,
    golden: GoldenRecord,
    guard,
    say: Callable[[str], None] = lambda msg: None,
) -> tuple[dict, str | None]:
    """(the ``checked_on`` record, as the drift table stores it and ``records.KernelClassChecks``
    reads it, a failure line or None)."""

    here = int8_kernel_class()
    tolerance = float(golden.tolerance.max_abs_logit)
    record = {
        "int8_scheme": scheme.value if int8 else None,
        "build_class": here,
        "classes": {here: {"how": "native (the drift gate's run)", "checked": True, "max_abs_logit": 0.0}},
    }
    extent = (quantization or {}).get("max_abs_int8_weight")
    if extent is not None:
        record["max_abs_int8_weight"] = int(extent)
        record["saturation_free"] = bool(extent <= Int8Scheme.PORTABLE.max_weight)
    if not int8:
        return record, None  # float kernels: no saturating integer path to check
    if here == "avx2":
        record["classes"]["avx512-vnni"] = {
            "how": "not reachable from an AVX2 CPU (QEMU has no AVX-512)",
            "checked": False,
            **(
                {"bound": f"every int8 weight within +/-{extent}: no int16 saturation on any path"}
                if record.get("saturation_free")
                else {}
            ),
        }
        return record, None
    say(f"checking the golden vectors on the AVX2 kernel path ({kernel_paths.avx2_description()})")
    try:
        result, missing = kernel_paths.run_on_avx2(model, runtime, inference_precision, x)
    except (RuntimeError, OSError) as exc:  # includes subprocess timeouts
        result, missing = None, str(exc)
    if result is None:
        record["classes"]["avx2"] = {"how": kernel_paths.avx2_description(), "checked": False, "why": missing}
        say(f"AVX2 kernel path not checked: {missing}")
        return record, None
    outputs, seen_class = result
    scores = guard.score(outputs[FEATURES_OUTPUT], x) if FEATURES_OUTPUT in outputs else None
    gaps = golden_gaps(outputs["logits"], scores, np.load(Path(model).parent / GOLDEN_FILES["exported"]), golden)
    diff = gaps["max_abs_logit"]
    entry = {"how": kernel_paths.avx2_description(), "checked": True, "detected_class": seen_class, **gaps}
    record["classes"]["avx2"] = entry
    if seen_class in VNNI_CLASSES:  # the harness did not take: never call this an AVX2 check
        entry.update(checked=False, passed=None, why=f"the harness process still saw {seen_class}")
        return record, None
    say(
        f"AVX2 kernel path: max |Δlogit| {diff:.4f} (tolerance {tolerance:.4f})"
        + ("" if entry["passed"] else " — outside verify's tolerance")
    )
    if entry["passed"]:
        return record, None
    why = (
        f"AVX2 kernel path ({entry['how']}): the golden images' logits move by {diff:.4f} "
        f"(verify's tolerance {tolerance:.4f})"
        + (f", input-guard scores by {entry['max_abs_guard_score']:.3f}" if "max_abs_guard_score" in entry else "")
    )
    if scheme is Int8Scheme.PORTABLE:
        return record, why + ": this INT8 model would compute something else on an AVX2 CPU"
    say(f"warning: {why}; published for VNNI/AMX CPUs only (--int8-scheme vnni); verify refuses it on AVX2")
    return record, None
