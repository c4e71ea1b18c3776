#!/usr/bin/env bash
# The GPU check, one prepared script of at most eight minutes for a machine with an NVIDIA GPU (an H100 or H200 here):
#   1. what the machine is (nvidia-smi, torch, JAX);
#   2. parity on CUDA: both frameworks from shared weights (float64 XOR, float32 MNIST with shared dropout masks;
#      TF32 off in both);
#   3. torch's executions agree on CUDA: eager, compiled and cuda_graph training of the same steps;
#   4. the benchmark suite on the GPU (eager, cuda_graph, JAX per_step and fused; then torch.compile on XOR), and
#      mnist_dropout in every precision (bench --precision all);
#   5. with several cards: data-parallel parity (2 GPUs) and scaling figures (docs/scaling.md).
# Run it from the repository root:  OUT=some/dir bash benchmarks/gpu_check.sh   (OUT defaults to gpu-check/).
# It writes at most 10 files into $OUT (13 with several GPUs); record the figures of bench-gpu.json in docs/benchmarks.md, naming the card.
set -uo pipefail
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # torch and JAX share the card in one process
LOG="$OUT/log.txt"
: >"$LOG"
step() { echo "== $*" | tee -a "$LOG"; }
start=$SECONDS

step "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $PY - <<'PY'
import jax, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
print("jax", jax.__version__, jax.devices())
PY
} 2>&1 | tee "$OUT/machine.txt" >>"$LOG"

step "parity on CUDA"
timeout 60 $PY -m harness compare xor_wide_deep --device gpu --dtype float64 --steps 3000 \
  --out "$OUT/parity-xor-f64.json" 2>&1 | tee -a "$LOG"
timeout 90 $PY -m harness compare mnist_dropout --device gpu --masks shared --data mnist-5k --steps 300 \
  --out "$OUT/parity-mnist-f32.json" 2>&1 | tee -a "$LOG"

step "torch executions agree on CUDA (eager, compiled, cuda_graph)"
timeout 100 $PY - <<'PY' 2>&1 | tee -a "$LOG"
import dataclasses, numpy as np
from harness.labs import get_lab
from harness.run.runner import RunOptions, prepare
from torch_impl import train
for lab in ("xor_mlp", "mnist_batchnorm"):
    spec = prepare(get_lab(lab), RunOptions(device="gpu", steps=200, data="mnist-5k", init="shared")).spec
    runs = {ex: train.train(dataclasses.replace(spec, execution=ex)) for ex in ("eager", "cuda_graph", "compiled")}
    for ex in ("cuda_graph", "compiled"):
        diff = float(np.max(np.abs(runs[ex].losses - runs["eager"].losses)))
        print(f"{lab}: {ex} vs eager, max |loss diff| over 200 steps {diff:.3e}; "
              f"{runs[ex].timing.steps_per_s:.0f} vs {runs['eager'].timing.steps_per_s:.0f} steps/s")
PY

step "benchmark suite on the GPU"
timeout 100 $PY -m harness bench --suite ci --devices gpu --modes eager,cuda_graph,per_step,fused \
  --out "$OUT/bench-gpu.json" --github-action "$OUT/bench-gpu" 2>&1 | tee -a "$LOG"
left=$((290 - (SECONDS - start)))
if [ "$left" -gt 40 ]; then
  step "torch.compile on the GPU (XOR; ${left}s left)"
  timeout "$left" $PY -m harness bench xor_wide_deep --frameworks torch --devices gpu --modes compiled \
    --overhead-rounds 0 --out "$OUT/bench-gpu-compiled.json" 2>&1 | tee -a "$LOG"
fi
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
if [ "$NGPU" -gt 1 ]; then
  COUNTS=$(for n in 1 2 4 8 16; do [ "$n" -le "$NGPU" ] && printf '%s,' "$n"; done); COUNTS=${COUNTS%,}
  step "data parallel over $NGPU GPUs: parity and scaling ($COUNTS)"
  timeout 90 $PY -m harness compare mnist_batchnorm --device gpu --devices 2 --dtype float64 --steps 50 \
    --data mnist-5k --out "$OUT/parallel-parity.json" 2>&1 | tee -a "$LOG"
  timeout 120 $PY -m harness bench --devices "gpu,$COUNTS" --out "$OUT/scaling-gpu.json" \
    --markdown "$OUT/scaling-gpu.md" 2>&1 | tee -a "$LOG"
fi
step "bench in every precision on the GPU (speed-up over float32, % of each precision's own matmul peak)"
timeout 120 $PY -m harness bench mnist_dropout --devices gpu --modes eager,per_step,fused --precision all \
  --overhead-rounds 0 --out "$OUT/bench-gpu-precision.json" --markdown "$OUT/bench-gpu-precision.md" 2>&1 | tee -a "$LOG"
step "precisions on the GPU: matmul peaks (float32 with TF32 off and on, bfloat16, float16), mixed-precision steps"
timeout 90 $PY - <<'PY' 2>&1 | tee -a "$LOG"
import numpy as np
import torch
from harness.bench.measure import precision_peaks
from harness.labs import get_lab
from harness.precision import get_policy
from harness.run.runner import RunOptions, prepare
from torch_impl import precision

for fw in ("torch", "jax"):
    for dtype, peak in precision_peaks(fw, "gpu", 8192, 10).items():
        print(f"{fw} gpu {dtype} matmul peak: {peak.get('gflops', float('nan')):.0f} GFLOP/s {peak.get('reason', '')}")
torch.backends.cuda.matmul.allow_tf32 = True  # TF32 on, for the record beside "highest" (the harness's setting)
a, b = (torch.rand(8192, 8192, device="cuda") for _ in range(2))
torch.matmul(a, b); torch.cuda.synchronize()
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
start.record(); torch.matmul(a, b); end.record(); torch.cuda.synchronize()
print(f"torch gpu float32 matmul with TF32 on: {2 * 8192**3 / start.elapsed_time(end) / 1e6:.0f} GFLOP/s")
torch.backends.cuda.matmul.allow_tf32 = False
spec = prepare(get_lab("mnist_batchnorm"), RunOptions(device="gpu", steps=20, data="mnist-5k", weights="shared",
                                                      mask_mode="shared")).spec
x = torch.tensor(spec.train_x[spec.batches[0]], device="cuda")
y = torch.tensor(spec.train_y[spec.batches[0]], dtype=torch.int64, device="cuda")
for name in ("bfloat16", "mixed_bfloat16", "mixed_float16"):
    learner = precision.PrecisionLearner(spec, get_policy(name), torch.device("cuda"))
    losses = [float(learner.train_step(x, y, None)) for _ in range(20)]
    print(f"torch gpu {name}: loss {losses[0]:.4f} -> {losses[-1]:.4f}, finite {bool(np.isfinite(losses).all())}")
PY

step "done in $((SECONDS - start)) s"
