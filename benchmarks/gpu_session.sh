#!/usr/bin/env bash
# The GPU checks of the project in one run on the device machine: the CUDA-marked tests, a briefly fitted
# unetr_brats (so that inference agreement is measured on confident outputs), then bench_gpu.py. Logs and the
# benchmark section land in $OUT; copy the section into docs/benchmarks.md afterwards.
#
# The device image has torch, einops, timm, safetensors, huggingface_hub, tqdm, numpy and pytest; the rest travels
# as wheels. Here, once, from the repository root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl monai==1.6.1 nibabel==5.4.2 self-attention-cv==1.2.3
# then run `bash benchmarks/gpu_session.sh` there with `.whl` carried (about 5 MiB).
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl ||
    exit 1
export PYTHONPATH="/tmp/site:$PWD/src:$PWD" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/medseg-gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -m pytest -q tests/test_cuda.py tests/layers/test_linear.py 2>&1 | tee "$OUT/cuda_tests.log"
python3 benchmarks/fit_synthetic.py --device cuda --workers 8 --cases 4 --steps 150 \
    --output /tmp/fitted.safetensors 2>&1 | tail -n 3 | tee "$OUT/fit.log"
cd benchmarks && python3 bench_gpu.py --weights /tmp/fitted.safetensors --output "$OUT/benchmarks.md" 2>&1 |
    tee "$OUT/bench_gpu.log"
