"""An artifact is exactly what the gate passed, signed by whom the site trusts, or it is refused.

Real exports (ONNX Runtime, FP32, a quick phantom run), real OpenSSF model-signing key pairs,
the real CLI in a subprocess. Each case edits an artifact the way a careless or hostile user
would, recomputes the manifest digest where that is what the attack needs, and checks that every
command that loads the artifact refuses it with one line naming the problem.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("model_signing")

from mxa_edge.decision.gate import GateSpec  # noqa: E402
from mxa_edge.formats import load_artifact  # noqa: E402
from mxa_edge.formats.artifact import DIGEST_FIELD, RejectedArtifactError, manifest_digest  # noqa: E402
from mxa_edge.formats.provenance import (  # noqa: E402
    SIGNATURE_FILE,
    TRUSTED,
    UNSIGNED,
    UntrustedArtifactError,
    generate_key_pair,
    sign_folder,
)
from mxa_edge.support.errors import ArtifactError  # noqa: E402

CLI = [sys.executable, "-m", "mxa_edge_cli.app"]
EXIT_REJECTED, EXIT_UNTRUSTED, EXIT_ARTIFACT = 9, 10, 6


@pytest.fixture(scope="module")
def exported(small_onnx_artifact, tmp_path_factory):
    """(run, published FP32 ONNX artifact, the rejected one kept as NAME.rejected, an image)."""
    from PIL import Image

    from mxa_edge.support.errors import DriftGateError
    from mxa_edge.torch_side.export import export_run

    tmp = tmp_path_factory.mktemp("provenance")
    run, art = small_onnx_artifact
    impossible = GateSpec(max_macro_drop=-1.0, max_drop=-1.0)  # an AUC gain of 1 cannot happen
    with pytest.raises(DriftGateError) as info:
        export_run(run, "onnx", tmp / "onnx-strict", gate=impossible, n_boot=0)
    image = tmp / "image.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((96, 80)) * 255).astype(np.uint8)).save(image)
    return run, art, info.value.result.rejected, image


@pytest.fixture(scope="module")
def site_keys(tmp_path_factory):
    """Two key pairs: the site's and somebody else's."""
    base = tmp_path_factory.mktemp("keys")
    return generate_key_pair(base / "site"), generate_key_pair(base / "other")


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _edit_manifest(folder: Path, edit) -> None:
    """Edit manifest.json and recompute its digest, as anyone can: integrity alone passes."""
    path = folder / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    m[DIGEST_FIELD] = manifest_digest(m)
    path.write_text(json.dumps(m, indent=2))


def _rehash(folder: Path, name: str) -> None:
    """After editing ``name``, record its new hash (and the digest): a consistent forgery."""
    from mxa_edge.support.fileio import sha256_file

    digest = sha256_file(folder / name)

    def edit(m):
        m["files"][name] = digest
        if name in (m.get("verification") or {}).get("files", {}):
            m["verification"]["files"][name] = digest

    _edit_manifest(folder, edit)


def _cli(*args, env=None, timeout=300):
    import os

    full_env = {k: v for k, v in os.environ.items() if k != "MXA_EDGE_TRUST"}  # only what the test sets
    full_env.update(env or {})
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, env=full_env, timeout=timeout)


# ------------------------------------------------------------------------- 1. the verdict


def test_every_file_is_listed_and_the_verdict_is_recorded(exported):
    _, art, rejected, _ = exported
    listed = set(json.loads((art / "manifest.json").read_text())["files"])
    on_disk = {p.relative_to(art).as_posix() for p in art.rglob("*") if p.is_file()} - {"manifest.json"}
    assert listed == on_disk
    assert {"drift.json", "drift.png", "guard.npz", "golden/images.npy", "model.onnx"} <= listed
    assert load_artifact(art).gate_passed
    assert not json.loads((rejected / "manifest.json").read_text())["drift"]["passed"]


def test_a_rejected_artifact_is_refused_by_every_command(exported, tmp_path):
    run, _, rejected, image = exported
    copy = _copy(rejected, tmp_path / "looks-fine")  # a copy under an innocent name is no different
    with pytest.raises(RejectedArtifactError, match="drift gate did not pass"):
        load_artifact(copy)
    for args in (
        ["predict", image, "--model", copy],
        ["verify", copy],
        ["eval", copy, "--n-boot", "0"],
        ["report", copy, "--out", tmp_path / "r.html", "--gallery", "0", "--n-boot", "0"],
    ):
        res = _cli(*args)
        assert res.returncode == EXIT_REJECTED, (args, res.stdout, res.stderr)
        line = res.stderr.strip().splitlines()[-1]
        assert "drift gate did not pass" in line and "(max drop -1.0000)" in line and "--allow-rejected" in line
        assert "Traceback" not in res.stderr
    assert not (tmp_path / "r.html").exists()


def test_allow_rejected_is_loud_on_every_result(exported):
    _, _, rejected, image = exported
    res = _cli("predict", image, "--model", rejected, "--allow-rejected", "--json", "--no-verify")
    assert res.returncode == 0, res.stderr
    (record,) = json.loads(res.stdout)
    assert record["allow_rejected"] is True and record["artifact_gate"].startswith("REJECTED by the drift gate")
    assert "WARNING" in res.stderr and "REJECTED" in res.stderr
    res = _cli("verify", rejected, "--allow-rejected", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["passed"] and out["allow_rejected"] and out["artifact_gate"].startswith("REJECTED")


def test_bench_lists_a_rejected_artifact_without_timing_it(exported):
    from mxa_edge.bench import REJECTED, run_bench

    _, _, rejected, _ = exported
    quick = dict(threads=1, seconds=0.05, warmup=0, rounds=1, export_missing=False)
    (row,) = run_bench([rejected], **quick)["rows"]
    assert row["status"] == REJECTED and row["p50_ms"] is None and "not timed" in row["reason"]
    (row,) = run_bench([rejected], allow_rejected=True, **quick)["rows"]
    assert row["status"] == REJECTED and row["p50_ms"] > 0 and "--allow-rejected" in row["reason"]


def test_an_artifact_without_a_verdict_is_refused(exported, tmp_path):
    _, art, _, _ = exported
    copy = _copy(art, tmp_path / "no-verdict")
    _edit_manifest(copy, lambda m: m.update(drift=None))
    with pytest.raises(RejectedArtifactError, match="no drift-gate verdict"):
        load_artifact(copy)


# ----------------------------------------------------------------------- 2. the signature


def test_signed_artifact_passes_and_outputs_say_who_signed(exported, site_keys, tmp_path):
    _, art, _, image = exported
    (private, public, fingerprint), _ = site_keys
    copy = _copy(art, tmp_path / "signed")
    assert load_artifact(copy).provenance.status == UNSIGNED
    assert sign_folder(copy, private) == fingerprint
    assert load_artifact(copy, trust=[public]).provenance.status == TRUSTED
    res = _cli("predict", image, "--model", copy, "--trust", public, "--json")
    assert res.returncode == 0, res.stderr
    (record,) = json.loads(res.stdout)
    assert record["signature"] == TRUSTED and record["signature_key"] == fingerprint
    # the default trust comes from the environment too
    res = _cli("verify", copy, "--json", env={"MXA_EDGE_TRUST": str(public)})
    assert res.returncode == 0 and json.loads(res.stdout)["signature"] == TRUSTED
    # unsigned and no trust configured: usable, and said
    res = _cli("predict", image, "--model", art, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)[0]["signature"] == UNSIGNED


def test_a_resigned_threshold_edit_is_refused_with_a_trust_key(exported, site_keys, tmp_path):
    """Edit a threshold, recompute the digest: integrity passes, the signature does not."""
    _, art, _, image = exported
    (private, public, _), _ = site_keys
    copy = _copy(art, tmp_path / "edited-threshold")
    sign_folder(copy, private)

    def lower_threshold(m):
        label = next(iter(m["decision"]["thresholds"]))
        m["decision"]["thresholds"][label] = 0.001

    _edit_manifest(copy, lower_threshold)
    assert load_artifact(copy, trust=()).provenance.status == "signed, not checked"  # digest alone: accepted
    with pytest.raises(UntrustedArtifactError, match=r"changed after signing\): manifest.json"):
        load_artifact(copy, trust=[public])
    res = _cli("predict", image, "--model", copy, "--trust", public)
    assert res.returncode == EXIT_UNTRUSTED and "manifest.json" in res.stderr.strip().splitlines()[-1]


def test_a_resigned_model_edit_is_refused_with_a_trust_key(exported, site_keys, tmp_path):
    """Change one weight of model.onnx, re-record its hash and the golden logits: refused."""
    import onnx
    from onnx import numpy_helper

    _, art, _, _ = exported
    (private, public, _), _ = site_keys
    copy = _copy(art, tmp_path / "edited-model")
    sign_folder(copy, private)
    model = onnx.load(str(copy / "model.onnx"))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 1.0
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(copy / "model.onnx"))
    _rehash(copy, "model.onnx")
    load_artifact(copy, trust=())  # every hash agrees again
    with pytest.raises(UntrustedArtifactError, match="model.onnx"):
        load_artifact(copy, trust=[public])


def test_unsigned_or_foreign_signatures_are_refused_where_a_key_is_trusted(exported, site_keys, tmp_path):
    _, art, _, _ = exported
    (_, public, _), (other_private, _, other_fp) = site_keys
    with pytest.raises(UntrustedArtifactError, match="unsigned"):
        load_artifact(art, trust=[public])
    copy = _copy(art, tmp_path / "other-signer")
    sign_folder(copy, other_private)
    with pytest.raises(UntrustedArtifactError, match=f"signed by key {other_fp[:16]}"):
        load_artifact(copy, trust=[public])


def test_sign_refuses_a_rejected_artifact_and_keys_are_never_replaced(exported, site_keys, tmp_path):
    _, _, rejected, _ = exported
    (private, _, _), _ = site_keys
    res = _cli("sign", rejected, "--key", private)
    assert res.returncode == EXIT_REJECTED and not (rejected / SIGNATURE_FILE).exists()
    res = _cli("keys", "--out", private.parent)
    assert res.returncode == 2 and "refusing to replace a key" in res.stderr


def test_the_signature_verifies_with_model_signings_own_api(exported, site_keys, tmp_path):
    """model.sig is a plain model-signing bundle: a third party checks it without mxa-edge."""
    import model_signing

    _, art, _, _ = exported
    (private, public, _), _ = site_keys
    copy = _copy(art, tmp_path / "third-party")
    sign_folder(copy, private)
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public).verify(copy, copy / SIGNATURE_FILE)


# ------------------------------------------------------------------ 3. every file covered


def test_an_edited_drift_record_is_refused(exported, tmp_path):
    _, art, _, _ = exported
    copy = _copy(art, tmp_path / "edited-drift")
    drift = json.loads((copy / "drift.json").read_text())
    label = next(iter(drift["per_label"]))
    drift["per_label"][label]["auc_new"] = 0.5
    (copy / "drift.json").write_text(json.dumps(drift))
    with pytest.raises(ArtifactError, match="drift.json: SHA-256 differs"):
        load_artifact(copy)
    res = _cli("report", copy, "--out", tmp_path / "r.html", "--gallery", "0", "--n-boot", "0")
    assert res.returncode == EXIT_ARTIFACT and "drift.json" in res.stderr and not (tmp_path / "r.html").exists()


def test_a_guard_path_outside_the_artifact_is_refused_even_without_verify(exported, tmp_path):
    _, art, _, image = exported
    copy = _copy(art, tmp_path / "outside-guard")
    shutil.copy(copy / "guard.npz", tmp_path / "evil.npz")
    _edit_manifest(copy, lambda m: m["guard"].update(file="../evil.npz"))
    res = _cli("predict", image, "--model", copy, "--no-verify")
    assert res.returncode == EXIT_ARTIFACT, res.stderr
    assert "'../evil.npz', which is not among its hashed files" in res.stderr.strip().splitlines()[-1]


def test_a_golden_object_array_is_a_one_line_error(exported, tmp_path):
    _, art, _, _ = exported
    copy = _copy(art, tmp_path / "object-golden")
    np.save(copy / "golden" / "images.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    _rehash(copy, "golden/images.npy")
    res = _cli("verify", copy)
    assert res.returncode == EXIT_ARTIFACT and "Traceback" not in res.stderr
    assert "golden/images.npy: not a plain numeric array" in res.stderr.strip().splitlines()[-1]
