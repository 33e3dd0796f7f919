"""Typer CLI for mxa-edge (installed as ``mxa_edge_cli``)."""
