#!/usr/bin/env bash
# The GPU runs of the fast-edits issue, on a lent machine with the bundle in .gpu (see ../shared/gpu/README.md).
# STAGES picks what runs, in this order (default: all):
#   tests       tests/test_gpu.py (the CUDA-only tests), in the background while the checkpoint trains
#   attn        benchmarks/bench_attention.py (SDPA backends at the UNet's attention shapes; ATTN_ARGS)
#   edit        benchmarks/bench_edit.py (BENCH_EDIT_VARIANTS, BENCH_EDIT_BREAKDOWN, BENCH_EDIT_KERNELS)
#   load        benchmarks/probe_load.py (a fresh process's time to InstructPix2Pix on the GPU, current against direct loading)
#   transfer    benchmarks/probe_edit_transfer.py (one batch's round trip to the edit process, no editing), also in
#               BASELINE_DIR when set (the probe is copied there)
#   editprofile benchmarks/profile_edit.py (the kernels of each piece of an eager 8-view edit)
#   checkpoint  a 2,000-step splatfacto checkpoint of bear, relabelled as step 29,999 (e2e_common.py)
#   profile     benchmarks/profile_train_step.py on that checkpoint
#   aot         benchmarks/probe_aot_step.py (the denoising step as an AOTInductor package without its weights: build
#               and load times, step time; AOT_ARGS="--weights inside" packs the weights in). With AOT_GPU set
#               (a GPU index), it runs in the background on that GPU from before the edit stage on.
#   e2e         benchmarks/bench_e2e.py (E2E_RUNS, E2E_ARGS); then NOPYC_RUNS without the written bytecode (PYC below),
#               then BASELINE_RUNS from the checkout in BASELINE_DIR. Runs named NAME-spy run under py-spy when
#               .gpu/bin/py-spy holds its static binary (`pip install py-spy` here, then copy `py-spy` from the venv's bin)
#   firstcall   benchmarks/probe_saved_first_call.py on cuda:1 with the e2e runs' compile cache (after an
#               ours-2gpu-compile-saved run): where a fresh process's time goes until its saved pieces edit, under
#               cProfile (the editor's build and its first edit)
#   rblock      benchmarks/probe_saved_first_call.py, saved pieces compiled as the plugin does (no load-time second
#               block config: saved_compile.INDUCTOR_OPTIONS) and with inductor's default (--scale-rblock): each compiles
#               into a cache of its own, then loads from it in fresh processes, alternately, RBLOCK_LOADS times each
#   consistency benchmarks/bench_consistency.py (CONS_ARGS)
#   big         bench_e2e.py's ours-1024 run (bear upscaled to 1024 px): peak memory
#   cpuspeed    benchmarks/probe_cpu_speed.py (the spread of the CPU's speed over a minute of an idle machine)
#   journal     benchmarks/probe_journal.py (the training thread's time per journalled edit, before and with the writer thread)
#   leftovers   benchmarks/probe_leftovers.py (processes a compiling child leaves behind, and the CPU speed after it)
# The compile cache (~/.cache/igs2gs/torchinductor) is restored from .gpu/inductor.tar.gz when present and
# written back to $OUT/inductor.tar.gz at the end. DEADLINE (seconds after set-up) caps the e2e stages' time limits.
set -uo pipefail
STAGES=${STAGES:-attn,edit,checkpoint,profile,e2e,consistency,big}
has() { [[ ",$STAGES," == *",$1,"* ]]; }
# the smaller of a stage's time limit and what is left before DEADLINE (seconds after set-up; unset: no deadline)
within() { local left=$(( ${DEADLINE:-100000} - SECONDS - 15 )); echo $(( $1 < left ? $1 : (left > 1 ? left : 1) )); }
source .gpu/setup.sh >"$OUT/run.log" 2>&1 || { tail -20 "$OUT/run.log"; exit 1; }
python3 .gpu/random_backbones.py >>"$OUT/run.log" 2>&1
export COLUMNS=240 PYTHONPATH="$PWD:$PWD/.gpu/stubs:$PYTHONPATH" NERFSTUDIO_METHOD_CONFIGS="igs2gs=igs2gs.igs2gs_config:igs2gs_method"
# Bytecode: the lent machine sets PYTHONDONTWRITEBYTECODE (edit-process children run as `python3 -B`) and the bundle
# installs with --no-compile, so every process compiled every module it imported from source: 3.6 s of a 12.3 s
# editor build under cProfile (fifteenth session), in the training process and in each edit-process child. A user's
# pip install writes the bytecode once; here compileall writes it once into PYTHONPYCACHEPREFIX, in the background
# (waited for before the first timed stage). PYC=0 keeps the old behaviour.
PYC_PID=
if [ "${PYC:-1}" = 1 ]; then
  export PYTHONPYCACHEPREFIX=/tmp/pycache
  PURELIB=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  (python3 -m compileall -q -j 0 "$PURELIB" "$PWD/.gpu/site" "$PWD/igs2gs" "$PWD/benchmarks" "$PWD/tests" >/tmp/compileall.log 2>&1;
   echo "bytecode written (rc $?)" >>"$OUT/run.log") &
  PYC_PID=$!
fi
pyc_ready() { if [ -n "$PYC_PID" ]; then wait $PYC_PID; PYC_PID=; echo "== bytecode ready at ${SECONDS}s" | tee -a "$OUT/run.log"; fi; }
CACHE=~/.cache/igs2gs
mkdir -p $CACHE
if [ -f .gpu/inductor.tar.gz ] && [ -z "${COLD_CACHE:-}" ]; then tar xzf .gpu/inductor.tar.gz -C $CACHE; echo "compile cache restored" | tee -a "$OUT/run.log"; fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee -a "$OUT/run.log"
git log -1 --format='commit %H %cd' | tee -a "$OUT/run.log"
CKPT=/tmp/igs2gs-bench/ckpt/trained/nerfstudio_models
SECONDS=0
if has cpuspeed || has journal || has leftovers || has attn || has edit || has transfer || has editprofile || has tests \
  || ! has checkpoint; then pyc_ready; fi
if has cpuspeed; then
  (cd benchmarks && timeout 120 python3 probe_cpu_speed.py --seconds ${CPU_SECONDS:-60} --out "$OUT/probe_cpu_speed.json") 2>&1 \
    | grep "^{" | cut -c1-400 | tee -a "$OUT/run.log"
  echo "== cpuspeed stage done at ${SECONDS}s" | tee -a "$OUT/run.log"
fi
if has journal; then
  timeout 120 python3 benchmarks/probe_journal.py --images .gpu/data/bear/images --views 60 2>&1 | grep "^{" | tee -a "$OUT/run.log"
fi
if has leftovers; then
  timeout 240 python3 benchmarks/probe_leftovers.py --out "$OUT/probe_leftovers.json" 2>&1 | grep "^{" | cut -c1-600 | tee -a "$OUT/run.log"
  echo "== leftovers stage done at ${SECONDS}s" | tee -a "$OUT/run.log"
fi
if has attn; then
  python3 benchmarks/bench_attention.py --out "$OUT/bench_attention.json" ${ATTN_ARGS:-} 2>&1 | tee -a "$OUT/run.log"
  echo "== attn stage done at ${SECONDS}s" | tee -a "$OUT/run.log"
fi
make_arch() {  # the real InstructPix2Pix architecture with random weights, once per machine
  [ -d /tmp/ip2p-arch ] || python3 benchmarks/make_random_ip2p.py /tmp/ip2p-arch --arch .gpu/models/ip2p-sd15-arch \
    --device cuda --dtype float16 2>&1 | tail -1 | tee -a "$OUT/run.log"
}
run_aot() {
  timeout ${AOT_TIMEOUT:-240} python3 benchmarks/probe_aot_step.py --ip2p-model /tmp/ip2p-arch --out "$OUT/probe_aot_step.json" ${AOT_ARGS:-} \
    2>&1 | grep -v Warning | tail -12 | tee -a "$OUT/run.log"
  echo "== aot stage done at ${SECONDS}s" | tee -a "$OUT/run.log"
}
if has aot && [ -n "${AOT_GPU:-}" ]; then
  make_arch
  CUDA_VISIBLE_DEVICES=$AOT_GPU run_aot &
  AOT_PID=$!
fi
if has edit; then
  timeout ${EDIT_TIMEOUT:-900} python3 benchmarks/bench_edit.py --arch .gpu/models/ip2p-sd15-arch --out "$OUT/bench_edit.json" \
    --variants "${BENCH_EDIT_VARIANTS:-original,resident,batch8,batch8-cudnn,batch16,batch8-compiled}" \
    --breakdown "${BENCH_EDIT_BREAKDOWN-batch8,batch8-compiled}" --kernels "${BENCH_EDIT_KERNELS:-}" 2>&1 | tee -a "$OUT/run.log"
  echo "== edit stage done at ${SECONDS}s" | tee -a "$OUT/run.log"
fi
if has transfer; then
  for dir in . ${BASELINE_DIR:-}; do
    [ "$dir" = . ] || cp benchmarks/probe_edit_transfer.py "$dir/benchmarks/"
    (cd "$dir" && timeout 120 python3 benchmarks/probe_edit_transfer.py) 2>&1 | grep '^{"views' | cut -c1-300 | sed "s|^|$dir: |" \
      | tee -a "$OUT/run.log"
  done
  echo "== transfer stage done at ${SECONDS}s" | tee -a "$OUT/run.log"
fi
if has editprofile; then
  timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py -k group_norm 2>&1 | tail -3 | tee -a "$OUT/run.log"
  timeout 200 python3 benchmarks/profile_edit.py --arch .gpu/models/ip2p-sd15-arch --out "$OUT" 2>&1 | grep -v "^USDT\|^ERROR:" | tail -90 >>"$OUT/run.log"
  echo "== editprofile stage done at ${SECONDS}s" | tee -a "$OUT/run.log"
fi
if has tests; then
  timeout ${TESTS_TIMEOUT:-300} python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py ${TESTS_K:+-k "$TESTS_K"} >"$OUT/gpu_tests.log" 2>&1 &
  TESTS_PID=$!
fi
if has checkpoint; then
  python3 -c "
from pathlib import Path; from benchmarks.e2e_common import make_checkpoint
print(make_checkpoint(Path('.gpu/data/bear'), Path('/tmp/igs2gs-bench/ckpt'), ${SPLAT_STEPS:-2000}, Path('/tmp/splatfacto.log')))" \
    2>&1 | tail -3 | tee -a "$OUT/run.log"
  echo "== checkpoint stage done at ${SECONDS}s" | tee -a "$OUT/run.log"
fi
pyc_ready  # the checkpoint stage overlaps the bytecode's writing; what follows is timed
if has tests; then
  wait $TESTS_PID; echo "== tests (rc $?) done at ${SECONDS}s: $(tail -1 "$OUT/gpu_tests.log")" | tee -a "$OUT/run.log"
fi
if has profile; then
  make_arch
  timeout 150 python3 benchmarks/profile_train_step.py --data .gpu/data/bear --load-dir $CKPT --out "$OUT" --ip2p-model /tmp/ip2p-arch \
    --steps "${PROFILE_STEPS:-150}" 2>&1 | grep -v Warning | tail -40 | tee -a "$OUT/run.log"
  echo "== profile stage done at ${SECONDS}s" | tee -a "$OUT/run.log"
fi
if has e2e || has big || has aot || has load; then
  make_arch
fi
if has load; then
  timeout ${LOAD_TIMEOUT:-200} python3 benchmarks/probe_load.py --ip2p-model /tmp/ip2p-arch --repeats ${LOAD_REPEATS:-2} \
    --out "$OUT/probe_load.json" 2>&1 | grep "^{" | tee -a "$OUT/run.log"
  # the edit process child's imports, slowest first (cumulative microseconds)
  python3 -X importtime -c "import torch, diffusers, transformers; from igs2gs.ip2p import load_ip2p_editor
diffusers.UNet2DConditionModel, diffusers.AutoencoderKL, transformers.CLIPTextModel" 2>&1 \
    | sort -t'|' -k2 -n -r | head -40 >"$OUT/importtime.txt"
  echo "== load stage done at ${SECONDS}s" | tee -a "$OUT/run.log"
fi
if has aot; then
  if [ -n "${AOT_GPU:-}" ]; then wait $AOT_PID; else run_aot; fi
fi
# each run's timed and igs2gs log lines (and the compiled editor's report) from the logs in $1, headed "== $2RUN"
write_heads() {
  local dir=$1 label=$2 r; shift 2
  for r in "$@"; do echo "== $label$r" >>"$OUT/e2e_heads.txt"; grep "^\[..:..:..\]\|igs2gs:" $dir/$r.log 2>/dev/null \
    | cut -c1-300 >>"$OUT/e2e_heads.txt"; grep -A2 "InstructPix2Pix compiled in\|compiled pieces kept" $dir/$r.log \
    2>/dev/null | cut -c1-300 >>"$OUT/e2e_heads.txt"; done
}
if has e2e; then
  # every 5 s, the busiest processes (their CPU share over those 5 s): what else runs beside a run's training
  top -b -c -d 5 -w 200 | awk '/^top -/ {n = 0} n++ < 20 {print; fflush()}' >"$OUT/top.log" &
  TOP_PID=$!
  # each second, each GPU's clock, power, temperature and use: does the editor's GPU run slower beside training?
  nvidia-smi --query-gpu=timestamp,index,clocks.sm,power.draw,temperature.gpu,utilization.gpu,memory.used --format=csv,noheader \
    -l 1 >"$OUT/gpu_clocks.csv" 2>/dev/null &
  SMI_PID=$!
  # runs named NAME-spy run under py-spy when .gpu/bin/py-spy (a static binary) can sample processes on this machine
  SPY=
  if [ -x .gpu/bin/py-spy ]; then
    if .gpu/bin/py-spy record --nonblocking --format raw -o /tmp/spy_check.txt -- python3 -c "import time; time.sleep(1)" \
      >/tmp/spy_check.log 2>&1; then SPY="--py-spy $PWD/.gpu/bin/py-spy"; echo "py-spy works" | tee -a "$OUT/run.log"
    else echo "py-spy cannot sample here: $(tail -c 300 /tmp/spy_check.log)" | tee -a "$OUT/run.log"; fi
  fi
  timeout $(within ${E2E_TIMEOUT:-560}) python3 benchmarks/bench_e2e.py --data .gpu/data/bear --ip2p-model /tmp/ip2p-arch --load-dir $CKPT \
    --out /tmp/igs2gs-bench/out --runs "${E2E_RUNS:-ours,original}" --profile-dir "$OUT" $SPY ${E2E_ARGS:-} 2>&1 | tee "$OUT/e2e_stdout.txt" \
    | tail -30 | tee -a "$OUT/run.log"  # e2e_stdout.txt has each run's record as it finishes, also if the stage is cut
  kill $TOP_PID $SMI_PID
  cp /tmp/igs2gs-bench/out/bench_e2e.json "$OUT/" 2>/dev/null
  mkdir -p "$OUT/records" && cp /tmp/igs2gs-bench/*.json "$OUT/records/" 2>/dev/null  # each finished run's record
  cp /tmp/igs2gs-bench/profile.txt "$OUT/" 2>/dev/null
  RUNS=${E2E_RUNS:-ours,original}; for r in ${RUNS//,/ }; do tail -c 4000 /tmp/igs2gs-bench/out/$r.log >>"$OUT/e2e_logs.txt" 2>/dev/null; done
  write_heads /tmp/igs2gs-bench/out "" ${RUNS//,/ }
  echo "== e2e stage done at ${SECONDS}s" | tee -a "$OUT/run.log"
fi
if has e2e && [ -n "${NOPYC_RUNS:-}" ]; then
  # NOPYC_RUNS again without the written bytecode (every process compiles its modules from source, as on the lent
  # machine by default), after the runs above, on the same machine and checkpoint: what the bytecode saves
  (env -u PYTHONPYCACHEPREFIX timeout $(within ${NOPYC_TIMEOUT:-300}) python3 benchmarks/bench_e2e.py --data .gpu/data/bear \
    --ip2p-model /tmp/ip2p-arch --load-dir $CKPT --out /tmp/igs2gs-bench/nopyc --runs "$NOPYC_RUNS" --profile-dir "$OUT/nopyc" \
    ${E2E_ARGS:-}) 2>&1 | grep "^{" | cut -c1-1500 | sed 's/^/nopyc: /' | tee -a "$OUT/run.log"
  mkdir -p "$OUT/records" && for r in ${NOPYC_RUNS//,/ }; do cp /tmp/igs2gs-bench/$r.json "$OUT/records/nopyc_$r.json" 2>/dev/null; done
  write_heads /tmp/igs2gs-bench/nopyc "nopyc " ${NOPYC_RUNS//,/ }
  echo "== nopyc e2e done at ${SECONDS}s" | tee -a "$OUT/run.log"
fi
if has e2e && [ -n "${BASELINE_DIR:-}" ]; then
  # BASELINE_RUNS from another checkout (e.g. `git archive COMMIT | tar -x -C .gpu/base`), after the runs above, on
  # the same machine and checkpoint (and compile cache): side-by-side figures of two commits
  (cd "$BASELINE_DIR" && timeout $(within ${BASE_TIMEOUT:-300}) python3 benchmarks/bench_e2e.py --data "$OLDPWD/.gpu/data/bear" \
    --ip2p-model /tmp/ip2p-arch --load-dir $CKPT --out /tmp/igs2gs-bench/base --runs "$BASELINE_RUNS" --profile-dir "$OUT/base" \
    ${BASE_ARGS:---profile-steps 0}) 2>&1 | grep "^{" | cut -c1-1500 | sed 's/^/base: /' | tee -a "$OUT/run.log"
  mkdir -p "$OUT/records" && for r in ${BASELINE_RUNS//,/ }; do cp /tmp/igs2gs-bench/$r.json "$OUT/records/base_$r.json" 2>/dev/null; done
  echo "== baseline e2e done at ${SECONDS}s" | tee -a "$OUT/run.log"
fi
if has firstcall; then
  timeout $(within 150) python3 benchmarks/probe_saved_first_call.py --ip2p-model /tmp/ip2p-arch --cache $CACHE/torchinductor \
    --device cuda:1 --size 504 --profile "$OUT/first_call_profile.txt" --profile-build "$OUT/build_profile.txt" 2>&1 \
    | grep "^{" | tee -a "$OUT/run.log"
  echo "== firstcall stage done at ${SECONDS}s" | tee -a "$OUT/run.log"
fi
if has rblock; then
  make_arch
  rblock_probe() {  # $1: default or fixed, $2: what this run is
    local flag=; [ "$1" = default ] && flag=--scale-rblock
    timeout $(within ${RBLOCK_TIMEOUT:-240}) python3 benchmarks/probe_saved_first_call.py --ip2p-model /tmp/ip2p-arch \
      --cache /tmp/rblock-$1 --size 504 --device cuda:0 $flag >/tmp/rblock.txt 2>&1
    grep "^{" /tmp/rblock.txt | sed "s/^/rblock $1 $2: /" | tee -a "$OUT/run.log"
    grep -q "^{" /tmp/rblock.txt || tail -5 /tmp/rblock.txt | tee -a "$OUT/run.log"
  }
  for v in default fixed; do rblock_probe $v cold; done
  for i in $(seq ${RBLOCK_LOADS:-2}); do for v in default fixed; do rblock_probe $v "load $i"; done; done
  for v in default fixed; do
    echo "rblock $v: $(grep -rl "'dynamic_scale_rblock': False" /tmp/rblock-$v 2>/dev/null | wc -l) kernel files without" \
      "the second config, $(grep -rl "'dynamic_scale_rblock': True" /tmp/rblock-$v 2>/dev/null | wc -l) with it" | tee -a "$OUT/run.log"
  done
  echo "== rblock stage done at ${SECONDS}s" | tee -a "$OUT/run.log"
fi
if has consistency; then
  timeout ${CONS_TIMEOUT:-300} python3 benchmarks/bench_consistency.py --data .gpu/data/bear --load-dir $CKPT \
    --out /tmp/igs2gs-bench/cons ${CONS_ARGS:-} 2>&1 | tail -8 | tee -a "$OUT/run.log"
  cp /tmp/igs2gs-bench/cons/bench_consistency.json "$OUT/"
  echo "== consistency stage done at ${SECONDS}s" | tee -a "$OUT/run.log"
fi
if has big; then
  timeout ${BIG_TIMEOUT:-200} python3 benchmarks/bench_e2e.py --data .gpu/data/bear --ip2p-model /tmp/ip2p-arch \
    --load-dir $CKPT --out /tmp/igs2gs-bench/big --runs ours-1024 2>&1 | tail -4 | tee -a "$OUT/run.log"
  cp /tmp/igs2gs-bench/big/bench_e2e.json "$OUT/bench_e2e_1024.json"
  tail -c 3000 /tmp/igs2gs-bench/big/ours-1024.log >>"$OUT/e2e_logs.txt" 2>/dev/null
  echo "== big stage done at ${SECONDS}s" | tee -a "$OUT/run.log"
fi
du -sh $CACHE/torchinductor 2>/dev/null | tee -a "$OUT/run.log"
ls -la $CACHE/torchinductor/igs2gs-saved 2>/dev/null | tail -12 | tee -a "$OUT/run.log"  # the saved compiled pieces
# Triton's autotuning results kept for later processes (the saved pieces' first calls look them up)
echo "autotune results kept: $(find $CACHE -name '*.best_config' 2>/dev/null | wc -l) in $CACHE," \
  "$(find /tmp ~ -xdev -name '*.best_config' 2>/dev/null | wc -l) under /tmp and ~" | tee -a "$OUT/run.log"
tar czf /tmp/inductor.tar.gz -C $CACHE torchinductor 2>/dev/null && [ "$(stat -c %s /tmp/inductor.tar.gz)" -lt 16000000 ] \
  && cp /tmp/inductor.tar.gz "$OUT/" && echo "compile cache saved ($(stat -c %s /tmp/inductor.tar.gz) bytes)" | tee -a "$OUT/run.log"
# at most 8 files come back from $OUT: beyond that, all but run.log travel in one bundle.tgz
if [ "$(find "$OUT" -type f | wc -l)" -gt 8 ]; then
  (cd "$OUT" && tar czf /tmp/bundle.tgz --exclude=./run.log . && find . -type f ! -name run.log -delete \
    && find . -mindepth 1 -type d -empty -delete && mv /tmp/bundle.tgz .)
fi
