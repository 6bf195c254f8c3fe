# Shared set-up for scripts/demo, scripts/test and the benchmarks: sourced, not run.
# Installs what a fresh machine lacks (the Python packages into .venv/, the ONNX Runtime library)
# and builds the release binaries, so that neither command depends on a manual step.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release

step() { printf '\n==> %s\n' "$*" >&2; }

# The project's Python lives in .venv/ inside the clone, never in the system Python:
# ensure_venv creates it (python3 -m venv), installs python/requirements.txt and the package
# uatools (pip install -e ./python) into it, and puts .venv/bin first on PATH, so that every `python3`
# after it (the Rust tests' included) is the venv's. A stamp file per requirements set
# (.venv/.ua-stamp-NAME, holding a hash of the requirements, pyproject.toml and the Python
# version) makes a second run a no-op.
VENV=$ROOT/.venv

venv_stamp_key() { # requirements files...
  { python3 --version 2>&1; cat "$@" "$ROOT/pyproject.toml" "$ROOT/python/pyproject.toml"; } | sha256sum | cut -c1-32
}

ensure_venv() {
  if [[ ! -x $VENV/bin/python3 ]]; then
    step "creating the virtual environment .venv (python3 -m venv)"
    python3 -m venv "$VENV" || {
      echo "python3 -m venv failed: on Debian/Ubuntu install python3-venv (apt-get install python3-venv)" >&2
      rm -rf "$VENV"; exit 1; }
  fi
  export VIRTUAL_ENV=$VENV
  export PATH="$VENV/bin:$PATH"
  local key
  key=$(venv_stamp_key "$ROOT/python/requirements.txt")
  if [[ $(cat "$VENV/.ua-stamp-test" 2>/dev/null) != "$key" ]]; then
    step "installing python/requirements.txt and the package uatools into .venv"
    "$VENV/bin/python3" -m pip install -q --disable-pip-version-check -r "$ROOT/python/requirements.txt"
    "$VENV/bin/python3" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT/python"
    echo "$key" > "$VENV/.ua-stamp-test"
  fi
}

# MODELS_PY: a Python with what makes and exports models (python/requirements-models.txt:
# torch, transformers, onnxscript, onnxruntime, safetensors, tokenizers), for the export's tests
# (scripts/test's pytest: `ensure_models_python venv`, into .venv) and scripts/slurm-test's stand-in
# checkpoints. The venv's when it has them; else the Python the venv was made from when that
# has them (nothing is installed then, as before the venv); else they are installed into
# .venv: torch's CPU wheel first (PyPI's default Linux torch pulls gigabytes of CUDA
# libraries), PyPI's only where download.pytorch.org is unreachable.
MODELS_IMPORT='import torch, transformers, onnxscript, onnxruntime, safetensors, tokenizers'
ensure_models_python() { # [venv: into .venv even where the base Python has them (pytest runs there)]
  ensure_venv
  MODELS_PY=$VENV/bin/python3
  "$MODELS_PY" -c "$MODELS_IMPORT" 2>/dev/null && return 0
  if [[ ${1:-} != venv ]] && use_base_models_python; then return 0; fi
  install_models_python
}

use_base_models_python() {
  local base
  base=$("$VENV/bin/python3" -c 'import sys; print(getattr(sys, "_base_executable", "") or "")')
  if [[ -n $base && -x $base ]] && "$base" -c "$MODELS_IMPORT" 2>/dev/null; then
    MODELS_PY=$base
    step "using $base for the model packages (torch, transformers, onnxscript: it has them)"
    return 0
  fi
  return 1
}

install_models_python() {
  step "installing python/requirements-models.txt (torch's CPU build, transformers, onnxscript) into .venv"
  "$MODELS_PY" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu \
    || "$MODELS_PY" -m pip install -q torch || { echo "pip install torch failed (CPU index and PyPI)" >&2; exit 1; }
  "$MODELS_PY" -m pip install -q -r "$ROOT/python/requirements-models.txt" \
    || { echo "pip install -r python/requirements-models.txt failed" >&2; exit 1; }
}

ensure_onnxruntime() {
  scripts/setup
  local libs=()
  shopt -s nullglob
  libs=("$ROOT"/.ort/lib/libonnxruntime.so.* "$ROOT"/.ort/lib/libonnxruntime.*.dylib)
  shopt -u nullglob
  [[ ${#libs[@]} -gt 0 ]] || { echo "scripts/setup installed no ONNX Runtime library into .ort/lib" >&2; exit 1; }
  ORT_DYLIB_PATH=${libs[0]}
  export ORT_DYLIB_PATH
}

build_release() {
  step "building the release binaries (first build: several minutes)"
  cargo build --release --workspace --locked
}

# The wheel ua-scaling (scripts/test-wheel, scripts/bench-wheel): `pip wheel` runs
# python/wheel_backend.py, whose `cargo build --release --workspace --locked` is build_release's,
# so the release build in CARGO_TARGET_DIR is reused. WHEEL: the wheel's path.
build_wheel() {
  step "building the wheel (pip wheel --no-deps .: python/wheel_backend.py packs the release build)"
  local dir=$CARGO_TARGET_DIR/wheels built=()
  rm -f "$dir"/ua_scaling-*.whl
  python3 -m pip wheel -q --disable-pip-version-check --no-deps "$ROOT" -w "$dir"
  shopt -s nullglob
  built=("$dir"/ua_scaling-*.whl)
  shopt -u nullglob
  [[ ${#built[@]} == 1 ]] || { echo "pip wheel made ${#built[@]} ua_scaling wheels in $dir" >&2; exit 1; }
  WHEEL=${built[0]}
}

# PATH for a user of the wheel installed into the virtual environment $1: its bin, then the
# system's folders that hold no cargo or rustc (a machine without a Rust toolchain).
user_path() {
  local path=$1/bin d
  for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
    [[ -d $d && ! -e $d/cargo && ! -e $d/rustc ]] && path+=:$d
  done
  echo "$path"
}

# Runs a command under /usr/bin/time -v, its output and timing in $OUT/<id>.*, and
# prints its wall clock and peak RSS (the benchmark scripts).
timed() { # id, label, command...
    local id="$1" label="$2"; shift 2
    /usr/bin/time -v "$@" > "$OUT/$id.stdout" 2> "$OUT/$id.time" || { cat "$OUT/$id.time" >&2; exit 1; }
    local wall rss
    wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$OUT/$id.time")
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$OUT/$id.time")
    printf '%-55s wall %8s   peak RSS %6d MB\n' "$label" "$wall" "$((rss / 1024))"
}

# Where nginx is (the HTTP tests need it); prints its path, fails when there is none.
nginx_binary() {
  local p
  for p in /usr/sbin/nginx /usr/bin/nginx /usr/local/sbin/nginx; do
    [[ -x $p ]] && { echo "$p"; return 0; }
  done
  return 1
}
