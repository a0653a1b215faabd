#!/usr/bin/env bash
# One lease of a CUDA machine for issue 23's figures, as one prepared script (device time is
# short: every step has its own timeout, and each writes its results as soon as it ends).
#
#   bash bench/gpu_payload.sh          # here: wheels, SST-2 and MiniLM (fp16) into .gpu/
#   bash bench/gpu_lease.sh [steps]    # there, with .gpu carried (.gpu/whl alone for the
#                                      # synthetic steps); results under $OUT
#
# The machine has torch and transformers but no network: the payload brings pydantic (for
# mlcore.config), SST-2 (../shared is not carried) and MiniLM as fp16 (the fp32 file is over
# the carry limit), restored to fp32 here. Steps (default: profile mfu):
#   profile   torch.profiler of BERT-base at batch 512, compiled: kernel families per step
#   mfu       BERT-base MFU: autocast against bf16 weights, batches 512 and 1024, compiled
#   master    BERT-base MFU, eager: autocast against precision bf16-weights (fp32 masters)
#   minilm    MiniLM against HF Trainer at batch 128, bf16-weights and autocast side by side
#             (needs .gpu/minilm and .gpu/sst2)
#   tests     the CUDA tests of the engine
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
LOG=$OUT/all.log
STEPS=${*:-profile mfu}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
  nproc; } >>"$LOG" 2>&1
step() {  # name, timeout, command...: stdout to $OUT/<name>.json, stderr to the log
  local name=$1 limit=$2; shift 2
  echo "=== $name: $* ($(date +%T))" >>"$LOG"
  timeout "$limit" "$@" >"$OUT/$name.json" 2>>"$LOG"; echo "=== $name: exit $? ($(date +%T))" >>"$LOG"
}
minilm_payload() {
  python3 - <<'PY' >>"$LOG" 2>&1
import shutil, pathlib
from safetensors.torch import load_file, save_file
src, dst = pathlib.Path(".gpu/minilm"), pathlib.Path("/tmp/minilm")
dst.mkdir(exist_ok=True)
for f in src.iterdir():
    if f.name != "model.fp16.safetensors":
        shutil.copy(f, dst / f.name)
save_file({k: v.float() for k, v in load_file(src / "model.fp16.safetensors").items()}, dst / "model.safetensors")
PY
  mkdir -p ../shared/datasets/sst2 && cp .gpu/sst2/*.csv ../shared/datasets/sst2/
}
for s in $STEPS; do
  case $s in
    profile) step profile_b512 150 python3 bench/gpu_profile.py --batch-size 512 --compile --variants host-masks \
               --warmup 6 --active 4 --top 14 ;;
    mfu) step mfu 330 python3 bench/throughput.py --mfu-only --mfu-steps 60 --mfu-variants bf16-compile-b512 \
           bf16w-compile-b512 bf16w-b512 bf16-compile-b1024 bf16w-compile-b1024 ;;
    master) step mfu_master 150 python3 bench/throughput.py --mfu-only --mfu-steps 60 --mfu-variants bf16-b512 \
              bf16-weights-b512 bf16w-b512 bf16-weights-b768 bf16-weights-b1024 ;;
    minilm) minilm_payload
            step minilm_b128 200 python3 bench/throughput.py --model-dir /tmp/minilm --no-mfu \
              --ours-batch-size 128 --ours-lr 2e-4 --ours-precision bf16-weights --compare-precision auto ;;
    tests) step cuda_tests 120 python3 -m pytest -q -p no:cacheprovider tests/test_transfer.py ;;
    *) echo "unknown step $s" >>"$LOG" ;;
  esac
done
