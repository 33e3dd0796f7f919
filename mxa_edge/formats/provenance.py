"""Who signed an artifact: OpenSSF ``model-signing`` with a key pair the site controls.

The manifest's digest (``artifact_sha256``) and the per-file SHA-256 list say the files agree
with each other; anyone who edits a file can recompute both. A signature says WHO vouched for
this exact folder: ``mxa-edge sign`` (or ``export --sign-key``) signs every file of the artifact
(manifest, model, drift record, guard, golden vectors) with an elliptic-curve private key into
``model.sig``, a Sigstore bundle (DSSE envelope over an in-toto statement listing each file's
SHA-256). ``load_artifact`` checks it against the public keys the site trusts (``--trust``, or
``MXA_EDGE_TRUST``) and refuses an artifact that no trusted key signed. Without a trust key
nothing is checked and every output says so ("unsigned" or "signed, not checked").

Offline: key-based signing and verification need no network. The same ``model.sig`` verifies
with the library's own CLI: ``model_signing verify key ART --signature ART/model.sig
--public_key site.pub``. Imported lazily: the light runtime pays for it only when it signs or
checks.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from mxa_edge.formats import naming
from mxa_edge.support.errors import ArtifactError, ConfigError, MissingDependencyError

# model_signing's usual name; inside the artifact, excluded from what it signs (one name: naming.SIGNATURE)
SIGNATURE_FILE = naming.SIGNATURE
TRUST_ENV = "MXA_EDGE_TRUST"  # public key file(s) trusted by default, separated by os.pathsep
SIGNING_KEY_ENV = "MXA_EDGE_SIGNING_KEY"  # export's default --sign-key
PRIVATE_KEY_NAME, PUBLIC_KEY_NAME = "mxa-edge-signing.key", "mxa-edge-signing.pub"

UNSIGNED, SIGNED_UNCHECKED, TRUSTED = "unsigned", "signed, not checked", "signed by a trusted key"


class UntrustedArtifactError(ArtifactError):
    """A trust key is configured and no trusted key signed this artifact (or its files changed since)."""

    exit_code = 10


@dataclass
class Provenance:
    """What the signature says, in one word for tables (``status``) and one line for people."""

    status: str  # UNSIGNED / SIGNED_UNCHECKED / TRUSTED
    key: str | None = None  # fingerprint of the signing key (sha256 of its PEM public key)
    trusted_keys: list[str] = field(default_factory=list)  # fingerprints configured here

    def describe(self) -> str:
        if self.status == TRUSTED:
            return f"{TRUSTED} ({_short(self.key)})"
        if self.status == SIGNED_UNCHECKED:
            return f"{SIGNED_UNCHECKED} ({_short(self.key)}; no trust key configured: --trust or {TRUST_ENV})"
        return f"{UNSIGNED} (no {SIGNATURE_FILE}: nobody vouched for it beyond its own digest)"

    def to_dict(self) -> dict:
        return {"status": self.status, "key": self.key, "trusted_keys": list(self.trusted_keys)}


def _short(fingerprint: str | None) -> str:
    return f"key {fingerprint[:16]}" if fingerprint else "unknown key"


def _model_signing():
    try:
        import model_signing  # noqa: F401
        import model_signing.signing  # noqa: F401
        import model_signing.verifying  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"model-signing is not importable ({exc}); it is a dependency of mxa-edge: "
            "pip install model-signing pyopenssl"
        ) from None
    return model_signing


def key_fingerprint(public_key_pem: bytes) -> str:
    """model_signing's key hint: sha256 of the PEM SubjectPublicKeyInfo (the same bytes it hashes)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_public_key(public_key_pem)
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def _read_public_key(path: Path) -> bytes:
    try:
        pem = Path(path).read_bytes()
        key_fingerprint(pem)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the trust key ({exc.strerror or exc})") from None
    except ValueError:
        raise ConfigError(f"{path}: not a PEM public key (make one with `mxa-edge keys`)") from None
    return pem


def trust_keys(values=None) -> list[Path]:
    """The public keys to trust: ``values`` (``--trust``) when given, else ``MXA_EDGE_TRUST``."""
    if values:
        return [Path(v) for v in values]
    env = os.environ.get(TRUST_ENV, "")
    return [Path(p) for p in env.split(os.pathsep) if p.strip()]


def signature_key(folder) -> str | None:
    """The signing key's fingerprint recorded in ``folder/model.sig`` (None: no signature)."""
    import json

    path = Path(folder) / SIGNATURE_FILE
    if not path.is_file():
        return None
    try:
        bundle = json.loads(path.read_text())
        return str(bundle["verificationMaterial"]["publicKey"]["hint"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ArtifactError(f"{path}: not a model-signing signature bundle") from None


def check_provenance(folder, trust=None) -> Provenance:
    """Check ``folder/model.sig`` against the trusted keys (``trust_keys(trust)``); raises
    UntrustedArtifactError when keys are configured and none of them verifies every file."""
    folder = Path(folder)
    keys = trust_keys(trust)
    signer = signature_key(folder)
    if not keys:
        return Provenance(SIGNED_UNCHECKED if signer else UNSIGNED, signer)
    pems = {p: _read_public_key(p) for p in keys}
    fingerprints = {p: key_fingerprint(pem) for p, pem in pems.items()}
    trusted = sorted(set(fingerprints.values()))
    if signer is None:
        raise UntrustedArtifactError(
            f"{folder}: unsigned, and this site trusts only signed artifacts ({len(keys)} trust key(s) configured); "
            f"sign it with `mxa-edge sign {folder} --key KEY` after review"
        )
    match = [p for p, fp in fingerprints.items() if fp == signer]
    if not match:
        raise UntrustedArtifactError(
            f"{folder}: signed by key {signer[:16]}, which is not among the trusted keys "
            f"({', '.join(fp[:16] for fp in trusted)})"
        )
    ms = _model_signing()
    try:
        (
            ms.verifying.Config()
            .use_elliptic_key_verifier(public_key=match[0])
            .set_hashing_config(ms.hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE]))
            # Files the manifest does not list are never read; the manifest lists every file it uses.
            .set_ignore_unsigned_files(True)
            .verify(folder, folder / SIGNATURE_FILE)
        )
    except ValueError as exc:
        import re

        # model-signing lists each file with its raw digests; name the files, not the bytes.
        changed = sorted(set(re.findall(r"(?:for|file) \\?'([^'\\]+)\\?'", str(exc))))
        first = ", ".join(changed) if changed else str(exc).splitlines()[0][:160]
        raise UntrustedArtifactError(
            f"{folder}: the signature by trusted key {signer[:16]} does not match the files "
            f"(changed after signing): {first}"
        ) from None
    return Provenance(TRUSTED, signer, trusted)


def signing_key_fingerprint(private_key, password: str | None = None) -> str:
    """Read the private key (ConfigError naming the file when it cannot sign) and return its
    public key's fingerprint: checked before an export starts, not after it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private_key = Path(private_key)
    try:
        key = serialization.load_pem_private_key(
            private_key.read_bytes(), password=password.encode() if password else None
        )
    except OSError as exc:
        raise ConfigError(f"{private_key}: cannot read the signing key ({exc.strerror or exc})") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{private_key}: not a usable PEM private key ({str(exc).splitlines()[0]})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{private_key}: not an elliptic-curve key; make one with `mxa-edge keys`")
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key_fingerprint(pub)


def sign_folder(folder, private_key, password: str | None = None) -> str:
    """Sign every file of ``folder`` into ``folder/model.sig`` (written under a temporary name,
    then renamed); returns the key's fingerprint. The caller checks the artifact first."""
    folder, private_key = Path(folder), Path(private_key)
    fingerprint = signing_key_fingerprint(private_key, password)
    ms = _model_signing()
    tmp = folder / f".{SIGNATURE_FILE}.tmp"
    try:
        (
            ms.signing.Config()
            .use_elliptic_key_signer(private_key=private_key, password=password)
            .set_hashing_config(ms.hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE, tmp.name]))
            .sign(folder, tmp)
        )
        os.replace(tmp, folder / SIGNATURE_FILE)
    except ValueError as exc:  # e.g. an RSA key: model-signing's key signer takes EC keys
        raise ConfigError(f"{private_key}: cannot sign with this key ({exc})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return fingerprint


def generate_key_pair(out_dir, password: str | None = None) -> tuple[Path, Path, str]:
    """A new P-256 key pair in ``out_dir`` (private key owner-only, never overwritten);
    returns (private, public, fingerprint)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    out_dir = Path(out_dir)
    private, public = out_dir / PRIVATE_KEY_NAME, out_dir / PUBLIC_KEY_NAME
    for p in (private, public):
        if p.exists():
            raise ConfigError(
                f"{p}: exists; refusing to replace a key (artifacts signed with it would lose their signer)"
            )
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    public.write_bytes(pub)
    return private, public, key_fingerprint(pub)
