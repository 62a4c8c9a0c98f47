#!/usr/bin/env bash
# The GPU run of the plugin issue, on a lent machine with the bundle in .gpu (see ../shared/gpu/README.md):
# the bear run (benchmarks/gpu_bear_run.py) and, when present, the rasterizer comparison.
set -uo pipefail
source .gpu/setup.sh || exit 1
python3 .gpu/random_backbones.py
export PYTHONPATH="$PWD:$PWD/.gpu/stubs:$PYTHONPATH" NERFSTUDIO_METHOD_CONFIGS="igs2gs=igs2gs.igs2gs_config:igs2gs_method"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.txt"
python3 benchmarks/make_random_ip2p.py /tmp/ip2p-arch --arch .gpu/models/ip2p-sd15-arch --device cuda --dtype float16 \
  || exit 1
python3 benchmarks/gpu_bear_run.py --data .gpu/data/bear --ip2p-model /tmp/ip2p-arch --out "$OUT"
if [ -f benchmarks/compare_rasterizers.py ] && [ -z "${SKIP_RASTERIZERS:-}" ]; then
  timeout 120 python3 benchmarks/compare_rasterizers.py --out "$OUT/rasterizers.json"
fi
