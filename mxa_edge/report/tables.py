"""The per-pathology table's rows: the export-time drift record first, computed numbers second.

Where the artifact has drift.json (every artifact ``export_run`` publishes does), AUCs, the
paired delta with its CI, agreement and class counts are the gate's own numbers. Per-model
AUC CIs are not in the record: they come from a bootstrap over the report's validation scores,
and are shown only when those scores are on the very images the gate used (same valid-split
fingerprint). Without drift.json, everything is computed from the report's scores, and the
verdict uses the bounds the manifest records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mxa_edge.gate import GateSpec, finding_fails, verdict

PASS, FAIL, NOT_EVALUABLE, NO_BOUND = "PASS", "FAIL", "not evaluable", "no bound recorded"


@dataclass
class PathologyRow:
    name: str
    n_pos: int | None = None
    n_neg: int | None = None
    auc_ref: float | None = None
    auc_ref_ci: list | None = None
    auc_new: float | None = None
    auc_new_ci: list | None = None
    delta: float | None = None
    delta_ci: list | None = None
    agreement: float | None = None
    verdict: str = NOT_EVALUABLE


@dataclass
class PathologyTable:
    rows: list[PathologyRow]
    macro: PathologyRow
    passed: bool | None  # None: no verdict possible
    max_drop: float | None
    max_macro_drop: float | None
    n_images: int | None
    source: str  # one sentence: where the numbers come from
    notes: list[str] = field(default_factory=list)


def _verdict(delta, bound, ci=None, mode: str = "point") -> str:
    if delta is None:
        return NOT_EVALUABLE
    if bound is None:
        return NO_BOUND
    return FAIL if finding_fails(delta, bound, ci=ci, mode=mode) else PASS


def pathology_table(
    labels,
    drift: dict | None,
    manifest_drift: dict | None,
    computed: dict,
    same_images: bool | None,
    n_boot: int,
    seed: int,
) -> PathologyTable:
    """``computed``: {"ref": evaluate() dict or None, "new": ..., "targets", "mask", "ref_probs", "new_probs"}."""
    ev_ref, ev_new = computed.get("ref"), computed.get("new")
    notes = []
    if drift is not None:
        table, source = (
            drift,
            (
                f"AUCs, Δ and its CI, agreement and counts: the export's drift gate (drift.json, "
                f"{drift.get('n_images', '?')} validation images, {drift.get('n_boot', '?')} paired bootstrap "
                "resamples)."
            ),
        )
        use_ci = same_images is True
        if (ev_ref or ev_new) and not use_ci:
            notes.append(
                "Per-model AUC CIs are left out: the report's validation images are not the ones the gate used "
                "(valid-split fingerprints differ or were not recorded)."
            )
        elif not (ev_ref or ev_new):
            notes.append("Per-model AUC CIs are left out: no scores could be computed here (see the ROC section).")
    elif computed.get("ref_probs") is not None and computed.get("new_probs") is not None:
        from mxa_edge.metrics import paired_auc_delta

        table = paired_auc_delta(
            computed["targets"],
            computed["ref_probs"],
            computed["new_probs"],
            computed["mask"],
            n_boot=n_boot,
            seed=seed,
        )
        b = manifest_drift or {}
        table["max_drop"], table["max_macro_drop"] = b.get("max_drop"), b.get("max_macro_drop")
        table["passed"] = None
        source = (
            "The artifact has no drift.json: every number here is computed by this report on its validation images."
        )
        use_ci = True
    else:
        rows = [PathologyRow(name, verdict="no record") for name in labels]
        return PathologyTable(
            rows,
            PathologyRow("macro", verdict="no record"),
            None,
            None,
            None,
            None,
            "The artifact has no drift.json and the two models could not both be scored here.",
            notes,
        )

    max_drop, max_macro = table.get("max_drop"), table.get("max_macro_drop")
    mode = table.get("gate_mode", "point")
    rows = []
    for name in labels:
        v = table["per_label"].get(name) or {}
        row = PathologyRow(
            name,
            v.get("n_pos"),
            v.get("n_neg"),
            v.get("auc_ref"),
            None,
            v.get("auc_new"),
            None,
            v.get("delta"),
            v.get("delta_ci"),
            v.get("agreement_at_threshold"),
            _verdict(v.get("delta"), max_drop, v.get("delta_ci"), mode),
        )
        if use_ci and row.delta is not None:
            row.auc_ref_ci = ((ev_ref or {}).get("per_label", {}).get(name) or {}).get("auc_ci")
            row.auc_new_ci = ((ev_new or {}).get("per_label", {}).get(name) or {}).get("auc_ci")
        rows.append(row)
    macro = PathologyRow(
        "macro",
        None,
        None,
        table.get("macro_auc_ref"),
        (ev_ref or {}).get("macro_auc_ci") if use_ci else None,
        table.get("macro_auc_new"),
        (ev_new or {}).get("macro_auc_ci") if use_ci else None,
        table.get("macro_delta"),
        table.get("macro_delta_ci"),
        table.get("agreement_at_threshold"),
        _verdict(table.get("macro_delta"), max_macro, table.get("macro_delta_ci"), mode),
    )
    passed = table.get("passed")
    if passed is None and max_drop is not None and max_macro is not None:
        shown = {**table, "per_label": {r.name: {"delta": r.delta, "delta_ci": r.delta_ci} for r in rows}}
        passed = verdict(shown, GateSpec(max_macro, max_drop, mode)).passed
        notes.append("Overall verdict recomputed here from the manifest's bounds (no drift.json).")
    return PathologyTable(rows, macro, passed, max_drop, max_macro, table.get("n_images"), source, notes)
