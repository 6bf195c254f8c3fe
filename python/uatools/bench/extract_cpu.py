"""Benchmark: `extract` (ONNX Runtime, CPU) against the seed notebook's loop (transformers).

Both run on the same random-weight model, so the comparison needs no download:

  1. build a GPTNeoXForCausalLM at the real Pythia-160M shape (python/uatools/pythia_shapes.json:
     12 layers, hidden 768, rotary 25 %, parallel residual, untied, ...),
     float32, weights from a fixed seed, with the real Pythia tokenizer; save it as a
     Hugging Face directory under the work folder (default out/bench/cpu-160m, ignored);
  2. export it with scripts/export (float32, cpu);
  3. run `extract` on the seed's dataset (460 statements), timing its wall clock and
     keeping its own statements/s from its closing summary;
  4. run the seed's loop exactly as the notebook does: per pair get_layer_embeddings(A),
     get_layer_embeddings(B), get_output_preference(A, B) (4 batch-1 forward passes per
     pair, layer_step=4, torch's default thread count), timing it. get_output_preference
     is the seed's two get_nll calls and a subtraction; they are called here one by one
     (uatools.seed.reference) so that the per-statement NLLs can be compared too;
  5. parity: max |diff| of the cached mean_skip_first embeddings (the seed's sampled
     layers) and nll_mean against the seed loop's values, and of the per-pair preference;
  6. print a table and write a JSON result file; say whether extract reaches 10x the seed
     loop's statements/s (the issue's target).

Two ratios, because loading is a fixed cost that the two sides pay differently:
  - forward passes: extract's own statements/s (its summary, session already created)
    against the seed loop's (model already loaded, one warm-up pass done); the target
    is judged on this like-for-like ratio;
  - end to end: extract's whole wall clock (process start to exit: library and session
    load, probes, tokenization, Parquet writing) against the seed's model load plus loop.

  scripts/bench-extract-cpu                       # the benchmark (several minutes on 2 cores)
  scripts/bench-extract-cpu --shape tiny --keep   # plumbing check in seconds
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

from uatools import REPO
from uatools.binaries import default_extract_bin, run_timed
from uatools.cache import CacheError, read_cache
from uatools.machine import cpu_model
from uatools.pythia import SIZES, neox_config, size_dims
from uatools.seed import loop as seed_loop_lib
from uatools.seed.dataset import iter_statements, load_dataset

SHAPES = {
    # name: config fields; Pythia's from the one table (uatools.pythia), "tiny" for a quick run
    # with the smaller Pythia sizes' vocabulary.
    "160m": size_dims("160m"),
    "410m": size_dims("410m"),
    "tiny": {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 256,
             "vocab_size": SIZES["410m"]["vocab_size"]},
}
TARGET_RATIO = 10.0


def log(msg: str) -> None:
    print(f"[bench-extract-cpu] {msg}", file=sys.stderr, flush=True)


def pythia_config(shape: str):
    return neox_config(**SHAPES[shape])


def build_model(shape: str, tokenizer_path: str, out_dir: str, seed: int) -> None:
    import torch
    from transformers import GPTNeoXForCausalLM, PreTrainedTokenizerFast
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(pythia_config(shape)).to(torch.float32).eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer_path)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    n = sum(p.numel() for p in model.parameters())
    log(f"built {shape} model: {n / 1e6:.1f} M parameters -> {out_dir}")


def parse_extract_rate(text: str):
    """extract's own statements/s from its closing summary (None if absent)."""
    hits = re.findall(r"([0-9]+(?:\.[0-9]+)?)\s*statements?\s*/\s*s", text)
    return float(hits[-1]) if hits else None


def seed_loop(model_dir: str, dataset: dict, layer_step: int, threads):
    """The notebook's loop over all pairs, timed; returns embeddings and NLLs in order."""
    import numpy as np
    import torch
    if threads:
        torch.set_num_threads(threads)
    tokenizer, model, load_s = seed_loop_lib.load_model(model_dir, "float32")
    first = next(iter(dataset.values()))["pairs"][0][0]
    seed_loop_lib.warm_up(first, model, tokenizer, layer_step)  # not timed
    embs, nlls, prefs = [], [], []
    t0 = time.perf_counter()
    for category_data in dataset.values():
        for stmt_a, stmt_b in category_data["pairs"]:
            embs_a, embs_b, nll_a, nll_b = seed_loop_lib.pair_values(stmt_a, stmt_b, model, tokenizer, layer_step)
            prefs.append(nll_b - nll_a)
            embs += [embs_a, embs_b]
            nlls += [nll_a, nll_b]
    loop_s = time.perf_counter() - t0
    layers = seed_loop_lib.layer_keys(embs[0])
    stacked = {layer: np.stack([e[f"layer_{layer}"] for e in embs]) for layer in layers}
    return {"load_s": load_s, "loop_s": loop_s, "layers": layers, "emb": stacked,
            "nll": np.asarray(nlls), "pref": np.asarray(prefs),
            "torch_threads": torch.get_num_threads()}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    data = os.path.join(REPO, "tests", "data")
    ap.add_argument("--tokenizer", default=os.path.join(data, "gpt-neox-20b-tokenizer.json"),
                    help="Pythia tokenizer.json (default tests/data/gpt-neox-20b-tokenizer.json)")
    ap.add_argument("--dataset", default=os.path.join(data, "seed-dataset.json"),
                    help="the seed's dataset (default tests/data/seed-dataset.json)")
    ap.add_argument("--work", default=os.path.join(REPO, "out", "bench", "cpu-160m"),
                    help="work folder for model, ONNX and cache (default out/bench/cpu-160m)")
    ap.add_argument("--json", default=None, help="result file (default WORK/../bench-extract-cpu[-SHAPE].json)")
    ap.add_argument("--shape", default="160m", choices=sorted(SHAPES), help="model shape (default 160m)")
    ap.add_argument("--seed", type=int, default=1234, help="weight seed (default 1234)")
    ap.add_argument("--extract-bin", default=default_extract_bin(), help="extract binary")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for both sides: torch.set_num_threads and extract's --threads "
                         "if it has one (default: each side's own default)")
    ap.add_argument("--batch-size", type=int, default=None, help="extract --batch-size (default: extract's)")
    ap.add_argument("--exporter", default=None, help="scripts/export --exporter (default: export's)")
    ap.add_argument("--layer-step", type=int, default=4, help="seed loop's layer_step (default 4, the seed's)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (model, ONNX, cache)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse a model/export already in the work folder (implies --keep)")
    args = ap.parse_args(argv)
    if args.reuse:
        args.keep = True
    return args


def check_inputs(args) -> None:
    for p, what in ((args.tokenizer, "tokenizer"), (args.dataset, "dataset")):
        if not os.path.isfile(p):
            raise SystemExit(f"{what} not found: {p}")
    if not os.path.isfile(args.extract_bin):
        raise SystemExit(f"extract binary not found: {args.extract_bin} "
                         "(build: cargo build --release -p extract, or pass --extract-bin)")


def prepare_model(args, hf_dir: str, onnx_dir: str) -> dict:
    """Steps 1-2: build the random-weight model and export it (reused with --reuse)."""
    t0 = time.perf_counter()
    if not (args.reuse and os.path.isfile(os.path.join(hf_dir, "config.json"))):
        build_model(args.shape, args.tokenizer, hf_dir, args.seed)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if not (args.reuse and os.path.isfile(os.path.join(onnx_dir, "export.json"))):
        cmd = [sys.executable, os.path.join(REPO, "scripts", "export"), "--model", hf_dir,
               "--out", onnx_dir, "--dtype", "float32", "--device", "cpu"]
        if args.exporter:
            cmd += ["--exporter", args.exporter]
        log("$ " + " ".join(cmd))
        subprocess.run(cmd, check=True)
    return {"build_model": build_s, "export": time.perf_counter() - t0}


def run_extract(args, onnx_dir: str, cache: str) -> dict:
    """Step 3: extract on the dataset, its wall clock and its own rate."""
    help_text = subprocess.run([args.extract_bin, "--help"], capture_output=True, text=True, check=False).stdout
    cmd = [args.extract_bin, "--model", onnx_dir, "--dataset", args.dataset, "--out", cache,
           "--name", "bench", "--device", "cpu", "--poolings", "mean_skip_first"]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    threads_passed = False
    if args.threads and "--threads" in help_text:
        cmd += ["--threads", str(args.threads)]
        threads_passed = True
    if os.path.exists(os.path.join(cache, "bench")):
        shutil.rmtree(os.path.join(cache, "bench"))
    proc, extract_wall = run_timed(cmd, log)
    if proc.returncode != 0:
        raise SystemExit(f"extract failed with exit code {proc.returncode}")
    with open(os.path.join(cache, "bench", "manifest.json")) as f:
        manifest = json.load(f)
    return {"cmd": cmd, "wall": extract_wall, "threads_passed": threads_passed, "manifest": manifest,
            "own_rate": parse_extract_rate(proc.stdout + "\n" + proc.stderr)}


def parity_of(cache_dir: str, dataset: dict, ref: dict) -> dict:
    """Step 5: the cache's values against the seed loop's, as max |diff|."""
    import numpy as np
    try:
        nll, texts, embs = read_cache(cache_dir, ref["layers"])
    except CacheError as e:
        raise SystemExit(str(e)) from e
    seed_texts = [s.text for s in iter_statements(dataset)]
    if texts != seed_texts:
        raise SystemExit("statements.parquet order differs from the dataset order")
    layers = ref["layers"]
    emb_abs = max(float(np.abs(embs[layer] - ref["emb"][layer]).max()) for layer in layers)
    emb_rel = max(float((np.linalg.norm(embs[layer] - ref["emb"][layer], axis=1)
                         / np.linalg.norm(ref["emb"][layer], axis=1)).max()) for layer in layers)
    pref = nll[1::2] - nll[0::2]
    return {"layers": layers, "mean_skip_first_max_abs": emb_abs,
            "mean_skip_first_max_rel_norm": emb_rel, "nll_mean_max_abs": float(np.abs(nll - ref["nll"]).max()),
            "preference_max_abs": float(np.abs(pref - ref["pref"]).max())}


def result_record(args, n_statements: int, ext: dict, ref: dict, parity: dict, setup_s: dict,
                  load_before) -> dict:
    extract_rate = n_statements / ext["wall"]
    seed_rate = n_statements / ref["loop_s"]
    ratio_run = (ext["own_rate"] / seed_rate) if ext["own_rate"] else None
    run = ext["manifest"].get("run", {})
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "nproc": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
        "shape": args.shape, "seed": args.seed, "n_statements": n_statements,
        "extract": {"command": " ".join(ext["cmd"]), "wall_s": ext["wall"],
                    "statements_per_s_wall": extract_rate,
                    "statements_per_s_reported": ext["own_rate"],
                    "batch_size": run.get("batch_size"),
                    "execution_provider": run.get("execution_provider"),
                    "onnxruntime_version": run.get("onnxruntime_version"),
                    "threads_passed": ext["threads_passed"]},
        "seed_loop": {"loop_s": ref["loop_s"], "model_load_s": ref["load_s"],
                      "statements_per_s": seed_rate, "forward_passes": 2 * n_statements,
                      "layer_step": args.layer_step, "torch_threads": ref["torch_threads"]},
        "ratio_wall": extract_rate / seed_rate,
        "ratio_reported": ratio_run,
        "ratio_end_to_end": (ref["load_s"] + ref["loop_s"]) / ext["wall"],
        "target_ratio": TARGET_RATIO, "target_met": ratio_run is not None and ratio_run >= TARGET_RATIO,
        "parity": parity,
        "setup_s": setup_s,
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    check_inputs(args)
    hf_dir = os.path.join(args.work, "hf")
    onnx_dir = os.path.join(args.work, "onnx")
    cache = os.path.join(args.work, "cache")
    json_path = args.json or os.path.join(
        os.path.dirname(os.path.abspath(args.work)),
        "bench-extract-cpu.json" if args.shape == "160m" else f"bench-extract-cpu-{args.shape}.json")
    if not args.reuse and os.path.exists(args.work):
        shutil.rmtree(args.work)
    os.makedirs(args.work, exist_ok=True)
    dataset = load_dataset(args.dataset)
    n_statements = 2 * sum(len(c["pairs"]) for c in dataset.values())
    load_before = os.getloadavg()

    setup_s = prepare_model(args, hf_dir, onnx_dir)  # 1-2. model and export
    ext = run_extract(args, onnx_dir, cache)  # 3. extract
    log(f"seed loop: {n_statements // 2} pairs x 4 batch-1 passes (layer_step={args.layer_step})")
    ref = seed_loop(hf_dir, dataset, args.layer_step, args.threads)  # 4. seed loop
    parity = parity_of(os.path.join(cache, "bench"), dataset, ref)  # 5. parity
    result = result_record(args, n_statements, ext, ref, parity, setup_s, load_before)
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(result, f, indent=2)
    print_table(result)
    print(f"result: {json_path}")
    if not args.keep:
        shutil.rmtree(args.work)


def print_table(r: dict) -> None:
    e, s, p = r["extract"], r["seed_loop"], r["parity"]
    rep = f"{e['statements_per_s_reported']:.1f}" if e["statements_per_s_reported"] else "n/a"
    print(f"\n## extract vs the seed's loop, CPU, Pythia-{r['shape']} shape, "
          f"{r['n_statements']} statements\n")
    print(f"machine: {r['machine']['cpu']}, {r['machine']['nproc']} CPUs; date {r['date']}")
    print("| | seconds | statements/s |\n|---|---|---|")
    print(f"| extract, wall clock (batch {e['batch_size']}, {e['execution_provider']}) "
          f"| {e['wall_s']:.2f} | {e['statements_per_s_wall']:.1f} |")
    print(f"| extract, its own summary | | {rep} |")
    print(f"| seed loop (4 batch-1 passes per pair, {s['torch_threads']} torch threads) "
          f"| {s['loop_s']:.2f} | {s['statements_per_s']:.1f} |")
    print(f"| seed model load (from_pretrained) | {s['model_load_s']:.2f} | |")
    run = f"{r['ratio_reported']:.1f}x" if r["ratio_reported"] else "n/a"
    print(f"\nratio, forward passes (extract's summary / seed loop): {run}; target "
          f"{r['target_ratio']:.0f}x: {'met' if r['target_met'] else 'NOT met'}")
    print(f"ratio, end to end (seed load + loop / extract wall): {r['ratio_end_to_end']:.1f}x; "
          f"extract wall / seed loop alone: {r['ratio_wall']:.1f}x")
    print(f"parity (layers {p['layers']}): mean_skip_first max |diff| {p['mean_skip_first_max_abs']:.2e} "
          f"(max relative to norm {p['mean_skip_first_max_rel_norm']:.2e}); nll_mean max |diff| "
          f"{p['nll_mean_max_abs']:.2e}; preference max |diff| {p['preference_max_abs']:.2e}")
