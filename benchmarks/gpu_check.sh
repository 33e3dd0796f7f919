#!/usr/bin/env bash
# One prepared check of everything that needs a CUDA GPU and TensorRT, in under 10 minutes on
# one data-centre GPU. Prints one summary line per check ("CHECK <name>: PASS|FAIL|SKIP ...")
# and exits non-zero when any check fails. Run from the repository root, in an environment
# with the [train] extra, a CUDA build of torch and TensorRT 10 (`pip install -e ".[train,gpu]"`).
#
#   bash benchmarks/gpu_check.sh [WORK_DIR]     # default WORK_DIR: runs/gpu-check
#
# What it checks:
#   1. train   a few hundred M5/224 steps on the embedded phantoms, bf16 autocast on CUDA
#   2. ddp     the same through torch's launcher (--devices 1), one epoch
#   3. trt-fp16 / trt-int8   TensorRT exports, gated on the BUILT ENGINE (gated_with must say so)
#   4. verify  both TensorRT artifacts reproduce their golden vectors on this GPU
#   5. bench   rows for TensorRT and PyTorch CUDA
set -u -o pipefail
WORK=${1:-runs/gpu-check}
PY=${PYTHON:-.venv/bin/python}
MXA=("$PY" -m mxa_edge_cli.app)
mkdir -p "$WORK"
FAILED=0

line() { echo "CHECK $1: $2"; }
run_check() {  # name, log file, command...
  local name=$1 log=$2
  shift 2
  local t0=$SECONDS
  if "$@" >"$log" 2>&1; then
    line "$name" "PASS ($((SECONDS - t0)) s)"
  else
    line "$name" "FAIL ($((SECONDS - t0)) s; see $log)"
    FAILED=1
  fi
}

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  line environment "SKIP: no CUDA device visible to torch; nothing here can be checked on this machine"
  exit 0
fi
"$PY" -c "import tensorrt, torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'tensorrt', tensorrt.__version__, torch.cuda.get_device_name(0))" \
  | sed 's/^/CHECK environment: /' || line environment "TensorRT is not importable: the TensorRT checks will fail"

# 1. M5/224, bf16 autocast (--amp auto on CUDA), no teacher: 8 epochs x 28 steps = 224 steps.
run_check train "$WORK/train.log" "${MXA[@]}" train --device cuda --model m5 --image-size 224 --epochs 8 \
  --batch-size 64 --no-kd --out "$WORK/m5" --json
# 2. The launcher path (one process per GPU).
run_check ddp "$WORK/ddp.log" "${MXA[@]}" train --device cuda --devices 1 --model m5 --image-size 224 --epochs 1 \
  --batch-size 64 --no-kd --out "$WORK/m5-ddp" --json

# 3. TensorRT exports: the gate must have run the engine itself.
for p in fp16 int8; do
  run_check "trt-$p" "$WORK/export-$p.log" "${MXA[@]}" export "$WORK/m5" --target tensorrt --"$p" \
    --out "$WORK/m5/exports/tensorrt-$p" --json
  "$PY" - "$WORK/m5/exports/tensorrt-$p" "trt-$p" <<'PYEOF' || FAILED=1
import json, sys
from pathlib import Path
folder, name = Path(sys.argv[1]), sys.argv[2]
m = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").is_file() else {}
gated = (m.get("export") or {}).get("gated_with", "no manifest")
d = m.get("drift") or {}
ok = gated.startswith("tensorrt engine")
print(f"CHECK {name}-gated-on-engine: {'PASS' if ok else 'FAIL'} (gated_with: {gated}; macro AUC delta "
      f"{d.get('macro_delta')}, worst {d.get('worst_label')} {d.get('worst_delta')})")
sys.exit(0 if ok else 1)
PYEOF
  # 4. verify on this GPU
  run_check "verify-$p" "$WORK/verify-$p.log" "${MXA[@]}" verify "$WORK/m5/exports/tensorrt-$p" --json
done

# 5. bench: TensorRT and PyTorch CUDA rows
run_check bench "$WORK/bench.log" "${MXA[@]}" bench "$WORK/m5" --batch 1,32 --json "$WORK/bench.json"
if [ -f "$WORK/bench.json" ]; then
  "$PY" - "$WORK/bench.json" <<'PYEOF' || FAILED=1
import json, sys
rows = json.load(open(sys.argv[1])).get("rows", [])
want = [r for r in rows if "TensorRT" in str(r.get("backend", "")) or "CUDA" in str(r.get("backend", ""))]
for r in want:
    print(f"CHECK bench-row: {r.get('backend')} {r.get('precision')} status {r.get('status')} "
          f"p50 {r.get('p50_ms')} ms at batch {r.get('batch')}")
sys.exit(0 if want else 1)
PYEOF
fi
exit $FAILED
