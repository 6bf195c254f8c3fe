# Shared set-up for scripts/demo, scripts/test and the benchmarks: sourced, not run.
# Installs what a fresh machine lacks (Python packages, the ONNX Runtime library)
# and builds the release binaries, so that neither command depends on a manual step.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release

step() { printf '\n==> %s\n' "$*" >&2; }

# numpy, scipy and pyarrow run the seed's own analysis code in the parity tests;
# onnx rewrites fixture graphs (external weights, a perturbed weight) in the provenance tests.
ensure_python_packages() {
  if ! python3 -c 'import numpy, scipy, pyarrow, onnx' 2>/dev/null; then
    step "installing numpy, scipy, pyarrow, onnx (for the seed-exact and provenance tests)"
    python3 -m pip install -q numpy scipy pyarrow onnx
  fi
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
