"""``mxa-edge keys`` and ``mxa-edge sign``: the site's signing key pair, and signing an
artifact after review (``mxa_edge.formats.provenance``: OpenSSF model-signing, offline)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from mxa_edge_cli.options import JsonOpt, QuietOpt, TrustOpt
from mxa_edge_cli.output import Output

PasswordEnv = "MXA_EDGE_SIGNING_KEY_PASSWORD"


def keys(
    out: Path = typer.Option(
        Path("."), "--out", "-o", help="Folder for mxa-edge-signing.key (private, mode 600) and mxa-edge-signing.pub."
    ),
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Make a signing key pair (ECDSA P-256) for this site.

    Keep the private key with the team that signs models off (it never leaves that machine; set
    MXA_EDGE_SIGNING_KEY_PASSWORD to encrypt it). Copy the public key to every workstation and
    trust it there: `mxa-edge predict ... --trust site.pub`, or MXA_EDGE_TRUST=/etc/mxa/site.pub.
    Existing key files are never replaced. The same pair works with `openssl` and `model_signing`.
    """
    from mxa_edge.formats.provenance import generate_key_pair

    o = Output(json_out, quiet)
    private, public, fingerprint = generate_key_pair(out, os.environ.get(PasswordEnv) or None)
    o.result(
        {"private_key": str(private), "public_key": str(public), "fingerprint": fingerprint},
        lambda c: c.print(
            f"private key: {private} (keep it secret)\npublic key:  {public} (trust it with --trust)\n"
            f"fingerprint: {fingerprint}",
            markup=False,
        ),
    )


def sign(
    artifact: Path = typer.Argument(..., help="Exported artifact folder (from `mxa-edge export`) to sign."),
    key: Path = typer.Option(
        ...,
        "--key",
        "-k",
        envvar="MXA_EDGE_SIGNING_KEY",
        help="EC private key (PEM) from `mxa-edge keys`. Password, if any: $MXA_EDGE_SIGNING_KEY_PASSWORD.",
        show_default=False,
    ),
    trust: Optional[List[Path]] = TrustOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Sign an artifact after review: its manifest, model, drift record, guard and golden vectors.

    The artifact is checked first (every hash; a rejected artifact is never signed; with --trust, an
    existing signature must verify). Writes ARTIFACT/model.sig, a Sigstore bundle from OpenSSF
    model-signing that `predict/verify --trust PUBKEY` check, and that `model_signing verify key ARTIFACT
    --signature ARTIFACT/model.sig --public_key PUBKEY` checks too. Replaces an earlier signature.
    """
    from mxa_edge.formats import load_artifact
    from mxa_edge.formats.provenance import check_provenance, sign_folder

    o = Output(json_out, quiet)
    art = load_artifact(artifact, trust=trust or ())  # integrity and verdict: refuses a rejected artifact
    fingerprint = sign_folder(art.path, key, os.environ.get(PasswordEnv) or None)
    check_provenance(art.path, ())  # reads the new bundle back
    o.result(
        {"artifact": str(art.path), "signature": str(art.path / "model.sig"), "key": fingerprint},
        lambda c: c.print(f"signed {art.path} with key {fingerprint[:16]} -> {art.path / 'model.sig'}", markup=False),
    )
