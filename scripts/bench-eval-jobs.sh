#!/usr/bin/env bash
# Times `vidtune eval SUITE --recipe RECIPE` cold with --jobs 1 and with --jobs N (default 2), the disk
# memo off so that neither run reads the other's results, and checks that the two tables agree case by
# case. Run it alone on the machine: another busy process skews both timings.
#
#   scripts/bench-eval-jobs.sh [SUITE] [RECIPE] [N]        (default: toy:test auto 2)
set -euo pipefail
suite=${1:-toy:test}
recipe=${2:-auto}
jobs=${3:-2}
vidtune=${VIDTUNE_BIN:-$(dirname "$0")/../target/debug/vidtune}
out=$(mktemp -d "${TMPDIR:-/tmp}/vidtune-bench-eval.XXXXXX")
export VIDTUNE_CACHE_MAX_GB=0
run() {
    local n=$1
    local start end
    start=$(date +%s.%N)
    "$vidtune" eval "$suite" --recipe "$recipe" --jobs "$n" --out "$out/jobs$n" > "$out/jobs$n.log" 2>&1
    end=$(date +%s.%N)
    python3 -c "print(round($end - $start, 1))"
}
echo "vidtune eval $suite --recipe $recipe, disk memo off, $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
t1=$(run 1)
echo "--jobs 1: ${t1} s"
tn=$(run "$jobs")
echo "--jobs $jobs: ${tn} s"
echo "ratio: $(python3 -c "print(round($tn / $t1, 3))")"
python3 - "$out/jobs1/results.json" "$out/jobs$jobs/results.json" <<'PY'
import json, sys
# Frames judged right must agree exactly; PSNRs to 0.01 dB (a worker with fewer threads sums its floats in
# another order: about 1e-4 dB apart).
a, b = (json.load(open(p))["recipes"] for p in sys.argv[1:])
diff, worst = [], 0.0
for ra, rb in zip(a, b):
    for x, y in zip(ra["cases"], rb["cases"]):
        if (x["case"], x["frames_right"], x["error"]) != (y["case"], y["frames_right"], y["error"]):
            diff.append(x["case"])
        if x["kept"] and y["kept"]:
            d = abs(x["kept"]["psnr"] - y["kept"]["psnr"])
            worst = max(worst, d)
            if d > 0.01:
                diff.append(x["case"] + " (PSNR)")
n = sum(len(r["cases"]) for r in a)
print(f"cases: {n}; " + ("the same frames right in every case" if not diff else f"differ: {diff}")
      + f"; PSNRs at most {worst:.2g} dB apart")
sys.exit(1 if diff else 0)
PY
echo "results: $out"
