"""The report's gate v2 tables: per finding, macro, ECE and per subgroup slice.

Where the artifact has drift.json (every artifact ``export_run`` publishes does), every number
is the gate's own: AUCs, the paired Δ AUC, Δ sensitivity and Δ specificity at the finding's
threshold and the decision agreement, each with its paired-bootstrap CI, the ECE before and
after, the subgroup slices, on the split the record names (the held-out valid.csv). Per-model
AUC CIs are not in the record: they come from a bootstrap over the report's own scores, shown
only when those are on the very images the gate used (same valid-split fingerprint).

Without drift.json the table is computed here, as the export computes it
(``mxa_edge.decision.drift.gate``: calibrated probabilities of both models, the artifact's
per-finding thresholds, the report's held-out images and their slices).

Either way every verdict is ``mxa_edge.decision.gate``'s (``checks`` / ``verdict``) with the table's
own ``GateSpec``: this module never compares a number with a bound itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mxa_edge.decision.drift import gate
from mxa_edge.decision.gate import DEFAULT_GATE, Check, GateSpec, checks, verdict

PASS, FAIL, NOT_EVALUABLE, NO_RECORD = "PASS", "FAIL", "not evaluable", "no record"
SPLIT_NAMES = {"valid": "held-out split", "tune": "tuning split", "train": "training split"}


def split_name(split: str | None) -> str:
    """'held-out split (valid)' for a split key; 'an unrecorded split' for None."""
    if not split:
        return "an unrecorded split"
    return f"{SPLIT_NAMES.get(split, 'split')} ({split})"


@dataclass
class PathologyRow:
    name: str
    n_pos: int | None = None
    n_neg: int | None = None
    threshold: float | None = None
    auc_ref: float | None = None
    auc_ref_ci: list | None = None
    auc_new: float | None = None
    auc_new_ci: list | None = None
    delta: float | None = None
    delta_ci: list | None = None
    sens_ref: float | None = None
    sens_new: float | None = None
    sens_delta: float | None = None
    sens_delta_ci: list | None = None
    spec_ref: float | None = None
    spec_new: float | None = None
    spec_delta: float | None = None
    spec_delta_ci: list | None = None
    agreement: float | None = None
    agreement_ci: list | None = None
    verdict: str = NOT_EVALUABLE
    checks: list[Check] = field(default_factory=list)  # the gate's checks on this row

    @property
    def auc_evaluable(self) -> bool:
        return self.auc_ref is not None and self.delta is not None

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.failed]


@dataclass
class EceRow:
    """Expected calibration error of both models on the gate's images, all findings pooled."""

    ref: float | None = None
    new: float | None = None
    delta: float | None = None
    delta_ci: list | None = None
    verdict: str = NOT_EVALUABLE
    checks: list[Check] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.failed]


@dataclass
class Worst:
    """The lowest value of one quantity over a slice's findings, and which finding."""

    label: str | None = None
    value: float | None = None


@dataclass
class SubgroupRow:
    name: str
    n_images: int | None
    status: str | None  # why the slice is not evaluable; None when it is
    verdict: str  # PASS / FAIL / NOT_EVALUABLE
    failures: list[Check] = field(default_factory=list)
    worst_auc: Worst = field(default_factory=Worst)
    worst_sens: Worst = field(default_factory=Worst)
    worst_spec: Worst = field(default_factory=Worst)
    lowest_agreement: Worst = field(default_factory=Worst)


@dataclass
class PathologyTable:
    rows: list[PathologyRow]
    macro: PathologyRow
    ece: EceRow
    passed: bool | None  # None: no verdict possible
    spec: GateSpec
    spec_source: str  # where the bounds come from
    split: str | None  # the split that produced the verdict ("valid": held-out)
    n_images: int | None
    fingerprint: str | None  # of that split, when recorded
    computed_here: bool  # True: no drift.json, the report computed the table
    source: str  # one sentence: where the numbers come from
    subgroups: list[SubgroupRow] = field(default_factory=list)
    failures: list[Check] = field(default_factory=list)  # every failing check (subgroups too when gated)
    n_boot: int | None = None
    notes: list[str] = field(default_factory=list)


def gate_spec(drift: dict | None, manifest_drift: dict | None) -> tuple[GateSpec, str, bool]:
    """(the spec that judges the table, where it comes from, whether it was recorded):
    drift.json's ``gate``, else the manifest's drift summary's, else DEFAULT_GATE."""
    if drift is not None and drift.get("gate"):
        return GateSpec.from_dict(drift["gate"]), "drift.json", True
    if manifest_drift and manifest_drift.get("gate"):
        return GateSpec.from_dict(manifest_drift["gate"]), "the manifest's drift summary", True
    return DEFAULT_GATE, "the default gate (no bounds recorded)", False


def _verdict_of(row_checks: list[Check]) -> str:
    if not any(c.value is not None for c in row_checks):
        return NOT_EVALUABLE
    return FAIL if any(c.failed for c in row_checks) else PASS


def _worst(per_label: dict, key: str) -> Worst:
    vals = [(k, v[key]) for k, v in per_label.items() if v.get(key) is not None]
    if not vals:
        return Worst()
    return Worst(*min(vals, key=lambda kv: kv[1]))


def subgroup_rows(table: dict, spec: GateSpec) -> list[SubgroupRow]:
    """One row per slice of ``table["subgroups"]``, each judged by the gate's checks on its own
    table (the same bounds; as ``drift.gate`` judges slices)."""
    out = []
    per_slice = replace(spec, subgroups=False)
    for name, sub in (table.get("subgroups") or {}).items():
        sub_table = sub.get("table")
        if sub.get("status") is not None or sub_table is None:
            status = sub.get("status") or "no table recorded"
            out.append(SubgroupRow(name, sub.get("n_images"), status, NOT_EVALUABLE))
            continue
        cs = checks(sub_table, per_slice)
        per = sub_table.get("per_label") or {}
        out.append(
            SubgroupRow(
                name,
                sub.get("n_images", sub_table.get("n_images")),
                None,
                _verdict_of(cs),
                [c for c in cs if c.failed],
                _worst(per, "delta"),
                _worst(per, "sensitivity_delta"),
                _worst(per, "specificity_delta"),
                _worst(per, "agreement_at_threshold"),
            )
        )
    return out


def computed_drift(computed: dict, spec: GateSpec, n_boot: int, seed: int) -> dict:
    """The drift table as the export computes it, on the report's held-out images."""

    report = gate(
        computed["targets"],
        computed["mask"],
        computed["ref_probs"],
        computed["new_probs"],
        thresholds=computed["thresholds"],
        spec=spec,
        n_boot=n_boot,
        seed=seed,
        subgroups=computed.get("subgroups"),
        split=computed.get("split", "valid"),
    )
    return report.table


def _row(name: str, v: dict, row_checks: list[Check]) -> PathologyRow:
    return PathologyRow(
        name,
        n_pos=v.get("n_pos"),
        n_neg=v.get("n_neg"),
        threshold=v.get("threshold"),
        auc_ref=v.get("auc_ref"),
        auc_new=v.get("auc_new"),
        delta=v.get("delta"),
        delta_ci=v.get("delta_ci"),
        sens_ref=v.get("sensitivity_ref"),
        sens_new=v.get("sensitivity_new"),
        sens_delta=v.get("sensitivity_delta"),
        sens_delta_ci=v.get("sensitivity_delta_ci"),
        spec_ref=v.get("specificity_ref"),
        spec_new=v.get("specificity_new"),
        spec_delta=v.get("specificity_delta"),
        spec_delta_ci=v.get("specificity_delta_ci"),
        agreement=v.get("agreement_at_threshold"),
        agreement_ci=v.get("agreement_ci"),
        verdict=_verdict_of(row_checks),
        checks=row_checks,
    )


def pathology_table(
    labels,
    drift: dict | None,
    manifest_drift: dict | None,
    computed: dict,
    same_images: bool | None,
    n_boot: int,
    seed: int,
    *,
    fingerprints: dict | None = None,
    report_fingerprint: str | None = None,
) -> PathologyTable:
    """``computed``: {"ref": evaluate() dict or None, "new": ..., "targets", "mask", "ref_probs",
    "new_probs" (calibrated), "thresholds" (per finding), "subgroups" (slice -> rows)}.
    ``fingerprints``: the source run's split -> fingerprint; ``report_fingerprint``: the
    fingerprint of the report's own valid split (used when the table is computed here)."""
    ev_ref, ev_new = computed.get("ref"), computed.get("new")
    spec, spec_source, recorded = gate_spec(drift, manifest_drift)
    notes = []
    if not recorded:
        notes.append(
            "No gate bounds are recorded in the artifact: the verdicts use the default gate v2 bounds "
            "(mxa_edge.decision.gate.DEFAULT_GATE)."
        )
    elif drift is not None and not drift.get("gate"):
        notes.append("drift.json records no gate bounds: the verdicts use the bounds in the manifest's drift summary.")
    if drift is not None:
        table, computed_here = drift, False
        split = drift.get("split")
        fingerprint = (fingerprints or {}).get(split) if split else None
        source = (
            f"Every number except the per-model AUC CIs: the export's drift gate (drift.json, "
            f"{drift.get('n_images', '?')} images of the {split_name(split)}, {drift.get('n_boot', '?')} paired "
            "bootstrap resamples), both models calibrated and thresholded by the artifact's decision rule."
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
        table, computed_here = computed_drift(computed, spec, n_boot, seed), True
        split = table.get("split")
        fingerprint = report_fingerprint
        source = (
            "The artifact has no drift.json: every number here is computed by this report on its held-out images, "
            f"as the export's gate computes it ({n_boot} paired bootstrap resamples, calibrated probabilities, the "
            "artifact's thresholds)."
        )
        notes.append(f"Verdicts computed here with the gate bounds from {spec_source}.")
        use_ci = True
    else:
        rows = [PathologyRow(name, verdict=NO_RECORD) for name in labels]
        return PathologyTable(
            rows,
            PathologyRow("macro", verdict=NO_RECORD),
            EceRow(verdict=NO_RECORD),
            None,
            spec,
            spec_source,
            None,
            None,
            None,
            False,
            "The artifact has no drift.json and the two models could not both be scored here.",
            notes=notes,
        )

    all_checks = checks(table, spec)
    by_scope: dict[str, list[Check]] = {}
    for c in all_checks:
        by_scope.setdefault(c.scope, []).append(c)
    rows = []
    for name in labels:
        row = _row(name, table["per_label"].get(name) or {}, by_scope.get(name, []))
        if use_ci and row.auc_evaluable:
            row.auc_ref_ci = ((ev_ref or {}).get("per_label", {}).get(name) or {}).get("auc_ci")
            row.auc_new_ci = ((ev_new or {}).get("per_label", {}).get(name) or {}).get("auc_ci")
        rows.append(row)
    macro_checks = by_scope.get("macro", [])
    macro = PathologyRow(
        "macro",
        auc_ref=table.get("macro_auc_ref"),
        auc_ref_ci=(ev_ref or {}).get("macro_auc_ci") if use_ci else None,
        auc_new=table.get("macro_auc_new"),
        auc_new_ci=(ev_new or {}).get("macro_auc_ci") if use_ci else None,
        delta=table.get("macro_delta"),
        delta_ci=table.get("macro_delta_ci"),
        agreement=table.get("agreement_at_threshold"),
        verdict=_verdict_of(macro_checks),
        checks=macro_checks,
    )
    ece_checks = [c for c in by_scope.get("all findings", []) if c.metric == "ECE"]
    ece = EceRow(
        table.get("ece_ref"),
        table.get("ece_new"),
        table.get("ece_delta"),
        table.get("ece_delta_ci"),
        _verdict_of(ece_checks) if "ece_delta" in table else NO_RECORD,
        ece_checks,
    )
    v = verdict(table, spec)
    recorded_passed = table.get("passed")
    if not computed_here and recorded_passed is not None and bool(recorded_passed) != v.passed:
        notes.append(
            f"drift.json records the export as {'passed' if recorded_passed else 'failed'}, but its own table judged "
            f"by its own bounds {'passes' if v.passed else 'fails'}: the record was changed after export or "
            "written by another version of the gate. The verdict shown is the table's."
        )
    n_boot_used = table.get("n_boot")
    if n_boot_used == 0:
        notes.append("The gate ran without bootstrap resamples (n_boot 0): no confidence intervals were recorded.")
    return PathologyTable(
        rows,
        macro,
        ece,
        v.passed,
        spec,
        spec_source,
        split,
        table.get("n_images"),
        fingerprint,
        computed_here,
        source,
        subgroups=subgroup_rows(table, spec),
        failures=list(v.failures),
        n_boot=n_boot_used,
        notes=notes,
    )
