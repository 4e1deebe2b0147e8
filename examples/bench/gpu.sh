#!/usr/bin/env bash
# Everything a GPU check of vidtune needs, in one go, leaving a JSON (and the logs) in one folder:
#
#   1. build   `vidtune` without FFmpeg (the GPU images have no FFmpeg libraries) and the SD-core parity
#              test binary, in release, into target/gpu/bundle/ with the fixtures those tests read, and
#              that folder packed as target/gpu/bundle.tar.xz (about 18 MB). Skipped where cargo is
#              missing: a machine without Rust runs a bundle built elsewhere — copy the archive to the
#              same place in its checkout (or give --archive FILE) and it is unpacked there
#   2. smoke   `vidtune doctor`, and a 2-step bench on the tiny random model on CUDA in fp32 and fp16;
#              when it fails, the long phases are skipped and the failure is in the JSON
#   3. parity  the SD-core parity tests (text encoder, VAE, UNet, DDIM loop and inversion, each against
#              diffusers / transformers fixtures) on CUDA in fp32 and in fp16, and the seeded pipeline
#              in fp32
#   4. bench   a 3-step warm-up, then `vidtune bench --config sd14` at 8 × 512² in fp16 with gradient
#              checkpointing: tune 500 steps, invert 50, sample 50 (random weights of SD1.4's shape:
#              timings, not images)
#   5. official the same job through the official Tune-A-Video code (fp16 autocast, checkpointing in the
#              form that trains every trainable tensor: its own leaves the down blocks untrained), when
#              its environment is present: TUNE_A_VIDEO_DIR (a checkout) and a python3 that imports its
#              pins (examples/bench/requirements-official.txt)
#
# Usage: examples/bench/gpu.sh [--out DIR] [--dry-run] [--build-only] [--no-build] [--quick]
#   --out DIR      where the JSON and logs go (default target/gpu/run-<date>)
#   --dry-run      print each phase's command instead of running it (works on any machine)
#   --build-only   phase 1 only: make the bundle to copy to a GPU machine
#   --no-build     use the bundle as it is (unpacked from the archive when the folder is missing)
#   --archive FILE the packed bundle (default target/gpu/bundle.tar.xz)
#   --quick        the bench and the official run with 50 tuning steps and 20 inversion / sampling steps
# Environment: VIDTUNE_TORCH_LIB (libtorch's lib folder; default: the one of python3's torch, else the
# build's), VIDTUNE_FIXTURES (default kernels-tests/fixtures/generated, or the bundle's copy),
# TUNE_A_VIDEO_DIR and VIDTUNE_OFFICIAL_PYTHON for phase 5. On an H200, --quick took 3 minutes with the
# official code; the full run needs about 9 (the official code tunes 500 steps in about 4 minutes there).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD

OUT="" DRY=0 BUILD=auto ONLY_BUILD=0 QUICK=0 ARCHIVE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --build-only) ONLY_BUILD=1; shift ;;
    --no-build) BUILD=no; shift ;;
    --archive) ARCHIVE="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    -h|--help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

export BUNDLE="$ROOT/target/gpu/bundle"
export ARCHIVE="${ARCHIVE:-$ROOT/target/gpu/bundle.tar.xz}"
OUT="${OUT:-$ROOT/target/gpu/run-$(date -u +%Y%m%dT%H%M%SZ)}"
TUNE_STEPS=500 STEPS=50
[ "$QUICK" = 1 ] && TUNE_STEPS=50 STEPS=20
BENCH_ARGS=(--config sd14 --frames 8 --size 512 --tune-steps "$TUNE_STEPS" --steps "$STEPS" --device cuda
  --dtype fp16 --checkpointing true)
# The seeded pipeline's parity is defined in float32 (a half-precision pipeline draws its noise in half).
PARITY_TESTS=(clip_text_encoder_matches_transformers vae_matches_diffusers unet_matches_diffusers
  ddim_loop_and_inversion_match_diffusers)
PARITY_FP32_ONLY=(seeded_txt2img_equals_the_diffusers_pipeline)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
quote() { local a out=""; for a in "$@"; do out+="$(printf '%q' "$a") "; done; printf '%s' "${out% }"; }

# Phase records, one JSON object per phase, joined into $OUT/gpu.json at the end.
RECORDS=()
record() { # NAME STATUS SECONDS LOG [EXTRA-JSON]
  RECORDS+=("{\"phase\": \"$1\", \"status\": \"$2\", \"seconds\": $3, \"log\": \"$4\"${5:+, $5}}")
}

# run NAME TIMEOUT CMD...: runs one phase with its log in $OUT/NAME.log; its exit status is returned.
run() {
  local name=$1 limit=$2; shift 2
  if [ "$DRY" = 1 ]; then
    echo "[$name] $(quote "$@")"
    record "$name" dry-run 0 ""
    return 0
  fi
  say "$name: $(quote "$@")"
  local start=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  local status=ok
  [ $rc = 0 ] || status="failed ($rc)"
  [ $rc = 124 ] && status="timed out after $limit s"
  tail -n 25 "$OUT/$name.log" >&2
  record "$name" "$status" $((SECONDS - start)) "$name.log"
  return $rc
}

mkdir -p "$OUT"

# 1. Build.
if [ "$BUILD" = auto ] && ! command -v cargo >/dev/null 2>&1; then
  BUILD=no
  say "no cargo here: using the bundle in $BUNDLE"
fi
if [ "$BUILD" = auto ]; then
  build() {
    set -e
    ./dev.sh env >/dev/null
    export LIBTORCH_BYPASS_VERSION_CHECK=1
    cargo build --release --no-default-features -p vidtune --target-dir target/gpu
    local test_bin
    test_bin=$(cargo test --release --no-default-features -p vidtune-runtime --test parity_sd --no-run \
      --target-dir target/gpu --message-format=json |
      sed -n 's/.*"executable":"\([^"]*parity_sd[^"]*\)".*/\1/p' | tail -n 1)
    [ -n "$test_bin" ] || { echo "cargo did not report the parity test binary"; return 1; }
    mkdir -p "$BUNDLE"
    cp target/gpu/release/vidtune "$BUNDLE/vidtune.part" && mv "$BUNDLE/vidtune.part" "$BUNDLE/vidtune"
    cp "$test_bin" "$BUNDLE/parity_sd.part" && mv "$BUNDLE/parity_sd.part" "$BUNDLE/parity_sd"
    # The fixtures those tests read (2 MB of the 75), so that the bundle travels alone.
    local f=kernels-tests/fixtures/generated
    [ -f "$f/STAMP" ] || { echo "no parity fixtures in $f: run ./dev.sh test once (it makes them)"; return 1; }
    rm -rf "$BUNDLE/fixtures"
    (cd "$f" && for c in tiny-conv tiny-linear; do
      mkdir -p "$BUNDLE/fixtures/$c" && cp -r "$c/pipeline" "$c"/{unet,vae,clip_text,ddim_loop}.safetensors "$BUNDLE/fixtures/$c/"
    done && mkdir -p "$BUNDLE/fixtures/tokenizers" && cp tokenizers/ids.json "$BUNDLE/fixtures/tokenizers/" &&
      cp STAMP "$BUNDLE/fixtures/")
    tar -C "$(dirname "$BUNDLE")" -cJf "$ARCHIVE.part" bundle && mv "$ARCHIVE.part" "$ARCHIVE"
    du -sh "$BUNDLE" "$ARCHIVE"; ls -la "$BUNDLE"
  }
  if [ "$DRY" = 1 ]; then
    echo "[build] cargo build --release --no-default-features -p vidtune --target-dir target/gpu"
    echo "[build] cargo test --release --no-default-features -p vidtune-runtime --test parity_sd --no-run --target-dir target/gpu"
    echo "[build] copy target/gpu/release/vidtune, the parity test binary and its fixtures to $BUNDLE, packed as $ARCHIVE"
    record build dry-run 0 ""
  else
    run build 3000 bash -c "$(declare -f build); build" || { echo "gpu.sh: the build failed" >&2; exit 1; }
  fi
fi
[ "$ONLY_BUILD" = 1 ] && exit 0

VIDTUNE="$BUNDLE/vidtune" PARITY="$BUNDLE/parity_sd"
if [ "$DRY" = 0 ]; then
  if [ ! -x "$VIDTUNE" ] && [ -f "$ARCHIVE" ]; then
    say "unpacking $ARCHIVE"
    mkdir -p "$(dirname "$BUNDLE")"
    tar -C "$(dirname "$BUNDLE")" -xJf "$ARCHIVE" 2>/dev/null ||
      python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$ARCHIVE" "$(dirname "$BUNDLE")" ||
      { echo "gpu.sh: cannot unpack $ARCHIVE" >&2; exit 1; }
  fi
  [ -x "$VIDTUNE" ] && [ -x "$PARITY" ] || { echo "gpu.sh: no bundle in $BUNDLE (run with --build-only where cargo is)" >&2; exit 1; }
  # libtorch: the build's rpath points at the building machine's virtualenv; elsewhere use python3's torch.
  if [ -z "${VIDTUNE_TORCH_LIB:-}" ] && command -v python3 >/dev/null 2>&1; then
    VIDTUNE_TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null || true)
  fi
  [ -n "${VIDTUNE_TORCH_LIB:-}" ] && export LD_LIBRARY_PATH="$VIDTUNE_TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  command -v nvidia-smi >/dev/null 2>&1 &&
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$OUT/gpu.txt" 2>&1
fi
if [ -z "${VIDTUNE_FIXTURES:-}" ]; then
  VIDTUNE_FIXTURES="$ROOT/kernels-tests/fixtures/generated"
  [ -f "$VIDTUNE_FIXTURES/STAMP" ] || VIDTUNE_FIXTURES="$BUNDLE/fixtures"
fi
export VIDTUNE_FIXTURES

# 2. Smoke: the whole job on the tiny model, so that a failure costs seconds, not the long phases.
SMOKE=ok
run doctor 60 "$VIDTUNE" doctor || true
for dtype in fp32 fp16; do
  run "smoke-$dtype" 120 "$VIDTUNE" bench --config tiny --frames 4 --size 64 --tune-steps 2 --steps 2 \
    --device cuda --dtype "$dtype" --json "$OUT/smoke-$dtype.json" || SMOKE=failed
done

# 3. Parity on CUDA.
run parity-fp32 240 env VIDTUNE_TEST_DEVICE=cuda VIDTUNE_TEST_DTYPE=fp32 \
  "$PARITY" --test-threads 1 --nocapture "${PARITY_TESTS[@]}" "${PARITY_FP32_ONLY[@]}" || true
run parity-fp16 240 env VIDTUNE_TEST_DEVICE=cuda VIDTUNE_TEST_DTYPE=fp16 \
  "$PARITY" --test-threads 1 --nocapture "${PARITY_TESTS[@]}" || true

# 4. The SD1.4-shaped bench, and 5. the official code beside it.
if [ "$SMOKE" = ok ]; then
  # On fresh H200 machines the first SD1.4-sized process tuned at 2.1-2.5 it/s and the later ones at
  # 3.2-3.3: a short run first, so that vidtune and the official code are both measured after it.
  run warm-up 180 "$VIDTUNE" bench --config sd14 --frames 8 --size 512 --tune-steps 3 --steps 2 --device cuda \
    --dtype fp16 --checkpointing true || true
  run bench 420 "$VIDTUNE" bench "${BENCH_ARGS[@]}" --json "$OUT/bench.json" || true
  OFFICIAL_PY="${VIDTUNE_OFFICIAL_PYTHON:-python3}"
  # As official_tav.py runs it: PyTorch only (diffusers 0.11 breaks on an installed JAX otherwise).
  IMPORTS=""
  IMPORT_ERR=$(USE_FLAX=0 USE_TF=0 "$OFFICIAL_PY" -c 'import diffusers, einops, imageio, torchvision, transformers' 2>&1) ||
    IMPORTS=$(printf '%s\n' "$IMPORT_ERR" | tail -n 1)
  if [ -n "${TUNE_A_VIDEO_DIR:-}" ] && [ -d "$TUNE_A_VIDEO_DIR/tuneavideo" ] && { [ "$DRY" = 1 ] || [ -z "$IMPORTS" ]; }; then
    run official 480 "$OFFICIAL_PY" examples/bench/official_tav.py --tav "$TUNE_A_VIDEO_DIR" --config sd14 \
      --device cuda --frames 8 --size 512 --tune-steps "$TUNE_STEPS" --steps "$STEPS" --precision fp16 \
      --train-all --json "$OUT/official.json" || true
  else
    why="TUNE_A_VIDEO_DIR does not name a checkout of the official code"
    [ -n "$IMPORTS" ] && why="$OFFICIAL_PY cannot import its pins: $(printf '%s' "$IMPORTS" | tr -d '"\\')"
    record official "not present ($why)" 0 ""
  fi
else
  record bench "skipped: the smoke run failed" 0 ""
fi

# The summary: the phases, and the figures the runs wrote.
include() { [ -s "$OUT/$1" ] && cat "$OUT/$1" || echo null; }
{
  printf '{\n"gpu": "%s",\n' "$(tr -d '"\n' 2>/dev/null <"$OUT/gpu.txt")"
  printf '"bench_args": "%s",\n' "${BENCH_ARGS[*]}"
  printf '"phases": [\n  %s\n],\n' "$(IFS=$'\n'; echo "${RECORDS[*]}" | paste -sd, | sed 's/},{/},\n  {/g')"
  printf '"bench": %s,\n"official": %s\n}\n' "$(include bench.json)" "$(include official.json)"
} >"$OUT/gpu.json.part" && mv "$OUT/gpu.json.part" "$OUT/gpu.json"
say "wrote $OUT/gpu.json"
[ "$DRY" = 1 ] && exit 0
grep -q '"status": "failed\|"status": "timed out' "$OUT/gpu.json" && exit 1
exit 0
