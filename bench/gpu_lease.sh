#!/usr/bin/env bash
# One lease of a CUDA machine for issue 23's figures, as one prepared script (device time is
# short: every step has its own timeout, and each writes its results as soon as it ends).
#
#   bash bench/gpu_payload.sh          # here: wheels, SST-2 and MiniLM (fp16) into .gpu/
#   bash bench/gpu_lease.sh            # there, with .gpu carried; results under $OUT
#
# The machine has torch and transformers but no network: the payload brings pydantic (for
# mlcore.config), SST-2 (../shared is not carried) and MiniLM as fp16 (the fp32 file is over
# the carry limit), restored to fp32 here.
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
LOG=$OUT/all.log
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD
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
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
  nproc; } >>"$LOG" 2>&1
step() {  # name, timeout, command...: stdout to $OUT/<name>.json, stderr to the log
  local name=$1 limit=$2; shift 2
  echo "=== $name: $* ($(date +%T))" >>"$LOG"
  timeout "$limit" "$@" >"$OUT/$name.json" 2>>"$LOG"; echo "=== $name: exit $? ($(date +%T))" >>"$LOG"
}
step cuda_tests 90 python3 -m pytest -q -p no:cacheprovider tests/test_transfer.py
step profile_bert64 100 python3 bench/gpu_profile.py --model bert-base --batch-size 64 --trace "$OUT/trace_bert64.json.gz"
step profile_minilm32 100 python3 bench/gpu_profile.py --model minilm --model-dir /tmp/minilm --batch-size 32
step throughput_b32 150 python3 bench/throughput.py --model-dir /tmp/minilm --no-mfu --compare-sync-path
step mfu 260 python3 bench/throughput.py --mfu-only --mfu-steps 150 \
  --mfu-variants bf16 bf16-sync bf16-b256 bf16-compile-b256 bf16-cudagraphs-b256
