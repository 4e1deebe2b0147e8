#!/usr/bin/env bash
# vidtune's one entry point for set-up, the demo and the tests. Every command sets up what it needs
# (idempotently, and quickly the second time):
#
#   ./dev.sh demo     the main job: a real edit of a toy-world clip with the built-in toy models (no download)
#   ./dev.sh test     the whole test suite
#   ./dev.sh build    set up and build only          ./dev.sh lint   cargo fmt --check + clippy
#   ./dev.sh notebook JupyterLab on examples/notebooks with the Rust kernel (evcxr) set up for vidtune
#   ./dev.sh kernel   set up that kernel only, and print the JUPYTER_PATH that finds it
#   ./dev.sh env      print the exports that make plain `cargo` use the same libtorch
#
# Set-up: Debian packages when missing (FFmpeg -dev libraries, clang/libclang, pkg-config, a C++
# compiler, Python's venv), then a virtualenv with torch and onnxruntime from PyPI in the user's cache
# dir (shared by every clone, keyed by torch and Python versions), then `cargo build`. `test` also installs
# slurm-wlm and munge (the sweep tests start a one-node Slurm of their own, scripts/slurm-local.sh).
# With LIBTORCH already exported, the virtualenv's torch is not used for linking.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$PWD

TORCH_VERSION=2.11.0
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/vidtune"
APT_PACKAGES=(pkg-config clang libclang-dev g++ libavcodec-dev libavformat-dev libavutil-dev libswscale-dev
  libswresample-dev libavfilter-dev libavdevice-dev)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Phases of a command, timed: `phase NAME` ends the previous phase and starts NAME; the times are printed
# as each phase ends and once more, all together, when the command exits (even when it fails).
PHASE="" PHASE_START=0 PHASE_TIMES=()
phase() {
  local now=$SECONDS
  if [ -n "$PHASE" ]; then
    PHASE_TIMES+=("$(printf '%6ds  %s' $((now - PHASE_START)) "$PHASE")")
    printf '\033[2m    (%s: %d s)\033[0m\n' "$PHASE" $((now - PHASE_START)) >&2
  fi
  PHASE="$1" PHASE_START=$now
  [ -z "$1" ] || say "$1"
}
phase_summary() {
  local rc=$?
  phase ""
  if [ ${#PHASE_TIMES[@]} -gt 0 ]; then
    printf '==> time per phase (exit status %d):\n' "$rc" >&2
    printf '%s\n' "${PHASE_TIMES[@]}" >&2
    printf '%6ds  total\n' "$SECONDS" >&2
  fi
}
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

apt_setup() {
  command -v dpkg-query >/dev/null 2>&1 || { say "not a Debian system: install FFmpeg -dev libraries, clang and pkg-config yourself"; return 0; }
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root or sudo to install: ${missing[*]}"
    sudo=sudo
  fi
  say "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

python_tag() { python3 -c 'import sys; print(f"py{sys.version_info[0]}.{sys.version_info[1]}")'; }

# venv_setup REQUIREMENTS...: the shared virtualenv with those requirement files installed.
venv_setup() {
  command -v python3 >/dev/null 2>&1 || die "python3 is needed for the torch virtualenv"
  VENV="${VIDTUNE_VENV:-$CACHE/venv-torch-$TORCH_VERSION-$(python_tag)}"
  local req stamp
  stamp="$VENV/.vidtune-$(cat "$@" | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.venv.lock"
  flock 9
  if [ ! -f "$stamp" ]; then
    if [ ! -x "$VENV/bin/python" ]; then
      say "creating the virtualenv $VENV (torch with its CUDA libraries is about 5 GB)"
      python3 -m venv "$VENV"
      "$VENV/bin/python" -m pip install -q --upgrade pip
    fi
    for req in "$@"; do
      say "pip install -r $req"
      "$VENV/bin/python" -m pip install -q -r "$req"
    done
    touch "$stamp"
  fi
  flock -u 9
}

# Makes cargo find libtorch: LIBTORCH (from the user, or the virtualenv's torch). Also written to the
# ignored .cargo/config.toml so that plain `cargo build` uses the same one (and rebuilds nothing).
cargo_env() {
  if [ -z "${LIBTORCH:-}" ]; then
    LIBTORCH=$("$VENV/bin/python" -c 'import torch, pathlib; print(pathlib.Path(torch.__file__).parent)')
    export LIBTORCH
  fi
  mkdir -p .cargo
  local cfg=".cargo/config.toml"
  local want
  want=$(printf '# Written by dev.sh: the libtorch this checkout builds against.\n[env]\nLIBTORCH = "%s"\n' "$LIBTORCH")
  [ "$(cat "$cfg" 2>/dev/null)" = "$want" ] || printf '%s\n' "$want" >"$cfg"
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs)"
}

setup() {
  apt_setup
  venv_setup requirements/runtime.txt "$@"
  cargo_env
}

EVCXR_VERSION=0.22.0

# The Rust kernel for notebooks: evcxr_jupyter (built once into the shared cache dir) and a kernelspec
# named `rust` in $CACHE/jupyter (put first on JUPYTER_PATH) whose environment finds libtorch and ONNX
# Runtime, so notebooks need no exports. Rust's own shared libraries are on the library path too: evcxr's
# cell libraries find libstd through a relative rpath that is wrong when its build folder sits under the
# home folder. EVCXR_CONFIG_DIR is ours, with no init.evcxr: evcxr's `:cache` must stay off (its rustc
# wrapper answers autocfg's probes from the cache without looking at the probed code, and smartstring then
# fails to build), whatever the user's own evcxr configuration says.
notebook_setup() {
  local root="$CACHE/evcxr-$EVCXR_VERSION" site kdir
  EVCXR="$root/bin/evcxr_jupyter"
  if [ ! -x "$EVCXR" ]; then
    exec 8>"$CACHE/.evcxr.lock"
    flock 8
    if [ ! -x "$EVCXR" ]; then
      say "cargo install evcxr_jupyter@$EVCXR_VERSION (about 5 minutes, once per machine)"
      cargo install -q --locked "evcxr_jupyter@$EVCXR_VERSION" --root "$root"
    fi
    flock -u 8
  fi
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  kdir="$CACHE/jupyter/kernels/rust"
  # evcxr's own files first (logos, version.txt: with it, evcxr_jupyter does not rewrite kernel.json at
  # start-up), then our kernel.json with the environment.
  [ -f "$kdir/version.txt" ] || JUPYTER_PATH="$CACHE/jupyter" "$EVCXR" --install >/dev/null
  mkdir -p "$CACHE/evcxr-config"
  rm -f "$CACHE/evcxr-config/init.evcxr"
  printf '# evcxr configuration of the Rust (vidtune) kernel, written by dev.sh\n[evcxr]\n' >"$CACHE/evcxr-config/evcxr.toml"
  "$VENV/bin/python" - "$kdir/kernel.json" <<PY
import json, sys
spec = {
    "argv": ["$EVCXR", "--control_file", "{connection_file}"],
    "display_name": "Rust (vidtune)",
    "language": "rust",
    "interrupt_mode": "message",
    "env": {
        "LIBTORCH": "$LIBTORCH",
        "LD_LIBRARY_PATH": "$LIBTORCH/lib:$(rustc --print target-libdir)",
        "ORT_DYLIB_PATH": "$(ls "$site"/onnxruntime/capi/libonnxruntime.so* 2>/dev/null | head -n1)",
        "PATH": "$VENV/bin:$(dirname "$(command -v cargo)"):/usr/local/bin:/usr/bin:/bin",
        "EVCXR_CONFIG_DIR": "$CACHE/evcxr-config",
    },
}
json.dump(spec, open(sys.argv[1], "w"), indent=1)
PY
  export JUPYTER_PATH="$CACHE/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
  export VIDTUNE_VENV="$VENV"
}

# The parity fixtures (kernels-tests/fixtures/generated), regenerated when the script, the pinned
# reference packages or the bundled configs change.
fixtures() {
  local want have
  want=$("$VENV/bin/python" kernels-tests/reference/make_fixtures.py --stamp)
  have=$(head -n1 kernels-tests/fixtures/generated/STAMP 2>/dev/null || true)
  if [ "$want" != "$have" ]; then
    say "generating reference fixtures with diffusers and transformers"
    "$VENV/bin/python" kernels-tests/reference/make_fixtures.py >/dev/null
  fi
}

case "${1:-help}" in
  demo)
    setup
    say "cargo build"
    cargo build -q -p vidtune
    say "running scripts/demo.rhai"
    exec target/debug/vidtune run scripts/demo.rhai "${@:2}"
    ;;
  test)
    trap phase_summary EXIT
    # The sweep tests start a one-node Slurm of their own (scripts/slurm-local.sh).
    APT_PACKAGES+=(slurm-wlm munge)
    phase "set-up: Debian packages and the torch virtualenv"
    setup requirements/test.txt requirements/notebook.txt
    phase "set-up: the notebook kernel (evcxr)"
    notebook_setup
    phase "reference fixtures"
    fixtures
    phase "cargo build (all targets)"
    cargo build -q --workspace --all-targets
    # The notebook kernel's build of vidtune, once, before the suite (tests/notebook.rs: the same build
    # folder and lock the notebook tests use), so that their cells time only their own work.
    phase "vidtune built into the notebook kernel's cache"
    cargo test -q -p vidtune --test notebook -- --ignored --exact the_kernel_builds_vidtune
    phase "cargo test"
    cargo test -q --workspace "${@:2}"
    ;;
  build)
    setup
    cargo build -p vidtune "${@:2}"
    echo "built: $ROOT/target/debug/vidtune"
    ;;
  lint)
    setup
    cargo fmt --all -- --check
    cargo clippy -q --workspace --all-targets -- -D warnings
    ;;
  notebook)
    setup requirements/notebook.txt
    notebook_setup
    "$VENV/bin/python" -m pip install -q jupyterlab==4.4.7
    say "JupyterLab on examples/notebooks (kernel: Rust (vidtune))"
    exec "$VENV/bin/jupyter" lab --notebook-dir=examples/notebooks "${@:2}"
    ;;
  kernel)
    setup requirements/notebook.txt
    notebook_setup
    echo "export JUPYTER_PATH=$JUPYTER_PATH   # the Rust (vidtune) kernel, for a Jupyter of your own"
    ;;
  env)
    setup >/dev/null
    echo "export LIBTORCH=$LIBTORCH"
    ;;
  *)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    ;;
esac
