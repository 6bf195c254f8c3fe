"""Benchmark: extract against the bare ONNX Runtime loop on the same graph.

What extract adds to the forward passes (tokenizing, the parity probe, reading the
outputs, NLL, Parquet, the sidecar) is the gap between two rates over the same batches:

  bare loop  Python onnxruntime: one InferenceSession on DIR/model.onnx (CPU with the
             default thread count, or CUDA with --device cuda), warmed up once on the
             largest batch, then session.run(every output) over every batch, timed
             (session creation and tokenizing excluded) -> statements/s: the engine's
             steady state;
  first pass the same loop timed on a fresh session, without the warm-up: the first
             pass pays the runtime's first-touch allocations (its arena, the logits),
             as extract's loop does, so this is the like-for-like rate;
  extract    `extract --model DIR --dataset D --out <fresh temp dir> --batch-size B
             --device cpu|cuda`, its own rate from its summary line
             "extracted N statements x L layers (...) in S s: R statements/s".

The batches are extract's (extract/src/batch.rs): every statement in the dataset's order
(category, pair, A then B), encoded with the `tokenizers` package from DIR/tokenizer.json
(encode(text, add_special_tokens=True), as extract does), sorted by (token count, index),
cut into runs of --batch-size (run longest first), right-padded with id 0 and
attention_mask 0. The three are run in turn, --repeats times each (which goes first
rotates), so machine noise falls on all. Prints median, min and max statements/s of each
and the ratios of the medians (extract / bare loop and extract / first pass: 1.0 means
extract costs nothing beyond the forward passes),
and writes every run, the machine (lscpu model name, nproc), ONNX Runtime's version and
the date to --json.

  scripts/bench-engine                                   # tests/fixtures/tiny-d, 5 repeats
  scripts/bench-engine --model out/shape-6.9b --repeats 3 --json out/bench-engine-6.9b.json

Needs numpy, onnxruntime and tokenizers (python3 -m pip install numpy onnxruntime
tokenizers) and a built extract (cargo build --release -p extract).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from uatools import REPO, cli
from uatools.binaries import bin_candidates
from uatools.seed.dataset import DatasetError, statement_texts

SUMMARY_RE = re.compile(
    r"extracted (\d+) statements x (\d+) layers \((.*?)\) in ([0-9.]+) s: ([0-9.]+) statements/s")
ENGINE_RE = re.compile(r"execution provider: (.*?) on (.*), ONNX Runtime (\S+); session created in ([0-9.]+) s")


class BenchError(Exception):
    """Bad input or a failed run: printed as one line."""


class OneLineParser(cli.OneLineParser):
    error_class = BenchError


def default_extract() -> str:
    return bin_candidates("extract", use_env=False)[0]


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(prog="bench-engine", description=__doc__.split("\n\n")[0],
                      epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(REPO, "tests", "fixtures", "tiny-d"),
                   help="model dir (model.onnx, tokenizer.json, export.json; default tests/fixtures/tiny-d)")
    p.add_argument("--dataset", default=os.path.join(REPO, "tests", "data", "seed-dataset.json"),
                   help="dataset in the seed's schema (default tests/data/seed-dataset.json, 460 statements)")
    p.add_argument("--extract", default=default_extract(),
                   help="extract binary (default $CARGO_TARGET_DIR/release/extract, CARGO_TARGET_DIR "
                        "defaulting to the repo's target/)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each (default 5)")
    p.add_argument("--batch-size", type=int, default=32, help="statements per batch (default 32, extract's)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device of both (default cpu)")
    p.add_argument("--memory-pattern", choices=["on", "off"], default="on",
                   help="the Python sessions' enable_mem_pattern (default on, ONNX Runtime's; extract's "
                        "CPU session has it off)")
    p.add_argument("--json", default=None,
                   help="result file (default out/bench-engine-<model dir name>.json under the repo)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds one extract run may take (default 1800)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    if args.json is None:
        name = os.path.basename(os.path.normpath(args.model)) or "model"
        args.json = os.path.join(REPO, "out", f"bench-engine-{name}.json")
    return args


def check_inputs(args) -> None:
    for f in ("model.onnx", "tokenizer.json", "export.json"):
        if not os.path.isfile(os.path.join(args.model, f)):
            raise BenchError(f"{args.model}: no {f} (not a model dir from scripts/export)")
    if not os.path.isfile(args.dataset):
        raise BenchError(f"{args.dataset}: no such file")
    if not (os.path.isfile(args.extract) and os.access(args.extract, os.X_OK)):
        raise BenchError(f"{args.extract}: no extract binary there (cargo build --release -p extract, "
                         "or give --extract)")


def load_statements(path: str) -> list:
    """Statement texts in extract's order: categories in file order, pair by pair, A then B."""
    try:
        return statement_texts(path)
    except DatasetError as e:
        raise BenchError(str(e)) from e


def tokenize(model_dir: str, texts: list) -> list:
    from tokenizers import Tokenizer

    path = os.path.join(model_dir, "tokenizer.json")
    try:
        tok = Tokenizer.from_file(path)
    except Exception as e:  # the tokenizers package raises plain Exception
        raise BenchError(f"{path}: not a usable tokenizers JSON ({e})") from e
    return [tok.encode(t, add_special_tokens=True).ids for t in texts]


def plan(lengths: list, batch_size: int) -> list:
    """extract's batch::plan with Batching::rows(batch_size): indices sorted by
    (length, index), cut every batch_size, the batches run longest first."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)][::-1]


def pad(seqs: list):
    """extract's batch::pad: right padding with id 0, mask 0."""
    import numpy as np

    seq = max(len(s) for s in seqs)
    ids = np.zeros((len(seqs), seq), dtype=np.int64)
    mask = np.zeros((len(seqs), seq), dtype=np.int64)
    for r, s in enumerate(seqs):
        ids[r, :len(s)] = s
        mask[r, :len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def make_session(model_dir: str, device: str, memory_pattern: bool = True):
    import onnxruntime as ort

    path = os.path.join(model_dir, "model.onnx")
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BenchError(f"--device cuda: this onnxruntime ({ort.__version__}) has no CUDAExecutionProvider "
                             "(install onnxruntime-gpu)")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    try:
        options = ort.SessionOptions()
        options.enable_mem_pattern = memory_pattern
        session = ort.InferenceSession(path, options, providers=providers)
    except Exception as e:  # onnxruntime's own exception types vary by build
        raise BenchError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0]})") from e
    if device == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise BenchError(f"{path}: the session fell back to {session.get_providers()[0]}")
    return session


def bare_loop(session, feeds: list) -> float:
    """Seconds for session.run(every output) over every batch."""
    names = [o.name for o in session.get_outputs()]
    t = time.perf_counter()
    for f in feeds:
        session.run(names, f)
    return time.perf_counter() - t


def run_extract(args, n_statements: int) -> dict:
    out = tempfile.mkdtemp(prefix="bench-engine-")
    cmd = [args.extract, "--model", args.model, "--dataset", args.dataset, "--out", out,
           "--batch-size", str(args.batch_size), "--device", args.device]
    try:
        t = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
        except subprocess.TimeoutExpired as e:
            raise BenchError(f"extract ran over --timeout {args.timeout:g} s: {' '.join(cmd)}") from e
        except OSError as e:
            raise BenchError(f"cannot run {args.extract}: {e}") from e
        wall = time.perf_counter() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)
    text = p.stdout + p.stderr
    if p.returncode != 0:
        last = next((ln for ln in reversed(text.splitlines()) if ln.strip()), "no output")
        raise BenchError(f"extract exited {p.returncode}: {last.strip()}")
    m = SUMMARY_RE.search(text)
    if not m:
        raise BenchError("extract printed no summary line 'extracted N statements x L layers (...) in S s: "
                         "R statements/s'")
    if int(m.group(1)) != n_statements:
        raise BenchError(f"extract extracted {m.group(1)} statements, the dataset holds {n_statements}")
    run = {"statements_per_s": float(m.group(5)), "seconds": float(m.group(4)), "wall_s": wall,
           "n_statements": int(m.group(1)), "n_layers": int(m.group(2)), "summary": m.group(0)}
    e = ENGINE_RE.search(text)
    if e:
        run.update(provider=e.group(1), device=e.group(2), onnxruntime=e.group(3), session_s=float(e.group(4)))
    return run


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "nproc": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def stats(rates: list) -> dict:
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        check_inputs(args)
        return bench(args)
    except BenchError as e:
        print(f"bench-engine: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench-engine: error: interrupted", file=sys.stderr)
        return 130


def rounds(args, session, feeds: list, n: int):
    """--repeats rounds of the three arms, the order rotating: per-run records of each."""
    bare, cold, ext = [], [], []
    arms = ("bare", "cold", "extract")
    for r in range(args.repeats):
        for which in arms[r % 3:] + arms[:r % 3]:
            if which == "bare":
                s = bare_loop(session, feeds)
                bare.append({"repeat": r, "seconds": s, "statements_per_s": n / s})
                print(f"  run {r + 1}: bare loop {n / s:10.1f} statements/s ({s:.3f} s)", flush=True)
            elif which == "cold":
                # A fresh session's first pass, as extract's loop is (its probes aside).
                fresh = make_session(args.model, args.device, args.memory_pattern == "on")
                s = bare_loop(fresh, feeds)
                del fresh
                cold.append({"repeat": r, "seconds": s, "statements_per_s": n / s})
                print(f"  run {r + 1}: first pass {n / s:9.1f} statements/s ({s:.3f} s)", flush=True)
            else:
                e = run_extract(args, n)
                e["repeat"] = r
                ext.append(e)
                print(f"  run {r + 1}: extract   {e['statements_per_s']:10.1f} statements/s "
                      f"(own {e['seconds']:.1f} s, wall {e['wall_s']:.2f} s)", flush=True)
    return bare, cold, ext


def bench(args) -> int:
    import onnxruntime as ort

    texts = load_statements(args.dataset)
    ids = tokenize(args.model, texts)
    empty = [i for i, x in enumerate(ids) if not x]
    if empty:
        raise BenchError(f"statement {empty[0]} encodes to no tokens")
    batches = plan([len(x) for x in ids], args.batch_size)
    feeds = [pad([ids[i] for i in b]) for b in batches]
    session = make_session(args.model, args.device, args.memory_pattern == "on")
    # Warm-up: the largest batch once (allocations and kernels for the biggest shapes).
    largest = max(range(len(feeds)), key=lambda k: feeds[k]["input_ids"].size)
    bare_loop(session, [feeds[largest]])
    n = len(texts)
    tokens = sum(len(x) for x in ids)
    padded = sum(f["input_ids"].size for f in feeds)
    print(f"bench-engine: {args.model}: {n} statements, {tokens} tokens ({padded} padded) in {len(batches)} "
          f"batches of <= {args.batch_size}; {args.repeats} runs of each, alternating", flush=True)

    bare, cold, ext = rounds(args, session, feeds, n)

    b, x = stats([v["statements_per_s"] for v in bare]), stats([v["statements_per_s"] for v in ext])
    c = stats([v["statements_per_s"] for v in cold])
    ratio, ratio_cold = x["median"] / b["median"], x["median"] / c["median"]
    result = {
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "machine": machine(),
        "onnxruntime_python": ort.__version__,
        "onnxruntime_extract": next((e.get("onnxruntime") for e in ext if e.get("onnxruntime")), None),
        "provider_python": session.get_providers()[0],
        "model": os.path.abspath(args.model),
        "outputs": [o.name for o in session.get_outputs()],
        "dataset": os.path.abspath(args.dataset),
        "extract": os.path.abspath(args.extract),
        "device": args.device,
        "batch_size": args.batch_size,
        "memory_pattern": args.memory_pattern,
        "n_statements": n,
        "n_batches": len(batches),
        "n_tokens": tokens,
        "n_tokens_padded": padded,
        "repeats": args.repeats,
        "bare_loop": {"runs": bare, **b},
        "bare_first_pass": {"runs": cold, **c},
        "extract_runs": {"runs": ext, **x},
        "ratio_of_medians_extract_over_bare": ratio,
        "ratio_of_medians_extract_over_first_pass": ratio_cold,
    }
    print()
    print(f"| {n} statements, batch {args.batch_size}, {args.device} | median st/s | min st/s | max st/s |")
    print("|---|---|---|---|")
    print(f"| bare ONNX Runtime loop (Python {ort.__version__}) | {b['median']:.1f} | {b['min']:.1f} | "
          f"{b['max']:.1f} |")
    print(f"| the same loop, a fresh session's first pass | {c['median']:.1f} | {c['min']:.1f} | {c['max']:.1f} |")
    print(f"| extract (own rate) | {x['median']:.1f} | {x['min']:.1f} | {x['max']:.1f} |")
    print(f"\nextract / bare loop (medians): {ratio:.3f}; extract / first pass: {ratio_cold:.3f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"result: {args.json}")
    return 0
