"""How much of ONNX Runtime's session creation a saved optimized graph would save.

ONNX Runtime can write the graph it optimized (SessionOptions.optimized_model_filepath)
and load that copy later with optimizations off. That pays only if optimizing is a
large part of creating the session; the copy also doubles the weights on disk. This
measures, on one model dir (CPU provider, page cache warm, each --repeats times):

  default      InferenceSession(model.onnx), every optimization on (what extract does)
  no-opt       the same graph with optimizations off: the floor any reuse can reach
  reuse        the saved optimized copy, loaded with optimizations off

  scripts/bench-session --model tests/fixtures/tiny-d
  scripts/bench-session --model out/real-model/onnx --repeats 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time


def create(path: str, level=None, save: str | None = None) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if level is not None:
        so.graph_optimization_level = level
    if save:
        so.optimized_model_filepath = save
        if os.path.getsize(path) > 1 << 30 or os.path.exists(path + ".data"):
            so.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                        os.path.basename(save) + ".data")
            so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                        "1024")
    t = time.perf_counter()
    ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", required=True, help="model dir written by scripts/export")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    src = os.path.join(a.model, "model.onnx")
    if not os.path.isfile(src):
        print(f"bench-session: error: {src}: no such file (expected a dir from scripts/export)", file=sys.stderr)
        return 1
    if a.repeats < 1:
        print("bench-session: error: --repeats must be at least 1", file=sys.stderr)
        return 1
    import onnxruntime as ort

    off = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "optimized.onnx")
        create(src)  # warm the page cache
        save_s = create(src, save=saved)
        runs = {"default": [], "no-opt": [], "reuse": []}
        for _ in range(a.repeats):
            runs["default"].append(create(src))
            runs["no-opt"].append(create(src, off))
            runs["reuse"].append(create(saved, off))
        saved_bytes = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp))
    print(f"model: {a.model} ({os.path.getsize(src) / 1e6:.1f} MB graph), ONNX Runtime {ort.__version__}, "
          f"{os.cpu_count()} CPUs")
    print(f"saving the optimized copy: {save_s:.3f} s, {saved_bytes / 1e6:.1f} MB on disk")
    for k, v in runs.items():
        print(f"{k:8s} median {statistics.median(v):.3f} s  (min {min(v):.3f}, max {max(v):.3f}, n={len(v)})")
    d, r = statistics.median(runs["default"]), statistics.median(runs["reuse"])
    print(f"reuse saves {d - r:.3f} s of {d:.3f} s ({(d - r) / d * 100:.0f}%)")
    return 0
