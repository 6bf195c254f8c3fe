"""One shape's steps: build, export, read, extract (per batching configuration), auto, the
seed loop, parity and overflow, the float32 spread and r. Each step records into the shape's
result `res` and calls `save` so that a run cut short leaves what it finished."""
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

from uatools import REPO, parity
from uatools.cache import read_cache
from uatools.contract import POOLINGS
from uatools.files import read_json, write_json
from uatools.gpu_check.env import GpuMemPoller, StepError, run_cmd
from uatools.gpu_check.measure import (
    analyze_r,
    drop_caches,
    parity_eval,
    parse_extract,
    py_session_time,
    read_weights,
    scan_cache,
    seed_r,
)
from uatools.gpu_check.model import build_and_save, seed_loop
from uatools.gpu_check.plan import SHAPES, extract_runs_for, over_budget
from uatools.gpu_check.runlog import log
from uatools.seed.dataset import iter_statements


def fmt(v, spec=".3g"):
    return "n/a" if v is None else format(v, spec)


def run_extract(shape, label, extra, args, env, onnx_dir, out_dir, n_statements, dry) -> dict:
    cmd = [args.extract_bin, "--model", onnx_dir, "--dataset", args.dataset, "--out", out_dir, "--name", shape,
           "--device", args.device, "--poolings", ",".join(POOLINGS)] + extra
    run = {"config": label, "args": extra}
    if not dry:
        run["page_cache_dropped"] = drop_caches()
    with GpuMemPoller() as poller:
        p, wall = run_cmd(cmd, env, dry, timeout=3600)
    if dry:
        return run
    man = read_json(os.path.join(out_dir, shape, "manifest.json"))
    parsed = parse_extract(p.stdout + "\n" + p.stderr)
    mr = man.get("run", {})
    run.update({"wall_s": wall, "statements_per_s_wall": n_statements / wall, **parsed,
                "execution_provider": mr.get("execution_provider"), "device_name": mr.get("device_name"),
                "batch_size": mr.get("batch_size"), "max_tokens": mr.get("max_tokens"),
                "onnxruntime_version": mr.get("onnxruntime_version"), "gpu_memory_nvidia_smi": poller.result()})
    if parsed["session_s_reported"] is None:
        log("   extract printed no session time: timing InferenceSession with Python onnxruntime")
        run["session_python"] = py_session_time(os.path.join(onnx_dir, "model.onnx"), env, args.device)
    return run


def session_s(run):
    s = run.get("session_s_reported")
    return s if s is not None else (run.get("session_python") or {}).get("session_s")


@dataclass
class Shape:
    """One shape's run: its inputs, its folders and its result record."""
    shape: str
    args: object
    env: dict
    dataset: dict
    res: dict
    save: Callable
    work: str
    hf_dir: str
    onnx_dir: str
    n: int
    dry: bool


def check_shape(shape, args, env, dataset, res, first, save) -> dict:
    dry = args.dry_run
    dims = [SHAPES[shape][k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")]
    res.update({"shape": shape, "layers_hidden_heads_intermediate": dims, "dtype": args.dtype,
                "massive_planted": shape in args.massive_shapes})
    work = os.path.join(args.work, shape)
    hf_dir, onnx_dir = os.path.join(work, "hf"), os.path.join(work, "onnx")
    if not dry and os.path.exists(work):
        shutil.rmtree(work)
    if not dry:
        os.makedirs(work)
    n = 2 * sum(len(c["pairs"]) for c in dataset.values()) if dataset else 0
    s = Shape(shape, args, env, dataset, res, save, work, hf_dir, onnx_dir, n, dry)
    step_build(s)
    step_export(s)
    step_read(s)
    runs = step_extract(s)
    summarise_main_run(res, runs)
    if first and args.device == "cuda":
        step_auto(s)
    subset = args.seed_subset_pairs if shape in args.seed_subset_shapes else None
    what = f"{subset} pairs per category" if subset else "every pair"
    if subset and over_budget(args) and not dry:
        log(f"== {shape}: seed loop skipped (--budget-s spent); extract's own probe check is the parity evidence")
        res["seed_loop"] = {"skipped": "--budget-s spent"}
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        return res
    log(f"== {shape}: the seed's loop with transformers ({args.dtype}, {args.device}, layer_step "
        f"{args.layer_step}, {what})")
    if dry:
        log_dry_rest(s, subset)
        return res
    ref = step_seed_loop(s, subset, runs)
    rows = ref["index"] if subset else None
    main_cache = step_parity(s, ref, runs, rows)
    step_spread(s, ref, rows, main_cache)
    step_r(s, ref, subset, main_cache)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return res


def step_build(s: Shape) -> None:
    shape, args, res, hf_dir = s.shape, s.args, s.res, s.hf_dir
    plant_layer = max(0, min(args.massive_layer, SHAPES[shape]["num_hidden_layers"] - 2))
    plant = (f"; plant massive activations (layer {plant_layer} MLP output bias, {args.massive_value:g} and "
             f"{-0.8 * args.massive_value:g})" if shape in args.massive_shapes else "")
    log(f"== {shape}: build random weights ({args.dtype}, {args.device}, seed {args.seed}){plant} -> {hf_dir}")
    if not s.dry:
        res["build"] = build_and_save(shape, args, hf_dir, s.dataset)
        hp = res["build"]["hidden_probe"]
        log(f"   {res['build']['n_parameters'] / 1e9:.3f} B parameters, build {res['build']['build_s']:.1f} s, "
            f"save {res['build']['save_s']:.1f} s; max |hidden| {hp['max_abs']:.4g} (layer {hp['max_abs_layer']}), "
            f"all finite: {hp['all_finite']}")
        if shape in args.massive_shapes:
            res["massive"] = {"planted": res["build"]["massive_planted"], "hidden_probe_max_abs": hp["max_abs"],
                              "reached": hp["max_abs"] >= 0.75 * args.massive_value,
                              "first_layer_over_1000": hp["first_layer_over_1000"]}
            if not res["massive"]["reached"]:
                raise StepError(f"planted massive activations did not reach the hidden states: max |hidden| "
                                f"{hp['max_abs']:.4g} < 0.75 x {args.massive_value:g}")
        s.save()


def step_export(s: Shape) -> None:
    shape, args = s.shape, s.args
    cmd = [sys.executable, os.path.join(REPO, "scripts", "export"), "--model", s.hf_dir, "--out", s.onnx_dir,
           "--dtype", args.dtype, "--device", args.device, "--exporter", args.exporter,
           "--source-name", f"random-pythia-{shape}"]
    if not args.export_verify:
        cmd.append("--no-verify")
    log(f"== {shape}: export")
    _, s.res["export_s"] = run_cmd(cmd, s.env, s.dry, timeout=3600)
    s.save()


def step_read(s: Shape) -> None:
    shape, res = s.shape, s.res
    log(f"== {shape}: read the weights from disk (drop page cache, sequential read)")
    if not s.dry:
        res["weights_read"] = read_weights(s.onnx_dir)
        w = res["weights_read"]
        log(f"   {w['bytes'] / 1e9:.2f} GB in {w['read_s']:.2f} s (page cache dropped: {w['page_cache_dropped']})")
        s.save()


def step_extract(s: Shape) -> list:
    """extract once per batching configuration; the first run is the one the report is about."""
    shape, args, res, dry = s.shape, s.args, s.res, s.dry
    runs = []
    res["extract_runs"] = runs
    for k, (label, extra) in enumerate(extract_runs_for(shape, args)):
        missing = [a for a in extra if a.startswith("--") and a.split("=")[0] not in args.extract_flag_set]
        if missing and args.extract_flag_set:
            note = f"skipped: extract --help lists no {', '.join(missing)} (this extract predates it)"
            log(f"== {shape}: extract [{label}] {note}")
            runs.append({"config": label, "args": extra, "skipped": note})
            continue
        if k > 0 and over_budget(args) and not dry:
            runs.append({"config": label, "args": extra, "skipped": "skipped: --budget-s spent"})
            continue
        log(f"== {shape}: extract [{label}] (page cache dropped first)")
        out_dir = os.path.join(s.work, f"cache{k}")
        try:
            r = run_extract(shape, label, extra, args, s.env, s.onnx_dir, out_dir, s.n, dry)
            r["cache"] = os.path.join(out_dir, shape)
        except (StepError, OSError, subprocess.TimeoutExpired) as e:
            if k == 0:
                raise
            r = {"config": label, "args": extra, "error": str(e)}
        runs.append(r)
        if not dry and "wall_s" in r:
            log(f"   wall {r['wall_s']:.2f} s, own rate {fmt(r.get('statements_per_s_reported'), '.1f')} st/s, "
                f"session {fmt(session_s(r), '.2f')} s, GPU peak "
                f"{fmt((r['gpu_memory_nvidia_smi'] or {}).get('peak_minus_baseline_mib'), '.0f')} MiB")
        s.save()
    return runs


def summarise_main_run(res: dict, runs: list) -> None:
    """Memory and session-vs-read figures of the first extract run."""
    main_run = runs[0] if runs and "wall_s" in runs[0] else None
    if main_run:
        res["extract"] = main_run
        w = res["weights_read"]
        mem = (main_run["gpu_memory_nvidia_smi"] or {}).get("peak_minus_baseline_mib")
        res["memory"] = {"weights_mib": w["bytes"] / 2**20, "extract_peak_mib": mem,
                         "extract_peak_over_weights": (mem * 2**20 / w["bytes"]) if mem is not None else None}
        ss, xs = session_s(main_run), main_run.get("extraction_s_reported")
        res["session_vs_read"] = {
            "read_s": w["read_s"], "read_cold": w["page_cache_dropped"], "extract_cold": main_run["page_cache_dropped"],
            "session_s": ss, "extraction_s": xs,
            "session_plus_extraction_s": (ss + xs) if ss is not None and xs is not None else None,
            "extract_wall_s": main_run["wall_s"]}
        sv = res["session_vs_read"]
        sv["ratio_session_plus_extraction"] = (sv["session_plus_extraction_s"] / w["read_s"]
                                               if sv["session_plus_extraction_s"] is not None else None)
        sv["ratio_wall"] = main_run["wall_s"] / w["read_s"]


def step_auto(s: Shape) -> None:
    """extract --device auto on 12 statements: it must pick CUDA and say so."""
    shape, args, res, dry, work = s.shape, s.args, s.res, s.dry, s.work
    if over_budget(args) and not dry:
        res["auto"] = {"ok": None, "skipped": "--budget-s spent"}
    else:
        log(f"== {shape}: extract --device auto on 12 statements (must pick CUDA and say so)")
        small = os.path.join(work, "small-dataset.json")
        if not dry:
            write_json(small, {c: {**d, "pairs": d["pairs"][:1]} for c, d in s.dataset.items()})
        cmd = [args.extract_bin, "--model", s.onnx_dir, "--dataset", small, "--out",
               os.path.join(work, "auto-cache"), "--name", "auto", "--device", "auto"]
        try:
            p, _ = run_cmd(cmd, s.env, dry, timeout=900)
            if not dry:
                man = read_json(os.path.join(work, "auto-cache", "auto", "manifest.json"))
                text = p.stdout + p.stderr
                ep = man.get("run", {}).get("execution_provider")
                res["auto"] = {"execution_provider": ep, "says_cuda": bool(re.search(r"cuda", text, re.IGNORECASE)),
                               "lines": parse_extract(text)["device_lines"], "ok": ep == "CUDAExecutionProvider"}
        except (StepError, OSError, subprocess.TimeoutExpired) as e:
            res["auto"] = {"ok": False, "error": str(e)}
        s.save()


def log_dry_rest(s: Shape, subset) -> None:
    """--dry-run: what the seed loop and the steps after it would do."""
    shape, args, work = s.shape, s.args, s.work
    log("   AutoModelForCausalLM.from_pretrained(hf, dtype) ; per pair: get_layer_embeddings(A), "
        "get_layer_embeddings(B), get_nll(A), get_nll(B)")
    log(f"== {shape}: parity (scripts/parity.py, bound {parity.bound(args.dtype):.3g} for {args.dtype}) of every "
        f"extract run; inf/NaN and max |value| over the cache"
        + (f"; float32 spread on {args.spread_pairs} pairs/category" if shape in args.spread_shapes
           and args.dtype == "float16" else "") + ("; r (seed formulas), analyze" if not subset else ""))
    if args.analyze_bin and not subset:
        log("$ " + " ".join([args.analyze_bin, "--cache", os.path.join(work, "cache0"), "--out",
                             os.path.join(work, "analyze")] + shlex.split(args.analyze_args)))


def step_seed_loop(s: Shape, subset, runs: list) -> dict:
    """The seed's loop on this card; each extract run's speed ratio against it."""
    import numpy as np
    args, res = s.args, s.res
    ref = seed_loop(s.hf_dir, s.dataset, args, args.dtype, pairs_per_category=subset)
    layers = ref["layers"]
    res["seed_loop"] = {"load_s": ref["load_s"], "loop_s": ref["loop_s"], "n_statements": ref["n_statements"],
                        "pairs_per_category": subset, "statements_per_s": ref["n_statements"] / ref["loop_s"],
                        "torch_max_allocated_mib": ref["torch_max_allocated_mib"], "nvidia_smi": ref["nvidia_smi"],
                        "layers": layers,
                        "all_finite": bool(np.isfinite(ref["nll"]).all()
                                           and all(np.isfinite(ref["emb"][l]).all() for l in layers)),
                        "max_abs_pooled": float(max(np.abs(ref["emb"][l]).max() for l in layers))}
    seed_rate = res["seed_loop"]["statements_per_s"]
    for r in runs:
        if "wall_s" in r:
            r["speed_ratio_wall"] = r["statements_per_s_wall"] / seed_rate
            if r.get("statements_per_s_reported"):
                r["speed_ratio_own"] = r["statements_per_s_reported"] / seed_rate
    s.save()
    return ref


def step_parity(s: Shape, ref: dict, runs: list, rows):
    """Parity and overflow of every extract run; (cache, nll, embeddings) of the first."""
    import numpy as np
    shape, args, res = s.shape, s.args, s.res
    layers = ref["layers"]
    log(f"== {shape}: parity (scripts/parity.py) and overflow")
    texts = [st.text for st in iter_statements(s.dataset)]
    main_cache = None
    for r in runs:
        if "wall_s" not in r:
            continue
        nll_x, tx, emb_x = read_cache(r["cache"], layers)
        if tx != texts:
            raise StepError(f"{r['cache']}/statements.parquet order differs from the dataset order")
        r["parity"] = parity_eval(emb_x, nll_x, ref["emb"], ref["nll"], layers, args.dtype, rows=rows)
        pref_x = nll_x[1::2] - nll_x[0::2]
        pref_x = pref_x if rows is None else pref_x[rows[0::2] // 2]
        r["parity"]["preference_max_abs"] = float(np.abs(pref_x - (ref["nll"][1::2] - ref["nll"][0::2])).max())
        r["overflow_scan"] = scan_cache(r["cache"])
        p = r["parity"]
        log(f"   [{r['config']}] embeddings {p['emb_error']:.3g} ({p['emb_fraction_of_bound']:.3f} of bound), "
            f"NLL {p['nll_error']:.3g} ({p['nll_fraction_of_bound']:.3f} of bound), pass: {p['pass']}; "
            f"cache max |pooled| {r['overflow_scan']['max_abs_pooled']:.4g}, all finite: "
            f"{r['overflow_scan']['all_finite']}")
        if main_cache is None:
            main_cache = (r["cache"], nll_x, emb_x)
    res["parity"] = runs[0]["parity"]
    res["overflow"] = {
        "hidden_probe_max_abs": res["build"]["hidden_probe"]["max_abs"],
        "hidden_probe_all_finite": res["build"]["hidden_probe"]["all_finite"],
        "cache_max_abs_pooled": runs[0]["overflow_scan"]["max_abs_pooled"],
        "cache_all_finite": all(r["overflow_scan"]["all_finite"] for r in runs if "overflow_scan" in r),
        "seed_loop_all_finite": res["seed_loop"]["all_finite"]}
    res["overflow"]["ok"] = bool(res["overflow"]["hidden_probe_all_finite"] and res["overflow"]["cache_all_finite"]
                                 and res["overflow"]["seed_loop_all_finite"])
    massive_verdict(s, layers, runs)
    s.save()
    return main_cache


def massive_verdict(s: Shape, layers: list, runs: list) -> None:
    """On the --massive shapes: did the planted values survive, without inf/NaN, within parity?"""
    args, res = s.args, s.res
    if "massive" in res:
        m = res["massive"]
        m.update({"cache_max_abs_pooled": res["overflow"]["cache_max_abs_pooled"],
                  "no_inf_nan": res["overflow"]["ok"], "extract_probe": runs[0].get("probe_line"),
                  "extract_probe_checked": bool(re.search(r"\bagree", runs[0].get("probe_line") or "")),
                  "parity_pass": res["parity"]["pass"],
                  "parity_layers_carrying_it": [l for l in layers
                                                if res["build"]["hidden_probe"]["max_abs_per_layer"][l]
                                                >= 0.75 * args.massive_value]})
        m["failed"] = [why for why, bad in (
            ("planted values did not reach the hidden states", not m["reached"]),
            ("inf or NaN", not m["no_inf_nan"]), ("parity", not m["parity_pass"]),
            ("extract's probe check did not run", not m["extract_probe_checked"]),
            ("no sampled layer carries the planted values", not m["parity_layers_carrying_it"])) if bad]
        m["ok"] = not m["failed"]


def step_spread(s: Shape, ref: dict, rows, main_cache) -> None:
    """float16 shapes: the same weights in float32 with transformers, against both float16 sides."""
    shape, args, res = s.shape, s.args, s.res
    layers = ref["layers"]
    if shape in args.spread_shapes and args.spread_pairs > 0 and args.dtype == "float16" and not over_budget(args):
        log(f"== {shape}: float32 reference on {args.spread_pairs} pairs per category (same weights)")
        try:
            f32 = seed_loop(s.hf_dir, s.dataset, args, "float32", pairs_per_category=args.spread_pairs)
            fr = f32["index"]
            _, nll_x, emb_x = main_cache
            if rows is None:
                sub16 = {l: ref["emb"][l][fr] for l in layers}
                nll16 = ref["nll"][fr]
            else:  # the float16 seed values hold only the subset: align by statement index
                pos = {int(s): i for i, s in enumerate(rows)}
                keep = [pos[int(s)] for s in fr]
                sub16, nll16 = {l: ref["emb"][l][keep] for l in layers}, ref["nll"][keep]
            res["fp32_spread"] = {
                "n_statements": len(fr),
                "transformers_fp16_vs_fp32": parity_eval(sub16, nll16, f32["emb"], f32["nll"], layers, "float16"),
                "extract_fp16_vs_fp32": parity_eval(emb_x, nll_x, f32["emb"], f32["nll"], layers, "float16",
                                                    rows=fr)}
        except Exception as e:  # noqa: BLE001 - the spread is context; never lose the run for it
            res["fp32_spread"] = {"error": f"{type(e).__name__}: {e}"}
        s.save()


def step_r(s: Shape, ref: dict, subset, main_cache) -> None:
    """r per layer with the seed's formulas on both sides, and analyze's r on the cache."""
    args, res = s.args, s.res
    layers = ref["layers"]
    if subset:
        res["r"] = {"note": f"seed loop on a subset ({subset} pairs per category): r not compared"}
    else:
        _, nll_x, emb_x = main_cache
        r_seed = seed_r(s.dataset, ref["emb"], ref["nll"], layers)
        r_x = seed_r(s.dataset, emb_x, nll_x, layers)
        res["r"] = {"layers": layers, "seed_loop": r_seed, "extract_cache_seed_formula": r_x,
                    "max_abs_delta_seed_formula": max(abs(r_seed[l] - r_x[l]) for l in layers)}
        if args.analyze_bin and os.path.isfile(args.analyze_bin) and not over_budget(args):
            aout = os.path.join(s.work, "analyze")
            try:
                run_cmd([args.analyze_bin, "--cache", os.path.dirname(main_cache[0]), "--out", aout]
                        + shlex.split(args.analyze_args), s.env, False, timeout=900)
                ra = analyze_r(os.path.join(aout, "results.json"), layers)
                res["r"]["analyze"] = ra
                if ra:
                    res["r"]["max_abs_delta_analyze_vs_seed_loop"] = max(abs(ra[l] - r_seed[l]) for l in ra)
                else:
                    res["r"]["analyze_note"] = "results.json read, but no per-layer r found in it"
            except (StepError, OSError, subprocess.TimeoutExpired) as e:
                res["r"]["analyze_error"] = str(e)
        else:
            res["r"]["analyze_note"] = "analyze binary not found or budget spent; r from the seed's formulas only"
