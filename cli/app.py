"""The ``mxa-edge`` command: wires subcommands, maps known errors to one-line messages.

Each subcommand lives in its own module under ``commands/`` and imports the library (and
torch) only when it runs, so ``mxa-edge --help`` and ``predict`` stay light.
Set MXA_EDGE_DEBUG=1 to see full tracebacks.
"""

from __future__ import annotations

import os
import sys

import typer

from mxa_edge import __version__
from mxa_edge_cli.commands import bench, data, export, predict, report, serve, signing, train, verify
from mxa_edge_cli.commands import eval as eval_cmd
from mxa_edge_cli.commands import monitor as monitor_cmd

app = typer.Typer(
    name="mxa-edge",
    help="Train, quantize, export, check and run EfficientViT+MXA chest X-ray classifiers (14 CheXpert findings) "
    "on workstations and edge boxes. Works offline.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool):
    if value:
        typer.echo(f"mxa-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
):
    """Chest X-ray classifiers from training to the point of care."""


app.add_typer(data.app, name="data")
app.command("train")(train.train)
app.command("eval")(eval_cmd.eval_)
app.command("export")(export.export)
app.command("bench")(bench.bench)
app.command("predict")(predict.predict)
app.command("serve")(serve.serve)
app.command("report")(report.report)
app.command("verify")(verify.verify)
app.command("monitor")(monitor_cmd.monitor)
app.command("keys")(signing.keys)
app.command("sign")(signing.sign)


def main() -> None:
    from mxa_edge.support.errors import MxaError

    try:
        app()
    except MxaError as exc:
        if os.environ.get("MXA_EDGE_DEBUG"):
            raise
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True, fg=typer.colors.RED)
        sys.exit(130)


if __name__ == "__main__":
    main()
