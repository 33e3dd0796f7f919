"""``mxa-edge serve``: a DICOM node (Storage SCP) that predicts each study and sends a structured report."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mxa_edge_cli.options import AllowRejectedOpt, TrustOpt


def serve(
    model: Path = typer.Option(
        ..., "--model", "-m", help="Exported artifact folder (from `mxa-edge export`).", show_default=False
    ),
    ae_title: str = typer.Option("MXAEDGE", "--ae-title", help="This node's AE title."),
    port: int = typer.Option(11112, "--port", min=1, max=65535, help="TCP port to listen on."),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on. The default accepts this machine only; 0.0.0.0 exposes the node to the network "
        "(restrict callers with --allow-ae and a firewall).",
    ),
    allow_ae: Optional[List[str]] = typer.Option(
        None, "--allow-ae", help="Calling AE title accepted; repeat for several. Default: any.", show_default=False
    ),
    send_to: Optional[str] = typer.Option(
        None,
        "--send-to",
        help="Send each report by C-STORE to AE@HOST:PORT (e.g. PACS@10.0.0.5:104).",
        show_default=False,
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Write each report into this folder as <SOPInstanceUID>.dcm instead.", show_default=False
    ),
    fhir: Optional[Path] = typer.Option(
        None,
        "--fhir",
        help="Also write each study's report as a FHIR R4 Bundle (DiagnosticReport + Observations, JSON) into "
        "this folder, as <Bundle.id>.json, when its SR is delivered.",
        show_default=False,
    ),
    queue: Path = typer.Option(
        Path("mxa-edge-queue"),
        "--queue",
        help="Durable queue folder: received instances, reports to send, ledger, "
        "audit.jsonl. Whatever is pending there is resumed on start.",
    ),
    idle_timeout: float = typer.Option(
        10.0,
        "--idle-timeout",
        min=0.1,
        help="A study is complete when its association ends, or after this many seconds without a new instance.",
    ),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Inference threads. Default: all cores."),
    max_studies: Optional[int] = typer.Option(
        None, "--max-studies", min=1, help="Stop after this many studies were finished (bounded runs, tests)."
    ),
    run_seconds: Optional[float] = typer.Option(
        None, "--run-seconds", min=0.1, help="Stop after this many seconds (bounded runs, tests)."
    ),
    trust: Optional[List[Path]] = TrustOpt,
    allow_rejected: bool = AllowRejectedOpt,
    json_out: bool = typer.Option(False, "--json", help="Log one JSON object per line on stdout."),
):
    """Serve as a DICOM node: receive studies (C-STORE), predict the frontal chest radiographs, send a report.

    The artifact is loaded and verified on this machine once, before the port opens (exit 8 when its golden
    vectors do not reproduce). Every instance is written durably to the queue before it is acknowledged; a study
    is predicted when its association ends or after --idle-timeout seconds without a new instance; files that are
    not frontal chest radiographs are skipped with the reason. Reports carry UIDs derived from the study, the
    artifact and the instances, so a retry or a restart never delivers one twice. A destination that is down is
    retried with backoff, the backlog logged. Every event is appended to QUEUE/audit.jsonl.
    """
    import json
    import signal
    import sys

    from mxa_edge.runtime.node import Node, NodeConfig, parse_destination
    from mxa_edge.runtime.predict import Predictor
    from mxa_edge_cli.output import Output, announce_artifact, json_safe

    destination = parse_destination(send_to, out)
    o = Output(json_out, quiet=False)
    predictor = Predictor(model, threads, verify=True, allow_rejected=allow_rejected, trust=trust)
    announce_artifact(o, predictor.artifact)
    if predictor.verification is not None:
        o.info(f"verified {model} on this machine ({predictor.verification.isa}): PASS")

    def log(record: dict) -> None:
        if json_out:
            sys.stdout.write(json.dumps(json_safe(record)) + "\n")
            sys.stdout.flush()
        else:
            level = record.get("level", "info")
            prefix = "" if level == "info" else f"{level}: "
            typer.secho(prefix + record["message"], err=True, fg={"warning": "yellow", "error": "red"}.get(level))

    config = NodeConfig(
        destination=destination,
        ae_title=ae_title,
        host=host,
        port=port,
        allow_ae=tuple(allow_ae or ()),
        queue=queue,
        idle_timeout=idle_timeout,
        max_studies=max_studies,
        run_seconds=run_seconds,
        fhir=fhir,
    )
    node = Node(predictor, config, log)
    signal.signal(signal.SIGTERM, lambda *_: node.stop())
    node.run()
