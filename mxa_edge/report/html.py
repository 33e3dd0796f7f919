"""HTML rendering of the report: one function per section, all text escaped, no scripts.

Every value arrives already computed (``builder.ReportData``); this module only formats. The
page references nothing outside itself: CSS is inline, images are data: URIs, fonts are the
system's.
"""

from __future__ import annotations

import json
from html import escape

from mxa_edge.report.figures import png_data_uri
from mxa_edge.report.records import flatten
from mxa_edge.report.tables import FAIL, NOT_EVALUABLE, PASS

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
.badge.na { background: #8d96a3; } .badge.big { font-size: 15px; padding: 3px 12px; }
.ne { color: var(--muted); font-style: italic; }
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


def kv_table(pairs, cls: str = "kv") -> str:
    body = "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="{cls}"><tbody>{body}</tbody></table>'


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


def header(d) -> str:
    t = d.table
    verdict = None if t.passed is None else (PASS if t.passed else FAIL)
    nav = "".join(
        f'<a href="#{i}">{e(n)}</a>'
        for i, n in (
            ("identity", "Identity"),
            ("per-pathology", "Per-pathology AUC"),
            ("roc", "ROC"),
            ("calibration", "Calibration"),
            ("bench", "Benchmark"),
            ("gallery", "Gallery"),
            ("export-settings", "Export settings"),
            ("gaps", "Gaps"),
        )
    )
    return (
        f'<header class="top"><h1>Model validation report: {e(d.manifest.model_id)}</h1>'
        f"<div>Drift gate {badge(verdict, big=True)} "
        f'<span class="sub">max per-finding AUC drop {num(t.max_drop, "g")}, '
        f"max macro drop {num(t.max_macro_drop, 'g')}"
        f" · {e(d.manifest.runtime)} · weights {e(d.manifest.precision.weights)}</span></div>"
        f'<div class="sub">Report generated {e(d.generated)} by mxa-edge {e(d.tool_version)} '
        "for sign-off before deployment.</div>"
        f"<nav>{nav}</nav></header>"
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
            "which lists every model file's sha256</span>",
        ),
        ("Artifact folder", f"<code>{e(d.artifact_path)}</code>"),
        ("Model id", e(m.model_id)),
        ("Backend / entry", f"{e(m.runtime)} / <code>{e(m.entry)}</code>"),
        ("Model files (sha256, verified)", files),
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
        ("Labels / thresholds", e(", ".join(f"{k} {v:g}" for k, v in m.thresholds.items()))),
        ("Preprocess", value_html(m.preprocess.to_dict())),
        ("Versions", versions),
        ("Created", e(m.created)),
    ]
    manifest = json.dumps(m.to_dict(), indent=2, sort_keys=False)
    return (
        '<section id="identity"><h2>1. Model identity</h2>'
        + kv_table(pairs)
        + f"<details><summary>manifest.json</summary><pre>{e(manifest)}</pre></details></section>"
    )


def pathology(d) -> str:
    t = d.table
    head = (
        "Finding",
        "n+ / n−",
        "FP32 AUC",
        "95% CI",
        "Exported AUC",
        "95% CI",
        "Δ AUC",
        "95% CI of Δ",
        "Agreement",
        "Verdict",
    )
    rows = []
    for r in t.rows:
        counts = f"{r.n_pos} / {r.n_neg}" if r.n_pos is not None else "—"
        if r.verdict == NOT_EVALUABLE:
            why = "no positives" if r.n_pos == 0 else "no negatives" if r.n_neg == 0 else "one class"
            cells = f'<td colspan="7" class="ne">not evaluable ({e(why)} in the validation split)</td>'
        else:
            cells = "".join(
                f'<td class="num">{c}</td>'
                for c in (
                    num(r.auc_ref),
                    ci(r.auc_ref_ci),
                    num(r.auc_new),
                    ci(r.auc_new_ci),
                    num(r.delta, "+.4f"),
                    ci(r.delta_ci, "+.4f"),
                    num(r.agreement),
                )
            )
        rows.append(
            f'<tr data-finding="{e(r.name)}"><td>{e(r.name)}</td><td '
            f'class="num">{counts}</td>{cells}<td>{badge(r.verdict)}</td></tr>'
        )
    mc = t.macro
    foot = (
        f"<tr><td>macro ({len([r for r in t.rows if r.verdict not in (NOT_EVALUABLE, 'no record')])} "
        f'evaluable)</td><td class="num">{num(t.n_images, "d")} images</td>'
        + "".join(
            f'<td class="num">{c}</td>'
            for c in (
                num(mc.auc_ref),
                ci(mc.auc_ref_ci),
                num(mc.auc_new),
                ci(mc.auc_new_ci),
                num(mc.delta, "+.4f"),
                ci(mc.delta_ci, "+.4f"),
                num(mc.agreement),
            )
        )
        + f"<td>{badge(mc.verdict)}</td></tr>"
    )
    overall = None if t.passed is None else (PASS if t.passed else FAIL)
    bounds = (
        f"A finding FAILS when its AUC drops by more than {num(t.max_drop, 'g')}; the macro AUC may drop by at most "
        f"{num(t.max_macro_drop, 'g')}. Δ = exported − FP32."
    )
    notes = "".join(f'<p class="note">{e(n)}</p>' for n in t.notes)
    return (
        '<section id="per-pathology"><h2>2. Per-pathology AUC: FP32 vs exported, drift verdict</h2>'
        f"<p>Overall: {badge(overall, big=True)} {e(bounds)}</p>"
        '<table id="pathology-table" class="per-pathology">'
        f"<thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody><tfoot>{foot}</tfoot></table>"
        f'<p class="note">{e(t.source)}</p>{notes}</section>'
    )


def _figure(uri_or_png, alt: str) -> str:
    uri = uri_or_png if isinstance(uri_or_png, str) else png_data_uri(uri_or_png)
    return f'<img class="fig" src="{uri}" alt="{e(alt)}">'


def roc(d) -> str:
    out = ['<section id="roc"><h2>3. ROC curves per finding</h2>']
    out.append(
        '<p class="note">Computed by this report on the validation split: <span class="legend-swatch" '
        'style="border-top:2px solid #1f5fa8"></span>FP32 PyTorch (source run) <span class="legend-swatch" '
        'style="border-top:2px dashed #d9641e"></span>exported model through its runtime engine. '
        "Legend numbers are each curve’s AUC on these images.</p>"
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
    out = ['<section id="calibration"><h2>4. Calibration</h2>']
    if d.reliability_png is not None:
        out.append(_figure(d.reliability_png, "Reliability diagram"))
        rows = [(s.label, f"{num(r['ece'])} ECE over {r['n']} cells") for s, r in zip(d.curves, d.reliabilities) if r]
        out.append(kv_table(rows))
        out.append(
            '<p class="note">ECE: count-weighted mean |mean predicted − observed frequency| over 15 equal-width '
            "bins, all findings’ evaluated cells pooled. The exported model is deployed with the manifest’s "
            "thresholds, so calibration shifts matter even when AUC does not move.</p>"
        )
    else:
        out.append(gap(d.figure_why or "no model could be scored here, so there is no calibration to show"))
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
    out = ['<section id="bench"><h2>5. Benchmark and compute bound</h2>']
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
    out = ['<section id="gallery"><h2>6. ROI and attention overlays on validation images</h2>']
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
    if cal:
        pairs += [
            ("Calibration set source", value_html(cal.get("source"))),
            ("Calibration set size", value_html(cal.get("n"))),
            ("Calibration set fingerprint", f"<code>{e(cal.get('fingerprint'))}</code>"),
        ]
    else:
        pairs.append(("Calibration set", '<span class="ne">none (no post-training quantization)</span>'))
    kept_float = {k: v for k, v in (q or {}).items() if any(w in k for w in ("exclu", "ignor", "revert", "float"))}
    for k, v in kept_float.items():
        pairs.append((f"Kept in float: {k}", value_html(v)))
    for k, v in (q or {}).items():
        if k not in kept_float:
            pairs.append((f"Quantization: {k}", value_html(v)))
    if not q:
        pairs.append(("Quantization", '<span class="ne">none</span>'))
    pairs.append(("QAT", value_html(m.qat)))
    for k, v in m.to_dict()["export"].items():
        pairs.append((f"Export: {k}", value_html(v)))
    pairs += [
        ("Drift bound: per finding", f"AUC drop ≤ {num(t.max_drop, 'g')}"),
        ("Drift bound: macro", f"AUC drop ≤ {num(t.max_macro_drop, 'g')}"),
        ("Executed precision at the gate", e((d.drift or {}).get("executed_precision", "not recorded"))),
        (
            "Drift gate ran",
            e(f"{(d.drift or {}).get('gated_file', '—')} through {(d.drift or {}).get('gated_runtime', '—')}")
            if d.drift
            else '<span class="ne">no drift.json in the artifact</span>',
        ),
    ]
    return '<section id="export-settings"><h2>7. Export settings</h2>' + kv_table(pairs) + "</section>"


def gaps(d) -> str:
    items = "".join(f"<li>{e(g)}</li>" for g in d.gaps)
    body = f"<ul>{items}</ul>" if items else "<p>None: every section was generated from records or computed here.</p>"
    return f'<section id="gaps"><h2>8. What this report could not show</h2>{body}</section>'


def page(d) -> str:
    sections = [
        header(d),
        identity(d),
        pathology(d),
        roc(d),
        calibration(d),
        bench(d),
        gallery(d),
        export_settings(d),
        gaps(d),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(d.manifest.model_id)}: validation report</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(sections)}</main></body></html>\n"
    )
