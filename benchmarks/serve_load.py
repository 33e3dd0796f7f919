"""Load on ``mxa-edge serve``: N studies over K concurrent associations -> studies/min and latency.

    python benchmarks/serve_load.py --model ARTIFACT [-n 40] [-k 4] [--images 2] [--size 512] [--json]

Starts ``mxa-edge serve --out TMP`` on 127.0.0.1 (a free port, a fresh queue, ``--max-studies N``),
writes N synthetic DX chest PA studies of ``--images`` instances each (smooth random images of
``--size`` px: the input guard flags them, they are predicted all the same), and sends them from K
threads, one association per study (pynetdicom SCU). The figures come from the node's own audit
log (``QUEUE/audit.jsonl``): throughput = studies / (last report sent - first instance received),
and per study the latency the node records on "sent" (last instance received -> report sent),
p50 / p95 / max. Also the SCU side: seconds per study for the C-STOREs. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np

# The tests' DICOM writer (tests/dicom_factory.py): one synthetic-DICOM writer for the repository.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dicom_factory import DX_STORAGE, smooth_image, write_study  # noqa: E402


def _study(folder: Path, rng: np.random.Generator, images: int, size: int) -> list[Path]:
    return write_study(folder, [smooth_image(rng, size) for _ in range(images)])[1]


def _send(port: int, files: list[Path]) -> float:
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE

    t0 = time.perf_counter()
    ae = AE(ae_title="LOADSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(DX_STORAGE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="MXAEDGE")
    if not assoc.is_established:
        raise RuntimeError("association refused")
    try:
        for f in files:
            status = assoc.send_c_store(pydicom.dcmread(f))
            if getattr(status, "Status", None) != 0:
                raise RuntimeError(f"C-STORE of {f.name} failed: {status}")
    finally:
        assoc.release()
    return time.perf_counter() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(proc: subprocess.Popen, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited {proc.returncode} before listening")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"serve did not listen within {timeout:.0f} s")


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("-n", "--studies", type=int, default=40)
    ap.add_argument("-k", "--concurrency", type=int, default=4)
    ap.add_argument("--images", type=int, default=2, help="instances per study")
    ap.add_argument("--size", type=int, default=512, help="image side in pixels")
    ap.add_argument("--threads", type=int, default=None, help="the node's inference threads")
    ap.add_argument("--timeout", type=float, default=600, help="seconds before the run is abandoned")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        rng = np.random.default_rng(0)
        studies = [_study(tmp / "in", rng, args.images, args.size) for _ in range(args.studies)]
        port, queue = _free_port(), tmp / "queue"
        cmd = [sys.executable, "-m", "mxa_edge_cli.app", "serve", "--model", str(args.model), "--port", str(port)]
        cmd += ["--host", "127.0.0.1", "--out", str(tmp / "out"), "--queue", str(queue)]
        cmd += ["--max-studies", str(args.studies), "--run-seconds", str(args.timeout)]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        with open(tmp / "serve.log", "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_listening(proc, port, 120)
            with ThreadPoolExecutor(args.concurrency) as pool:
                send_s = list(pool.map(lambda files: _send(port, files), studies))
            proc.wait(timeout=args.timeout + 30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        events = [json.loads(line) for line in (queue / "audit.jsonl").read_text().splitlines()]

    received = [_time(e["time"]) for e in events if e["event"] == "received"]
    sent = [e for e in events if e["event"] == "sent"]
    latency = np.array([e["latency_s"] for e in sent])
    span = max(_time(e["time"]) for e in sent) - min(received) if sent else float("nan")
    result = {
        "studies": args.studies,
        "delivered": len(sent),
        "concurrency": args.concurrency,
        "images_per_study": args.images,
        "size": args.size,
        "studies_per_min": round(60 * len(sent) / span, 1) if sent else None,
        "latency_p50_s": round(float(np.percentile(latency, 50)), 3) if sent else None,
        "latency_p95_s": round(float(np.percentile(latency, 95)), 3) if sent else None,
        "latency_max_s": round(float(latency.max()), 3) if sent else None,
        "scu_seconds_per_study_p50": round(float(np.median(send_s)), 3),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:28s} {value}")


if __name__ == "__main__":
    main()
