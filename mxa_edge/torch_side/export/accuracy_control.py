"""Accuracy control: a failing PTQ INT8 model gets its most sensitive layers back in float,
bounded, with the drift gate's own score in the loop (on the TUNING split, never the held-out
split the gate then reports on).

Why not NNCF's ``quantize_with_accuracy_control`` (which the OpenVINO exporter used first): it
ranks every quantizer group by compiling and validating the model once per group before it
reverts anything; on the default run that was 13 minutes on an AVX-512 machine and 17 on an
AVX2 one, and it does not exist for ONNX Runtime. Here the ranking is the label-free
sensitivity analysis the export has already run (``sensitivity.choose_float_layers``: each
layer's simulated logit noise alone), so each step costs one re-quantization and one pass over
the tuning images: layers go back to float 2, then 4, then 8 more at a time, at most
``MAX_ITERATIONS`` times (about 10-30 s each on the default run), and the first candidate that
passes on the tuning split is kept. When none does, the last (the most float) is kept and the
held-out gate decides, as for every export.

At most ``MAX_FLOAT_SHARE`` of the quantizable layers end in float. Without that bound a gate
failure driven by noise (a finding with three held-out positives) walked a real-film model to
123 of 126 layers in float: an artifact labelled INT8 that was a float model, published. Past the
bound the export is what it is: the held-out gate rejects it, and the user sees why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from mxa_edge.decision import gate
from mxa_edge.decision.scoring import engine_runner, score
from mxa_edge.runtime.engines import open_model_file

MAX_ITERATIONS = 6
FIRST_STEP = 2
MAX_FLOAT_SHARE = 0.5  # of the quantizable layers (opts.layer_ranking), float_layers included


def gate_score_on(validation, gate_spec, prob_ref, runtime: str, precision: str | None) -> Callable[[Path], float]:
    """``score(model_file)``: the gate's score (``gate.gate_score``: >= 0 exactly when every
    check passes) of a model file on ``validation`` = (images, targets, mask, decision rule)."""

    images, targets, mask, decision = validation
    judge = gate.gate_score(targets, mask, prob_ref, gate_spec, thresholds=decision.threshold_array())

    def on(path: Path) -> float:
        engine = open_model_file(path, runtime, precision=precision)
        logits = score(engine_runner(engine), images, outputs=("logits",))["logits"]
        return float(judge(decision.probabilities(logits)))

    return on


def restore_float_layers(
    first: Path,
    requantize: Callable[[list[str]], tuple[Path, dict]],
    *,
    opts,
    validation,
    gate_spec,
    prob_ref,
    runtime: str,
    precision: str | None,
    say: Callable[[str], None] = lambda msg: None,
) -> tuple[Path | None, dict | None, dict]:
    """(the chosen candidate's model file or None when nothing was re-quantized, its
    quantization settings, the manifest's ``accuracy_control`` record: the keys of
    ``records.AccuracyControlRecord``, which the pipeline types when it writes the manifest).

    ``first``: the failing model file; ``requantize(extra_float_layers)`` writes a candidate
    (``opts.float_layers`` plus the extra ones in float) and returns (its file, its settings);
    the extra layers come from ``opts.layer_ranking``, most sensitive first; each candidate is
    scored on ``validation`` (the tuning split) through ``runtime`` at ``precision``."""
    score = gate_score_on(validation, gate_spec, prob_ref, runtime, precision)
    candidates = [name for name in opts.layer_ranking if name not in opts.float_layers]
    allowed = max(0, int(MAX_FLOAT_SHARE * len(opts.layer_ranking)) - len(opts.float_layers))
    candidates = candidates[:allowed]
    n_images = len(validation[0])
    history = [{"float_layers_added": 0, "tune_gate_score": score(first)}]
    path, quant, added, step = None, None, [], FIRST_STEP
    for _ in range(MAX_ITERATIONS):
        if len(added) >= len(candidates):
            break
        added = candidates[: len(added) + step]
        step *= 2
        path, quant = requantize(added)
        history.append({"float_layers_added": len(added), "tune_gate_score": score(path)})
        say(f"accuracy control: {len(added)} more layers in float, tuning score {history[-1]['tune_gate_score']:+.3f}")
        if history[-1]["tune_gate_score"] >= 0:
            break
    record = {
        "tool": "mxa-edge accuracy control: sensitive layers back to float, the gate's score in the loop",
        "metric": "gate v2 score (mxa_edge.decision.gate.gate_score): 1 + the smallest headroom over every check; "
        "passes at >= 0",
        "split": "tune",  # fitted here; the published verdict is the held-out gate's
        "n_images": int(n_images),
        "gate": gate_spec.to_dict(),
        "max_iterations": MAX_ITERATIONS,
        "max_float_share": MAX_FLOAT_SHARE,
        "history": history,
        "reverted_to_float": list(added),
    }
    return path, quant, record
