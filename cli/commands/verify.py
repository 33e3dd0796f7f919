"""``mxa-edge verify``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mxa_edge_cli.options import AllowRejectedOpt, JsonOpt, QuietOpt, TrustOpt
from mxa_edge_cli.output import Output, announce_artifact, artifact_status


def verify(
    artifact: Path = typer.Argument(..., help="Exported artifact folder (from `mxa-edge export`)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Inference threads. Default: all cores."),
    trust: Optional[List[Path]] = TrustOpt,
    allow_rejected: bool = AllowRejectedOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Check that THIS machine reproduces what the drift gate checked on the build machine.

    Runs the artifact's golden vectors (held-out images stored at export, with the exported
    model's logits measured at gate time) through the local runtime and compares: PASS when the
    largest logit difference is within the manifest's tolerance. Prints the machine's ISA
    (AVX2 / AVX-512 / VNNI / AMX / bf16) and the precision the runtime really executes. Exit 8 on FAIL.

    Before that, every file is checked against the manifest's hashes, the signature against the
    trusted keys (--trust; exit 10 when none of them signed it) and the drift gate's verdict
    (exit 9 for a rejected artifact unless --allow-rejected).
    """
    from mxa_edge.formats import load_artifact
    from mxa_edge.runtime.verify import verify_artifact
    from mxa_edge.support.errors import VerificationError

    o = Output(json_out, quiet)
    art = load_artifact(artifact, allow_rejected=allow_rejected, trust=trust)
    announce_artifact(o, art)
    report = verify_artifact(art, threads=threads)

    def render(console):
        verdict = "[green]PASS[/]" if report.passed else "[red]FAIL[/]"
        console.print(f"{artifact}: {verdict}")
        console.print(f"signature: {art.provenance.describe()}", markup=False)
        if art.allowed_rejected:
            console.print(f"drift gate: {art.gate_line()}", style="bold red", markup=False)
        console.print(f"machine: {report.machine.get('cpu_model')} — ISA {report.isa}")
        console.print(f"executed: {report.executed_precision}; INT8 kernels: {report.int8_kernels}")
        if report.checked_on:
            shown = ", ".join(
                f"{c} ({e.get('how')}{'' if e.get('checked') else ': not checked'})"
                for c, e in report.checked_on.items()
            )
            console.print(f"checked at export on: {shown}")
        if report.note:
            console.print(f"[yellow]note:[/] {report.note}")
        gate = report.recorded
        console.print(
            f"gated on: {gate.get('gate_isa')} — {gate.get('executed_precision')} — with {gate.get('gated_with')}"
        )
        console.print(
            f"max |Δlogit| {report.max_abs_logit:.2e} (tolerance {report.tolerance:.2e}) over {report.n_images} "
            f"golden images; decisions at the manifest thresholds agree {report.decision_agreement:.1%}"
        )

    o.result({**report.to_dict(), **artifact_status(art)}, render)
    if not report.passed:
        raise VerificationError(f"{artifact}: {report.reason}")
