#!/usr/bin/env bash
# Times a toy tune (`vidtune bench --config toy`) alone and beside a competing busy process, with the
# default thread choice (auto), with every core (--threads all) and with one thread, alternated ROUNDS
# times (best of them). The competitor is one single-threaded busy loop. Run it alone on the machine.
#
#   scripts/bench-threads.sh [TUNE_STEPS] [SIZE] [ROUNDS]        (default: 20 64 2)
set -euo pipefail
steps=${1:-20}
size=${2:-64}
rounds=${3:-2}
vidtune=${VIDTUNE_BIN:-$(dirname "$0")/../target/debug/vidtune}
out=$(mktemp -d "${TMPDIR:-/tmp}/vidtune-bench-threads.XXXXXX")
tune_seconds() {
    # The tune stage's seconds from bench's JSON; the thread row from its text.
    "$vidtune" "$@" bench --config toy --frames 8 --size "$size" --tune-steps "$steps" --steps 1 \
        --json "$out/b.json" > "$out/b.log" 2>&1
    python3 -c "import json;print(next(s['seconds'] for s in json.load(open('$out/b.json'))['stages'] if s['name']=='tune'))"
}
threads_row() { grep -o 'threads: [^;]*' "$out/b.log" | head -1; }
busy_pid=""
start_busy() { python3 -c 'while True: pass' & busy_pid=$!; sleep 1; }
stop_busy() { kill "$busy_pid" 2>/dev/null || true; wait "$busy_pid" 2>/dev/null || true; busy_pid=""; }
trap stop_busy EXIT
echo "toy tune, $steps steps, 8 frames at ${size}², $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
declare -A best
for r in $(seq "$rounds"); do
    for load in alone busy; do
        [ "$load" = busy ] && start_busy
        for setting in default all 1; do
            args=()
            [ "$setting" != default ] && args=(--threads "$setting")
            t=$(tune_seconds "${args[@]}")
            echo "round $r, $load, ${setting}: ${t} s ($(threads_row))"
            key="$load/$setting"
            if [ -z "${best[$key]:-}" ] || python3 -c "import sys;sys.exit(0 if $t < ${best[$key]} else 1)"; then
                best[$key]=$t
            fi
        done
        [ "$load" = busy ] && stop_busy
    done
done
echo
echo "| threads | alone | beside one busy process | ratio |"
echo "|---|---:|---:|---:|"
for setting in default all 1; do
    a=${best[alone/$setting]}; b=${best[busy/$setting]}
    echo "| $setting | $a s | $b s | $(python3 -c "print(f'{$b / ${best[alone/default]}:.2f}×')") |"
done
echo "(ratio: against the default alone)"
rm -rf "$out"
