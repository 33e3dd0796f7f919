"""HTML rendering of the report: one function per section, all text escaped, no scripts.

Every value arrives already computed (``builder.ReportData``); this module only formats. The
page references nothing outside itself: CSS is inline, images are data: URIs, fonts are the
system's.
"""

from __future__ import annotations

import json
from html import escape

from mxa_edge.formats.records import KernelClassChecks
from mxa_edge.report.figures import png_data_uri
from mxa_edge.report.records import flatten
from mxa_edge.report.tables import FAIL, NO_RECORD, NOT_EVALUABLE, PASS, split_name
from mxa_edge.support.outputs import REPORT_META

CSS = """
:root { --ink:#1c2430; --muted:#5b6675; --line:#d7dce3; --pass:#137333; --fail:#b3261e; --warn:#8a5a00; --bg:#f6f7f9; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--ink);
       margin: 0; background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
header.top { border-bottom: 3px solid var(--ink); padding-bottom: 12px; margin-bottom: 8px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 30px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 14px; margin: 16px 0 6px; }
.sub { color: var(--muted); }
code, pre, .mono {
  font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 12px;
}
.hash { word-break: break-all; }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { width: 220px; }
tfoot td { font-weight: 600; background: var(--bg); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 3px; font-weight: 700; font-size: 12px; color: #fff; }
.badge.pass { background: var(--pass); } .badge.fail { background: var(--fail); }
.rejected-banner { background: var(--fail); color: #fff; padding: .5em .8em; margin: .5em 0; }
.badge.na { background: #8d96a3; } .badge.big { font-size: 15px; padding: 3px 12px; }
.ne { color: var(--muted); font-style: italic; }
.ci, .rn { display: block; color: var(--muted); font-size: 11px; }
ul.why { margin: 2px 0 0; padding-left: 16px; font-size: 12px; color: var(--fail); }
.gap { border-left: 4px solid var(--warn); background: #fff8e6; padding: 6px 10px; margin: 8px 0; }
.note { color: var(--muted); font-size: 13px; }
img.fig { max-width: 100%; height: auto; border: 1px solid var(--line); }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 14px; }
.gallery figure { margin: 0; border: 1px solid var(--line); padding: 6px; background: var(--bg); }
.gallery img { width: 100%; height: auto; display: block; }
.gallery figcaption { font-size: 12px; margin-top: 4px; word-break: break-all; }
.legend-swatch { display: inline-block; width: 22px; height: 0; vertical-align: middle; margin: 0 4px 0 10px; }
details { margin: 8px 0; } summary { cursor: pointer; font-weight: 600; }
pre { background: var(--bg); border: 1px solid var(--line); padding: 10px; overflow-x: auto; max-height: 640px; }
nav a { margin-right: 12px; color: var(--ink); }
@media print { details { display: block; } pre { max-height: none; } }
"""


LONG_LIST = 8  # lists longer than this fold into a <details>


def e(value) -> str:
    return escape("" if value is None else str(value), quote=True)


def num(x, fmt: str = ".3f") -> str:
    return "—" if x is None else format(x, fmt)


def ci(interval, fmt: str = ".3f") -> str:
    if not interval:
        return "—"
    return f"{format(interval[0], fmt)} – {format(interval[1], fmt)}"


def badge(verdict: str | None, big: bool = False) -> str:
    cls = {PASS: "pass", FAIL: "fail"}.get(verdict, "na")
    text = {None: "NO VERDICT"}.get(verdict, verdict)
    return f'<span class="badge {cls}{" big" if big else ""}">{e(text)}</span>'


def gap(text: str) -> str:
    return f'<p class="gap">{e(text)}</p>'


def kv_table(pairs, cls: str = "kv", table_id: str | None = None) -> str:
    body = "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    ident = f' id="{e(table_id)}"' if table_id else ""
    return f'<table{ident} class="{cls}"><tbody>{body}</tbody></table>'


def value_html(v) -> str:
    """A JSON value for a table cell: lists one per line, objects as compact JSON."""
    if v is None:
        return '<span class="ne">none</span>'
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return e(f"{v:.6g}")
    if isinstance(v, list):
        if not v:
            return '<span class="ne">none</span>'
        items = "<br>".join(f"<code>{e(x if not isinstance(x, (dict, list)) else json.dumps(x))}</code>" for x in v)
        if len(v) > LONG_LIST:
            return f"<details><summary>{len(v)} entries</summary>{items}</details>"
        return items
    if isinstance(v, dict):
        return f"<code>{e(json.dumps(v, sort_keys=True))}</code>"
    return e(v)


# --- sections ---------------------------------------------------------------------------------


def bounds_line(spec) -> str:
    """The gate's bounds in one line (header, export settings)."""
    return (
        f"AUC drop ≤ {num(spec.max_drop, 'g')} per finding, ≤ {num(spec.max_macro_drop, 'g')} macro · "
        f"sensitivity drop ≤ {num(spec.max_sens_drop, 'g')}, specificity drop ≤ {num(spec.max_spec_drop, 'g')} "
        f"(or 1/n) · agreement ≥ {num(spec.min_agreement, 'g')} · ECE rise ≤ {num(spec.max_ece_increase, 'g')} · "
        f"mode {spec.mode} · subgroups {'gated' if spec.subgroups else 'reported only'}"
    )


def provenance(d) -> str:
    """One sentence: which split produced the verdict (images, fingerprint), by whom."""
    t = d.table
    if t.passed is None and t.split is None and not t.computed_here:
        return "No verdict: the artifact has no drift.json and the two models could not both be scored here."
    who = "computed by this report" if t.computed_here else "produced by the export's drift gate"
    where = split_name(t.split)
    if t.split is None:
        where = "a split the drift record does not name"
    parts = [f"{num(t.n_images, 'd')} images"]
    if t.fingerprint:
        parts.append(f"fingerprint {t.fingerprint}")
    return f"Verdict {who} on the {where}: {', '.join(parts)}."


def accuracy_control_line(d) -> str | None:
    """When OpenVINO accuracy control ran: on which split it was fitted."""
    q = d.manifest.quantization
    ac = q.accuracy_control if q is not None else None
    if ac is None:
        return None
    split = ac.split
    parts = [f"{ac.n_images} images" if ac.n_images is not None else None]
    fp = d.manifest.source_run.data_fingerprint.get(split) if split else None
    if fp:
        parts.append(f"fingerprint {fp}")
    extra = ", ".join(p for p in parts if p)
    tool = ac.tool if ac.tool is not None else "NNCF"
    return (
        f"Accuracy control ({tool}) re-quantized the model with the gate's score, fitted on the "
        f"{split_name(split)}{': ' + extra if extra else ''}; the verdict is the held-out gate's, run afterwards."
    )


def header(d) -> str:
    t = d.table
    verdict = None if t.passed is None else (PASS if t.passed else FAIL)
    nav = "".join(
        f'<a href="#{i}">{e(n)}</a>'
        for i, n in (
            ("identity", "Identity"),
            ("per-pathology", "Per-pathology gate"),
            ("subgroups", "Subgroups"),
            ("roc", "ROC"),
            ("calibration", "Calibration"),
            ("input-guard", "Input guard"),
            ("bench", "Benchmark"),
            ("gallery", "Gallery"),
            ("export-settings", "Export settings"),
            ("gaps", "Gaps"),
        )
    )
    ac = accuracy_control_line(d)
    return (
        f'<header class="top"><h1>Model validation report: {e(d.manifest.model_id)}</h1>'
        f"<div>Drift gate {badge(verdict, big=True)} "
        f'<span class="sub">{e(bounds_line(t.spec))}'
        f" · {e(d.manifest.runtime)} · weights {e(d.manifest.precision.weights)}</span></div>"
        f'<div class="sub" id="verdict-split">{e(provenance(d))}{" " + e(ac) if ac else ""}</div>'
        f'<div class="sub">Report generated {e(d.generated)} by mxa-edge {e(d.tool_version)} '
        "for sign-off before deployment.</div>"
        f'<div class="sub" id="signature">Signature: {e(d.signature)}</div>'
        + (f'<div class="rejected-banner" id="rejected"><b>{e(d.rejected)}</b></div>' if d.rejected else "")
        + f"<nav>{nav}</nav></header>"
    )


def identity(d) -> str:
    m = d.manifest
    src = m.source_run
    files = "<br>".join(f'<code>{e(n)}</code> <code class="hash">{e(h)}</code>' for n, h in m.files.items())
    fp = src.data_fingerprint
    fp_html = "<br>".join(f"{e(k)}: <code>{e(v)}</code>" for k, v in fp.items()) if fp else value_html(None)
    spec = m.model
    versions = ", ".join(f"{e(k)} {e(v)}" for k, v in m.versions.items() if v) or "—"
    v = d.validation
    if v.arrays is not None:
        same = {
            True: "same images as the drift gate",
            False: "NOT the images the drift gate used",
            None: "gate fingerprint not recorded",
        }[v.same_as_gate]
        data_html = (
            f"<code>{e(v.root)}</code> ({e(v.source)}), valid split: {len(v.arrays)} images, "
            f"fingerprint <code>{e(v.fingerprint)}</code> — {e(same)}"
        )
    else:
        data_html = f'<span class="ne">not available: {e(v.why)}</span>'
    pairs = [
        (
            "Artifact sha256",
            f'<code class="hash">{e(d.artifact_sha256)}</code><br><span class="note">sha256 of the canonical manifest, '
            "which lists every file's sha256: the files agree with each other (anyone can recompute it)</span>",
        ),
        ("Signature", e(d.signature)),
        ("Artifact folder", f"<code>{e(d.artifact_path)}</code>"),
        ("Model id", e(m.model_id)),
        ("Backend / entry", f"{e(m.runtime)} / <code>{e(m.entry)}</code>"),
        ("Files (sha256, verified)", files),
        ("Model", f"{e(spec.variant)} at {e(spec.image_size)} px, MXA: {value_html(spec.to_dict()['mxa'])}"),
        (
            "Cost (FP32, batch 1)",
            f"{num((m.flops or 0) / 1e9, '.3f')} GFLOPs · {num((m.macs or 0) / 1e6, '.1f')} M MACs · "
            f"{num((m.params or 0) / 1e6, '.2f')} M params",
        ),
        ("Source run", f"<code>{e(src.path)}</code>"),
        ("Source weights sha256", f'<code class="hash">{e(src.weights_sha256)}</code>'),
        ("Training data fingerprint", fp_html),
        ("Data used by this report", data_html),
        ("Decision rule", decision_summary(m.decision, fp)),
        ("Preprocess", value_html(m.preprocess.to_dict())),
        ("Versions", versions),
        ("Created", e(m.created)),
    ]
    manifest = json.dumps(m.to_dict(), indent=2, sort_keys=False)
    return (
        '<section id="identity"><h2>1. Model identity</h2>'
        + kv_table(pairs)
        + decision_table(m.decision, m.labels)
        + f"<details><summary>manifest.json</summary><pre>{e(manifest)}</pre></details></section>"
    )


CALIBRATION_METHODS = {
    "platt": "Platt scaling per finding: probability = sigmoid(scale × logit + bias)",
    "none": "none: probability = sigmoid(logit)",
}


def fitted_on(rule, fingerprints: dict | None = None) -> str:
    """'the tuning split (tune): 20 images, fingerprint …' or why it is not recorded."""
    f = rule.fitted_on or {}
    split = f.get("split")
    if not split:
        return "not recorded (no tuning split: the default rule)"
    parts = []
    if f.get("n_images") is not None:
        parts.append(f"{f['n_images']} images")
    fp = f.get("fingerprint") or (fingerprints or {}).get(split)
    if fp:
        parts.append(f"fingerprint {fp}")
    return f"the {split_name(split)}" + (f": {', '.join(parts)}" if parts else "")


def decision_summary(rule, fingerprints: dict | None = None, per_finding: str = "below") -> str:
    method = CALIBRATION_METHODS.get(rule.calibration, rule.calibration)
    return (
        f"calibration: {e(method)}<br>operating points: {e(rule.policy)}<br>"
        f"fitted on {e(fitted_on(rule, fingerprints))}; nothing is fitted on the held-out split "
        f'<span class="note">(per finding: {e(per_finding)})</span>'
    )


def threshold_source(rule, label: str) -> str:
    source = rule.label_source.get(label)
    if source is None:
        return rule.policy
    return f"fitted ({rule.policy})" if source == "fitted" else f"fallback: {source}"


def decision_table(rule, labels) -> str:
    """Per finding: threshold and its source, calibration, what the tuning split reached."""
    notes = (rule.fitted_on or {}).get("calibration_notes") or {}
    body = []
    for label in labels:
        thr = rule.thresholds.get(label)
        if rule.calibration == "none":
            cal = '<span class="ne">none</span>'
        elif notes.get(label):
            cal = f'<span class="ne">{e(notes[label])}</span>'
        else:
            cal = e(f"scale {rule.scale.get(label, 1.0):.4g}, bias {rule.bias.get(label, 0.0):+.4g}")
        tuned = rule.tuning.get(label) or {}
        reached = (
            f"{num(tuned.get('sensitivity'))} / {num(tuned.get('specificity'))} "
            f"({num(tuned.get('n_pos'), 'd')} / {num(tuned.get('n_neg'), 'd')})"
            if tuned
            else "—"
        )
        body.append(
            f'<tr data-finding="{e(label)}"><td>{e(label)}</td><td class="num">{num(thr, ".4f")}</td>'
            f'<td>{e(threshold_source(rule, label))}</td><td>{cal}</td><td class="num">{e(reached)}</td></tr>'
        )
    head = (
        "Finding",
        "Threshold (calibrated probability)",
        "Threshold source",
        "Calibration",
        "Tuning split: sensitivity / specificity (n+ / n−)",
    )
    return (
        "<h3>Decision rule: calibration and operating point per finding</h3>"
        '<table id="decision-table" class="decision">'
        f"<thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
        '<p class="note">What predict outputs: each finding’s logit through its calibration, positive at or above '
        "its threshold. The drift gate and this report apply the same rule to both models.</p>"
    )


def with_ci(value, interval, fmt: str = ".3f", change: str | None = None) -> str:
    """A value, its 95% CI on a second line (always shown: '—' when there is none), and an
    optional third line (e.g. 'FP32 → exported')."""
    out = f'{num(value, fmt)}<span class="ci">{ci(interval, fmt)}</span>'
    if change:
        out += f'<span class="rn">{e(change)}</span>'
    return out


def check_text(c) -> str:
    """A failing gate check without its scope: 'sensitivity -0.0833 (max drop 0.0417)'."""
    text = c.describe()
    return text[len(c.scope) + 1 :] if text.startswith(c.scope + " ") else text


def verdict_cell(verdict: str, failures) -> str:
    why = "".join(f"<li>{e(check_text(c))}</li>" for c in failures)
    if why:
        why = f'<ul class="why">{why}</ul>'
    return f"<td>{badge(verdict)}{why}</td>"


def _arrow(a, b, fmt: str = ".3f") -> str | None:
    return None if a is None and b is None else f"{num(a, fmt)} → {num(b, fmt)}"


def gate_rule_text(spec) -> str:
    mode = (
        "Mode ci: a check fails only when its whole 95% interval lies beyond the bound (the point estimate where "
        "there is no interval)."
        if spec.mode == "ci"
        else "Mode point: the point estimates are gated; the 95% intervals are shown beside them."
    )
    return (
        f"A finding FAILS when its AUC drops by more than {num(spec.max_drop, 'g')}, its sensitivity by more than "
        f"{num(spec.max_sens_drop, 'g')} or its specificity by more than {num(spec.max_spec_drop, 'g')} at its "
        "threshold (never finer than one image: 1/n positives or negatives), or when fewer than "
        f"{num(spec.min_agreement, 'g')} of its images get the same decision from both models. The macro AUC may "
        f"drop by at most {num(spec.max_macro_drop, 'g')}, the ECE (all findings) rise by at most "
        f"{num(spec.max_ece_increase, 'g')}. {mode} Δ = exported − FP32."
    )


def pathology(d) -> str:
    t = d.table
    head = (
        "Finding",
        "n+ / n−",
        "Threshold",
        "FP32 AUC (95% CI)",
        "Exported AUC (95% CI)",
        "Δ AUC (95% CI)",
        "Δ sensitivity (95% CI)",
        "Δ specificity (95% CI)",
        "Agreement (95% CI)",
        "Verdict",
    )
    ncols = len(head)
    rows = []
    for r in t.rows:
        counts = f"{r.n_pos} / {r.n_neg}" if r.n_pos is not None else "—"
        if r.verdict == NO_RECORD:
            cells = f'<td colspan="{ncols - 3}" class="ne">no record</td>'
        else:
            if r.auc_evaluable:
                auc = "".join(
                    f'<td class="num">{c}</td>'
                    for c in (
                        with_ci(r.auc_ref, r.auc_ref_ci),
                        with_ci(r.auc_new, r.auc_new_ci),
                        with_ci(r.delta, r.delta_ci, "+.4f"),
                    )
                )
            else:
                why = "no positives" if r.n_pos == 0 else "no negatives" if r.n_neg == 0 else "one class"
                auc = f'<td colspan="3" class="ne">AUC not evaluable ({e(why)} in the held-out split)</td>'
            sens = (
                with_ci(r.sens_delta, r.sens_delta_ci, "+.4f", _arrow(r.sens_ref, r.sens_new))
                if r.sens_delta is not None
                else '<span class="ne">— (no positives)</span>'
            )
            spec = (
                with_ci(r.spec_delta, r.spec_delta_ci, "+.4f", _arrow(r.spec_ref, r.spec_new))
                if r.spec_delta is not None
                else '<span class="ne">— (no negatives)</span>'
            )
            cells = (
                f'<td class="num">{num(r.threshold, ".4f")}</td>{auc}'
                f'<td class="num">{sens}</td><td class="num">{spec}</td>'
                f'<td class="num">{with_ci(r.agreement, r.agreement_ci)}</td>'
            )
        verdict = verdict_cell(r.verdict, r.failures) if r.verdict != NO_RECORD else f"<td>{badge(r.verdict)}</td>"
        rows.append(
            f'<tr data-finding="{e(r.name)}"><td>{e(r.name)}</td><td class="num">{counts}</td>{cells}{verdict}</tr>'
        )
    mc = t.macro
    n_eval = len([r for r in t.rows if r.auc_evaluable])
    foot = (
        f'<tr id="macro-row"><td>macro AUC ({n_eval} evaluable)</td><td class="num">{num(t.n_images, "d")} images</td>'
        '<td class="num">—</td>'
        + "".join(
            f'<td class="num">{c}</td>'
            for c in (
                with_ci(mc.auc_ref, mc.auc_ref_ci),
                with_ci(mc.auc_new, mc.auc_new_ci),
                with_ci(mc.delta, mc.delta_ci, "+.4f"),
                "—",
                "—",
                f'{num(mc.agreement)}<span class="rn">all findings</span>',
            )
        )
        + verdict_cell(mc.verdict, mc.failures)
        + "</tr>"
    )
    ec = t.ece
    foot += (
        f'<tr id="ece-row"><td>ECE (all findings)</td><td colspan="{ncols - 2}" class="num">'
        f"FP32 {num(ec.ref)} → exported {num(ec.new)} · Δ {num(ec.delta, '+.4f')} "
        f"(95% CI {ci(ec.delta_ci, '+.4f')}) · max rise {num(t.spec.max_ece_increase, 'g')}</td>"
        + (verdict_cell(ec.verdict, ec.failures) if ec.verdict != NO_RECORD else f"<td>{badge(ec.verdict)}</td>")
        + "</tr>"
    )
    overall = None if t.passed is None else (PASS if t.passed else FAIL)
    sub_fail = [c for c in t.failures if " / " in c.scope]
    sub_line = (
        f'<p class="note">The overall verdict includes {len(sub_fail)} failing subgroup check(s) '
        "(subgroups are gated; see the subgroup section).</p>"
        if sub_fail
        else ""
    )
    ac = accuracy_control_line(d)
    rule = d.manifest.decision
    decided = (
        f"Both models are calibrated and thresholded by the artifact's decision rule ({rule.calibration} "
        f"calibration, {rule.policy} operating points), fitted on "
        f"{fitted_on(rule, d.manifest.source_run.data_fingerprint)}."
    )
    notes = "".join(f'<p class="note">{e(n)}</p>' for n in t.notes)
    return (
        '<section id="per-pathology"><h2>2. Per-pathology gate: FP32 vs exported, drift verdict</h2>'
        f'<p>Overall: {badge(overall, big=True)} <b id="verdict-provenance">{e(provenance(d))}</b></p>'
        + (f"<p>{e(ac)}</p>" if ac else "")
        + f"<p>{e(gate_rule_text(t.spec))}</p>"
        f'<p class="note">Bounds from {e(t.spec_source)}. {e(decided)}</p>'
        '<table id="pathology-table" class="per-pathology">'
        f"<thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody><tfoot>{foot}</tfoot></table>"
        f'{sub_line}<p class="note">{e(t.source)} Per finding: value, then its 95% CI; sensitivity and specificity '
        "also FP32 → exported.</p>"
        f"{notes}</section>"
    )


def _worst_cell(w, fmt: str) -> str:
    if w.value is None:
        return '<td class="num">—</td>'
    return f'<td class="num">{num(w.value, fmt)}<span class="rn">{e(w.label)}</span></td>'


def subgroups(d) -> str:
    t = d.table
    out = ['<section id="subgroups"><h2>3. Subgroups: the gate on each slice</h2>']
    if t.passed is None and not t.subgroups:
        out.append(gap("no drift table, so no subgroup slices (see the per-pathology section)"))
        out.append("</section>")
        return "".join(out)
    gated = t.spec.subgroups
    out.append(
        "<p>"
        + (
            "Subgroups are GATED (gate.subgroups on): a failing slice fails the export."
            if gated
            else "Subgroups are REPORTED ONLY (gate.subgroups off): a slice below a bound does not fail the export."
        )
        + f" Slices of the {e(split_name(t.split))} from the CSV's own columns (sex, age band, AP/PA); each is "
        "judged with the same bounds by the same rule. Rows with an unknown value belong to no slice.</p>"
    )
    if not t.subgroups:
        out.append(gap("the drift record has no subgroup slices (the CSV records no sex, age or projection)"))
        out.append("</section>")
        return "".join(out)
    head = (
        "Slice",
        "Images",
        "Status",
        "Worst Δ AUC",
        "Worst Δ sensitivity",
        "Worst Δ specificity",
        "Lowest agreement",
    )
    body = []
    for r in t.subgroups:
        if r.status is not None:
            status = f'{badge(NOT_EVALUABLE)} <span class="ne">{e(r.status)}</span>'
            cells = '<td colspan="4" class="ne">—</td>'
        else:
            status = badge(r.verdict)
            if r.verdict == FAIL and not gated:
                status += ' <span class="note">(reported only, not gated)</span>'
            if r.failures:
                status += '<ul class="why">' + "".join(f"<li>{e(c.describe())}</li>" for c in r.failures) + "</ul>"
            cells = (
                _worst_cell(r.worst_auc, "+.4f")
                + _worst_cell(r.worst_sens, "+.4f")
                + _worst_cell(r.worst_spec, "+.4f")
                + _worst_cell(r.lowest_agreement, ".3f")
            )
        body.append(
            f'<tr data-slice="{e(r.name)}"><td>{e(r.name)}</td><td class="num">{num(r.n_images, "d")}</td>'
            f"<td>{status}</td>{cells}</tr>"
        )
    out.append(
        '<table id="subgroup-table" class="subgroups">'
        f"<thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
        '<p class="note">Worst: the lowest value over the slice’s findings, with the finding. A slice is not '
        "evaluable when it is too small or lacks a class; its numbers would be noise.</p></section>"
    )
    return "".join(out)


def _figure(uri_or_png, alt: str) -> str:
    uri = uri_or_png if isinstance(uri_or_png, str) else png_data_uri(uri_or_png)
    return f'<img class="fig" src="{uri}" alt="{e(alt)}">'


def roc(d) -> str:
    out = ['<section id="roc"><h2>4. ROC curves per finding</h2>']
    out.append(
        '<p class="note">Computed by this report on the validation split: <span class="legend-swatch" '
        'style="border-top:2px solid #1f5fa8"></span>FP32 PyTorch (source run) <span class="legend-swatch" '
        'style="border-top:2px dashed #d9641e"></span>exported model through its runtime engine. '
        "Legend numbers are each curve’s AUC on these images. Both models’ probabilities are calibrated by the "
        "decision rule (as predict outputs them); calibration is monotone per finding, so it leaves the curves and "
        "AUCs unchanged.</p>"
    )
    for s in d.curves:
        if s.probs is None:
            out.append(gap(f"{s.label} curves unavailable: {s.why}"))
        elif s.note:
            out.append(f'<p class="note">{e(s.note)}</p>')
    if d.roc_png is not None:
        out.append(_figure(d.roc_png, "ROC curves, one panel per finding"))
    elif d.figure_why:
        out.append(gap(d.figure_why))
    out.append("</section>")
    return "".join(out)


def calibration(d) -> str:
    out = ['<section id="calibration"><h2>5. Calibration</h2>']
    rule = d.manifest.decision
    if d.reliability_png is not None:
        out.append(_figure(d.reliability_png, "Reliability diagram"))
    else:
        out.append(gap(d.figure_why or "no model could be scored here, so there is no reliability diagram to show"))
    rows = []
    for r in d.reliabilities:
        if r.curve is not None:
            value = f"ECE {num(r.curve['ece'])} over {r.curve['n']} cells"
        else:
            value = f'<span class="ne">not computed: {e(r.why or "no scores")}</span>'
        rows.append((r.label, value))
    t = d.table
    if t.ece.ref is not None or t.ece.new is not None:
        where = "computed here" if t.computed_here else "drift.json"
        rows.append(
            (
                f"At the drift gate ({where}, {split_name(t.split)}, after calibration)",
                e(
                    f"FP32 {num(t.ece.ref)} → exported {num(t.ece.new)}, Δ {num(t.ece.delta, '+.4f')} "
                    f"(95% CI {ci(t.ece.delta_ci, '+.4f')})"
                ),
            )
        )
    out.append(kv_table(rows, table_id="calibration-table"))
    if rule.calibration == "none":
        out.append(
            '<p class="note">The decision rule has no calibration (identity): the curves before and after '
            "calibration coincide.</p>"
        )
    out.append(
        '<p class="note">Held-out images (the report’s validation split). Before calibration: the plain sigmoid of '
        "the FP32 logits; after: the decision rule’s per-finding calibration, fitted on "
        f"{e(fitted_on(rule, d.manifest.source_run.data_fingerprint))}, as predict applies it. "
        "ECE: count-weighted mean |mean predicted − observed frequency| over 15 equal-width "
        "bins, all findings’ evaluated cells pooled. The exported model is deployed with the manifest’s "
        "thresholds on calibrated probabilities, so calibration shifts matter even when AUC does not move.</p>"
    )
    out.append("</section>")
    return "".join(out)


def input_guard(d) -> str:
    out = ['<section id="input-guard"><h2>5b. Input guard: is an image like the training images?</h2>']
    g = d.manifest.guard
    if g is None:
        out.append(gap("this artifact carries no input guard (exported before format 4)"))
        out.append("</section>")
        return "".join(out)
    if d.guard_png is not None:
        out.append(_figure(d.guard_png, "Input-guard score distributions"))
    held = g.held_out
    rows = [
        ("Method", e(g.method)),
        ("Threshold", e(f"{num(g.threshold, '.2f')}: {g.threshold_rule}")),
        (
            "Fitted on",
            e(
                f"training images ({g.n_fit}) for means and covariances; tuning split ({g.n_threshold}) for the "
                + ("scales and the threshold" if g.scales else "threshold")
            ),
        ),
        *([("Image statistics", e(f"{g.image_statistics} ({g.image_dim} numbers)"))] if g.image_statistics else []),
        (
            "Held-out images flagged (at export)",
            e(
                f"FP32 {num(held.flag_rate_ref, '.1%')}, exported {num(held.flag_rate_new, '.1%')} "
                f"of {held.n_images} (agreement {num(held.agreement, '.1%')})"
                if held is not None
                else "not recorded"
            ),
        ),
    ]
    for kind, v in (g.challenge or {}).items():
        rows.append((f"Flagged: {kind} (at export)", e(f"{num(v.get('flagged'), '.1%')} of {v.get('n')}")))
    out.append(kv_table(rows, table_id="guard-table"))
    out.append(
        '<p class="note">predict reports <code>in_distribution</code> and the score for every image and warns on '
        "flagged ones; <code>--strict-inputs</code> refuses them. The drift gate bounds the rise of the held-out "
        "flag rate from FP32 to the exported model, and verify checks the scores on the golden images. A model "
        "trained on synthetic phantoms is expected to flag real radiographs.</p>"
    )
    out.append("</section>")
    return "".join(out)


_BENCH_FIRST = (
    "backend",
    "target",
    "precision",
    "status",
    "latency",
    "p50",
    "p90",
    "p99",
    "throughput",
    "gflops",
    "macro",
)


def _bench_columns(rows: list[dict]) -> list[str]:
    keys: list[str] = []
    for row in rows:
        for k in flatten(row):
            if k not in keys:
                keys.append(k)

    def rank(k: str):
        low = k.lower()
        return (next((i for i, w in enumerate(_BENCH_FIRST) if w in low), len(_BENCH_FIRST)), keys.index(k))

    return sorted(keys, key=rank)


def _bench_cell(v) -> str:
    if isinstance(v, float):
        return f'<td class="num">{e(f"{v:.4g}")}</td>'
    if isinstance(v, int) and not isinstance(v, bool):
        return f'<td class="num">{e(v)}</td>'
    if isinstance(v, str) and v.lower() in ("pass", "ok", "passed"):
        return f"<td>{badge(PASS)}</td>"
    if isinstance(v, str) and ("fail" in v.lower() or "error" in v.lower()):
        return f'<td><span class="badge fail">{e(v)}</span></td>'
    return f"<td>{value_html(v)}</td>"


def bench(d) -> str:
    out = ['<section id="bench"><h2>6. Benchmark and compute bound</h2>']
    b = d.bench
    if b is None:
        out.append(
            gap(
                f"no benchmark supplied: run `mxa-edge bench ... --json bench.json`, then "
                f"`mxa-edge report {d.artifact_path} --bench bench.json`"
            )
        )
        out.append("</section>")
        return "".join(out)
    out.append(f'<p class="note">From <code>{e(b.path)}</code>.</p>')
    for p in b.problems:
        out.append(gap(f"bench file: {p}"))
    if b.rows:
        cols = _bench_columns(b.rows)
        head = "".join(f"<th>{e(c)}</th>" for c in cols)
        body = []
        for row in b.rows:
            flat = flatten(row)
            body.append("<tr>" + "".join(_bench_cell(flat[c]) if c in flat else "<td>—</td>" for c in cols) + "</tr>")
        out.append(
            f'<table id="bench-table" class="bench"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
        )
    elif not b.problems:
        out.append(gap("the bench file has no rows"))
    for title, section in (("Compute bound", b.compute_bound), ("Machine", b.machine)):
        out.append(f"<h3>{title}</h3>")
        if section is None:
            out.append(gap(f"the bench file has no {title.lower()} section"))
        elif isinstance(section, dict):
            out.append(kv_table([(k, value_html(v)) for k, v in flatten(section).items()]))
        else:
            out.append(f"<p>{value_html(section)}</p>")
    if b.other:
        out.append("<h3>Other fields</h3>" + kv_table([(k, value_html(v)) for k, v in flatten(b.other).items()]))
    out.append("</section>")
    return "".join(out)


def gallery(d) -> str:
    out = ['<section id="gallery"><h2>7. ROI and attention overlays on validation images</h2>']
    if d.gallery_why:
        out.append(gap(d.gallery_why))
    if d.gallery:
        out.append(
            '<p class="note">Exported model through the runtime Predictor. Heatmap: the first MXA block’s spatial '
            "attention inside its box (min–max scaled). Boxes: MXA ROIs (yellow; deepest red, thick). "
            + (
                "Dashed cyan: the phantom’s ground-truth finding boxes (boxes.csv). "
                if d.has_truth_boxes
                else "No ground-truth boxes: the dataset has no boxes.csv. "
            )
            + "Top-left: the three most probable findings, “+” at or above threshold.</p>"
        )
        figs = []
        for g in d.gallery:
            if g.problems:
                figs.append(f"<figure><figcaption>{e(g.file)}: {e('; '.join(g.problems))}</figcaption></figure>")
                continue
            cap = (
                f"<b>{e(g.file)}</b><br>labelled: {e(', '.join(g.truth) or 'none')}<br>"
                f"predicted: {e(', '.join(g.positives) or 'none')}"
            )
            figs.append(f"<figure>{_figure(g.png, 'overlay of ' + g.file)}<figcaption>{cap}</figcaption></figure>")
        out.append(f'<div class="gallery">{"".join(figs)}</div>')
    out.append("</section>")
    return "".join(out)


def export_settings(d) -> str:
    m = d.manifest
    t = d.table
    cal = m.calibration
    q = m.quantization
    pairs = [("Precision", value_html(m.precision.to_dict()))]
    if cal is not None:
        pairs += [
            ("Calibration set source", value_html(cal.source)),
            ("Calibration set size", value_html(cal.n)),
            ("Calibration set fingerprint", f"<code>{e(cal.fingerprint)}</code>"),
        ]
    else:
        pairs.append(("Calibration set", '<span class="ne">none (no post-training quantization)</span>'))
    # Every setting the target recorded, as the manifest has it (its keys differ per tool).
    settings = q.to_dict() if q is not None else {}
    kept_float = {k: v for k, v in settings.items() if any(w in k for w in ("exclu", "ignor", "revert", "float"))}
    for k, v in kept_float.items():
        pairs.append((f"Kept in float: {k}", value_html(v)))
    for k, v in settings.items():
        if k not in kept_float:
            pairs.append((f"Quantization: {k}", value_html(v)))
    if not settings:
        pairs.append(("Quantization", '<span class="ne">none</span>'))
    ac = accuracy_control_line(d)
    if ac:
        pairs.append(("Accuracy control fitted on", e(ac)))
    pairs.append(("QAT", value_html(m.qat.to_dict() if m.qat is not None else None)))
    for k, v in m.export.to_dict().items():
        pairs.append((f"Export: {k}", value_html(v)))
    spec = t.spec
    pairs += [
        ("Decision rule", decision_summary(m.decision, m.source_run.data_fingerprint, "see Model identity")),
        ("Drift gate bounds from", e(t.spec_source)),
        (
            "Drift bound: AUC",
            f"per finding drop ≤ {num(spec.max_drop, 'g')}, macro drop ≤ {num(spec.max_macro_drop, 'g')}",
        ),
        (
            "Drift bound: decisions",
            f"sensitivity drop ≤ {num(spec.max_sens_drop, 'g')}, specificity drop ≤ {num(spec.max_spec_drop, 'g')} "
            f"(never finer than 1/n), agreement ≥ {num(spec.min_agreement, 'g')}",
        ),
        ("Drift bound: calibration", f"ECE rise ≤ {num(spec.max_ece_increase, 'g')}"),
        ("Drift gate mode", e(spec.mode)),
        ("Subgroups", "gated" if spec.subgroups else "reported only"),
        ("Verdict split", e(provenance(d))),
        ("Executed precision at the gate", e((d.drift or {}).get("executed_precision", "not recorded"))),
        (
            "CPU classes checked at export",
            checked_classes(m.verification.checked_on if m.verification is not None else None),
        ),
        (
            "Drift gate ran",
            e(
                f"{(d.drift or {}).get('gated_file', '—')} through {(d.drift or {}).get('gated_runtime', '—')}"
                f" ({(d.drift or {}).get('gated_with') or 'the deployed runtime'})"
            )
            if d.drift
            else '<span class="ne">no drift.json in the artifact</span>',
        ),
    ]
    return '<section id="export-settings"><h2>8. Export settings</h2>' + kv_table(pairs) + "</section>"


def checked_classes(checked: KernelClassChecks | None) -> str:
    """Each INT8 kernel class the export ran the golden images on, how, and the largest logit
    difference (``verification.checked_on``)."""
    if checked is None:
        return '<span class="ne">not recorded (exported before CPU classes were)</span>'
    rows = []
    for cls, entry in checked.classes.items():
        if not entry.get("checked"):
            rows.append(f"{e(cls)}: not checked ({e(entry.get('why') or entry.get('how'))})")
        elif "tolerance" in entry:
            verdict = PASS if entry.get("passed") else FAIL
            rows.append(
                f"{e(cls)}: {e(entry.get('how'))}, max |Δlogit| {num(entry['max_abs_logit'], '.4f')} "
                f"(tolerance {num(entry['tolerance'], '.4f')}) {badge(verdict)}"
            )
        else:
            rows.append(f"{e(cls)}: {e(entry.get('how'))}")
    if checked.int8_scheme:
        weight = "n/a" if checked.max_abs_int8_weight is None else checked.max_abs_int8_weight
        rows.append(f"INT8 scheme {e(checked.int8_scheme)}; largest int8 weight {e(weight)}")
    return "<br>".join(rows)


def gaps(d) -> str:
    items = "".join(f"<li>{e(g)}</li>" for g in d.gaps)
    body = f"<ul>{items}</ul>" if items else "<p>None: every section was generated from records or computed here.</p>"
    return f'<section id="gaps"><h2>9. What this report could not show</h2>{body}</section>'


def page(d) -> str:
    sections = [
        header(d),
        identity(d),
        pathology(d),
        subgroups(d),
        roc(d),
        calibration(d),
        input_guard(d),
        bench(d),
        gallery(d),
        export_settings(d),
        gaps(d),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"{REPORT_META}"  # how ``mxa_edge.support.outputs`` knows that a later report may replace this file
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(d.manifest.model_id)}: validation report</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(sections)}</main></body></html>\n"
    )
