#!/usr/bin/env bash
# Issue 13's checks on a CUDA machine, in one run: scan and monitor cost on the GPU (first, on a quiet
# device), the CUDA tests, and the validity matrix trained and scanned on the GPU (seed 0, one CPU thread per
# worker, WORKERS workers sharing the device, cells split by their cost on the last GPU run, else a tenth
# of their CPU cost; a worker stopped at SECONDS keeps the cells it finished).
#   bash benchmarks/gpu_check.sh OUTDIR [SECONDS] [WORKERS]
# Writes OUTDIR/log.txt and OUTDIR/detector_validity_gpu.jsonl. The pretrained Lite0's package may sit in
# .gpu/site (on PYTHONPATH) where it is not installed.
set -u
out=${1:?usage: gpu_check.sh OUTDIR [SECONDS] [WORKERS]}
seconds=${2:-300}
workers=${3:-12}
py=${PYTHON:-python3}
export PYTHONPATH=$PWD:$PWD/.gpu/site PYTHONUNBUFFERED=1 WANDB_MODE=offline
log=$out/log.txt
{
  date -u
  nvidia-smi -L
  $py -c "import torch, timm, lightning; print('torch', torch.__version__, 'timm', timm.__version__, 'lightning', lightning.__version__)"
  echo "## scan_speed (GPU)"
  $py benchmarks/scan_speed.py --device cuda --size 224
  $py benchmarks/scan_speed.py --device cuda --size 64 --profile
  $py benchmarks/scan_speed.py --device cuda --size 224 --data
  echo "## monitor_overhead (GPU)"
  $py benchmarks/monitor_overhead.py --accelerator gpu --epochs 20 --repeats 2  # a GPU epoch here is 0.3 s
} 2>&1 | tee -a "$log"

# the matrix: longest-processing-time split by the cells' seconds (on the H200 in session 13: 3-36 s, mobilenet
# at 32 px over 200 s), longest first
$py - "$workers" > /tmp/cells.txt <<'EOF'
import json, sys
sys.path.insert(0, "benchmarks")
from detector_validity import _key, default_cells
cost = {_key(r): r.get("cell_s", 600) / 10 for r in map(json.loads, open("benchmarks/results/detector_validity.jsonl"))}
cost.update({_key(r): r["cell_s"] for r in map(json.loads, open("benchmarks/results/detector_validity_h200.jsonl"))})
cost.update({f"mobilenet:{c}:32": 240.0 for c in ("white", "noisy")})  # stopped at 230 s there
loads = [[0.0, []] for _ in range(int(sys.argv[1]))]
for cell in sorted(default_cells(), key=lambda c: -cost.get(c, 60)):
    w = min(loads, key=lambda x: x[0])
    w[0] += cost.get(cell, 60)
    w[1].append(cell)
for _, cells in loads:
    print(" ".join(cells))
EOF
i=0
while read -r cells; do
  timeout "$seconds" $py benchmarks/detector_validity.py --device cuda --single-channel --cells $cells \
    --jsonl "$out/dv_$i.jsonl" --out "/tmp/dv_$i.md" > "/tmp/dv_$i.log" 2>&1 &
  i=$((i + 1))
done < /tmp/cells.txt
echo "## CUDA tests" | tee -a "$log"
$py -m pytest tests/test_cuda.py -q -p no:cacheprovider 2>&1 | tee -a "$log"
wait
cat "$out"/dv_*.jsonl > "$out/detector_validity_gpu.jsonl" 2>/dev/null
rm -f "$out"/dv_*.jsonl
{
  echo "## matrix: $(wc -l < "$out/detector_validity_gpu.jsonl") cells in ${seconds} s"
  for f in /tmp/dv_*.log; do echo "# $f"; grep -v '^{' "$f" | tail -n 8; done
} 2>&1 | tee -a "$log"
