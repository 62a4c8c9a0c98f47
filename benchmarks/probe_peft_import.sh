#!/usr/bin/env bash
# How long a fresh process takes to import what InstructPix2Pix's loader needs (diffusers' UNet and VAE,
# transformers' CLIP text encoder), plainly and through igs2gs.ip2p (diffusers without peft:
# igs2gs/diffusers_imports.py), alternating, three times each, with the bytecode written as after a user's install.
# Run on the lent GPU machine from the repository root (the bundle in .gpu: ../shared/gpu/README.md).
source .gpu/setup.sh >/dev/null 2>&1 || { echo "set-up failed"; exit 1; }
export PYTHONPATH="$PWD:$PYTHONPATH" PYTHONPYCACHEPREFIX=/tmp/pycache
PURELIB=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
python3 -m compileall -q -j 0 "$PURELIB" "$PWD/.gpu/site" "$PWD/igs2gs" >/dev/null 2>&1
python3 -c "import importlib.metadata as m; print('peft', m.version('peft'))" 2>&1 | tail -1
PLAIN='import time, sys; t = time.perf_counter(); import torch, diffusers, transformers
diffusers.UNet2DConditionModel, diffusers.AutoencoderKL, transformers.CLIPTextModel
print("plain   %.2f s, peft imported: %s" % (time.perf_counter() - t, "peft" in sys.modules))'
OURS='import time, sys; t = time.perf_counter(); import torch
from igs2gs.ip2p import _import_diffusers, _import_transformers
d, tr = _import_diffusers(), _import_transformers()
d.UNet2DConditionModel, d.AutoencoderKL, tr.CLIPTextModel
print("igs2gs  %.2f s, peft imported: %s" % (time.perf_counter() - t, "peft" in sys.modules))'
python3 -c "$PLAIN" >/dev/null 2>&1  # the file cache, for both
for i in 1 2 3; do python3 -c "$PLAIN" 2>&1 | tail -1; python3 -c "$OURS" 2>&1 | tail -1; done
