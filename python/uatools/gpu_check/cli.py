"""GPU check: extract (ONNX Runtime CUDA) against the seed's transformers loop, no download.

For each Pythia shape asked for (random weights at the real shape): build, export, read the
weights cold, extract (per --batching configuration), extract --device auto, the seed's loop on
the same card, parity (uatools.parity's rule), overflow, the float32 spread and r. The design,
the targets, the time estimates and how to carry ONNX Runtime's CUDA build to a GPU machine
without network: docs/gpu-check.md.

Needs torch, transformers, numpy, scipy, pyarrow and onnxscript (scripts/export's packages) in
the Python that runs it, an NVIDIA GPU for --device cuda, and the extract binary.

  scripts/gpu-check --dry-run                           # the plan, nothing run
  scripts/gpu-check --quick                             # 410m only
  scripts/gpu-check --device cpu --dtype float32 --shapes tiny   # plumbing self-test on CPU
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import shutil
import sys
import threading
import time

from uatools import REPO, parity
from uatools.gpu_check.env import find_bin, ort_env
from uatools.gpu_check.measure import extract_flags
from uatools.gpu_check.plan import EST_ESSENTIAL_S, EST_S, SHAPES, STARTUP_EST_S, estimates, shape_fits, shape_list
from uatools.gpu_check.report import watchdog, write_report
from uatools.gpu_check.runlog import CURRENT, elapsed, log
from uatools.gpu_check.steps import check_shape
from uatools.seed.dataset import load_dataset

DEFAULT_DATASET = os.path.join(REPO, "tests", "data", "seed-dataset.json")
DEFAULT_TOKENIZER = os.path.join(REPO, "tests", "data", "gpt-neox-20b-tokenizer.json")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="410m,1.4b,6.9b", help=f"comma list of {','.join(SHAPES)} (default 410m,1.4b,6.9b)")
    ap.add_argument("--quick", action="store_true", help="410m only")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    ap.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo")
    ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join(REPO, "out", "gpu-check"))
    ap.add_argument("--work", default=None, help="heavy files (default /tmp/gpu-check-work with $OUT, else OUT/work)")
    ap.add_argument("--dataset", default=DEFAULT_DATASET, help="seed dataset (default tests/data/seed-dataset.json)")
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER,
                    help="Pythia tokenizer.json (default tests/data/gpt-neox-20b-tokenizer.json)")
    ap.add_argument("--extract-bin", default=None, help="default: $EXTRACT_BIN, .dev/bin, target dirs")
    ap.add_argument("--analyze-bin", default=None, help="default: $ANALYZE_BIN, .dev/bin, target dirs")
    ap.add_argument("--analyze-args", default="--layer-step 4 --pooling mean_skip_first")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="extract --batch-size on the shapes outside --batching-shapes (default: extract's)")
    ap.add_argument("--batching", default="--batch-size 32|--max-tokens 8192",
                    help="extract argument sets compared on --batching-shapes, '|'-separated; the first is the "
                         "run that parity, memory and the session time are reported for "
                         "(default '--batch-size 32|--max-tokens 8192')")
    ap.add_argument("--batching-shapes", default="410m,tiny",
                    help="shapes extracted once per --batching set (default 410m,tiny; 'none' for none)")
    ap.add_argument("--massive", default="1.4b,tiny",
                    help="shapes that carry planted massive activations (default 1.4b,tiny; 'none' for none)")
    ap.add_argument("--massive-value", type=float, default=2600.0, help="planted value V: dims get +V, -0.8 V")
    ap.add_argument("--massive-layer", type=int, default=1, help="layer whose MLP output bias is planted (default 1)")
    ap.add_argument("--layer-step", type=int, default=4, help="the seed's layer_step (default 4)")
    ap.add_argument("--seed-subset", default="6.9b,12b",
                    help="shapes where the seed loop runs on --seed-subset-pairs pairs per category only "
                         "(default 6.9b,12b)")
    ap.add_argument("--seed-subset-pairs", type=int, default=8)
    ap.add_argument("--spread-shapes", default="410m,1.4b",
                    help="float16 shapes that also get the float32 spread (default 410m,1.4b)")
    ap.add_argument("--spread-pairs", type=int, default=8, help="pairs per category for the fp32 spread (0: skip)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--ort-site", default="/tmp/site",
                    help="unpacked onnxruntime-gpu wheel or folder holding .ort/ (default /tmp/site)")
    ap.add_argument("--ort-stage", default="/tmp/stage",
                    help="folder(s), ':'-separated, of the parts of a split .tar.xz (names ending part.NN, joined "
                         "in name order) to unpack into --ort-site when that holds no library (default /tmp/stage)")
    ap.add_argument("--export-verify", action="store_true", help="let scripts/export run its own ORT check too")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="start a shape only if time spent + the estimate of its steps through extract fits; "
                         "skip optional steps once spent")
    ap.add_argument("--deadline-s", type=float, default=None,
                    help="at this many seconds write the report (the step in progress marked cut off) and exit 124")
    ap.add_argument("--keep", action="store_true", help="keep checkpoints, ONNX and caches under --work")
    ap.add_argument("--dry-run", action="store_true", help="print every step, run nothing")
    return ap


def parse_args(argv=None):
    """(args, shapes): the flags, checked, with the shape lists split."""
    ap = parser()
    args = ap.parse_args(argv)
    shapes = ["410m"] if args.quick else shape_list(args.shapes)
    args.massive_shapes = shape_list(args.massive)
    args.batching_shapes = shape_list(args.batching_shapes)
    args.seed_subset_shapes = shape_list(args.seed_subset)
    args.spread_shapes = shape_list(args.spread_shapes)
    args.batching = [c.strip() for c in args.batching.split("|") if c.strip()]
    for s in shapes + args.massive_shapes + args.batching_shapes + args.seed_subset_shapes + args.spread_shapes:
        if s not in SHAPES:
            ap.error(f"unknown shape {s!r} (known: {', '.join(SHAPES)})")
    if args.dtype == "float16" and args.device == "cpu":
        ap.error("float16 needs --device cuda (scripts/export's rule)")
    args.work = args.work or ("/tmp/gpu-check-work" if os.environ.get("OUT") else os.path.join(args.out, "work"))
    args.extract_bin = find_bin("extract", args.extract_bin)
    args.analyze_bin = find_bin("analyze", args.analyze_bin)
    return args, shapes


def preflight(args, shapes) -> int | None:
    """Logs the plan and checks the inputs; 2 when one is missing (outside --dry-run)."""
    log(f"shapes {shapes}, {args.dtype} on {args.device}; out {args.out}; work {args.work}")
    log(f"dataset {args.dataset}; tokenizer {args.tokenizer}; extract {args.extract_bin}; analyze {args.analyze_bin}")
    log(f"parity: scripts/parity.py, bound {parity.bound(args.dtype):.3g} ({args.dtype}); massive activations on "
        f"{args.massive_shapes or 'no shape'}; batching {args.batching} on {args.batching_shapes or 'no shape'}")
    budget = f"; budget {args.budget_s:.0f} s" if args.budget_s else ""
    log(f"estimates (one H100): start-up ~{STARTUP_EST_S} s; {'; '.join(estimates(shapes))}{budget}")
    problems = [f"{w} not found: {p}" for w, p in (("dataset", args.dataset), ("tokenizer", args.tokenizer),
                                                      ("extract binary", args.extract_bin)) if not os.path.isfile(p)]
    if problems and not args.dry_run:
        for p in problems:
            log("error: " + p)
        return 2
    for p in problems:
        log("(dry run) would fail: " + p)
    args.extract_flag_set, help_err = (extract_flags(args.extract_bin) if os.path.isfile(args.extract_bin)
                                       else (set(), "no binary"))
    if help_err:
        log(f"extract --help could not run ({help_err}): batching configurations are not checked against it")
    for c in args.batching:
        missing = [a for a in shlex.split(c) if a.startswith("--") and a not in args.extract_flag_set]
        if missing and args.extract_flag_set:
            log(f"note: extract --help lists no {', '.join(missing)}: the '{c}' run will be skipped")

    return None


def versions_and_device(args):
    """({torch, transformers, python} versions, device name), or an exit status 2 for a GPU-less --device cuda."""
    versions, device_name = {}, args.device
    try:
        import torch
        import transformers
        versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                    "python": platform.python_version()}
        if args.device == "cuda" and torch.cuda.is_available():
            device_name = torch.cuda.get_device_name(0)
        elif args.device == "cuda" and not args.dry_run:
            log("error: --device cuda but torch sees no GPU")
            return None, 2
    except ImportError:
        pass
    return versions, device_name


def new_report(args, env, versions, device_name) -> dict:
    return {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "device_name": device_name,
            "host": platform.node(), "dtype": args.dtype, "device": args.device, "versions": versions,
            "extract_bin": args.extract_bin, "env": {k: env.get(k) for k in ("ORT_DYLIB_PATH", "PYTHONPATH")},
            "command": " ".join(shlex.quote(a) for a in ["scripts/gpu-check"] + sys.argv[1:]),
            "parity_rule": parity.rule(), "massive_shapes": args.massive_shapes, "batching": args.batching,
            "batching_shapes": args.batching_shapes, "budget_s": args.budget_s, "deadline_s": args.deadline_s,
            "estimates_s": EST_S, "estimates_through_extract_s": EST_ESSENTIAL_S,
            "shapes": []}


def saver(report: dict, res: dict, t0: float, out: str, dry: bool):
    """The `save` a shape's steps call: its time so far, and the report rewritten."""
    def save():
        res["total_s"] = time.perf_counter() - t0
        if not dry:
            write_report(report, out)
    return save


def run_shape(i: int, shape: str, args, env, dataset, report) -> bool:
    """One shape, its errors recorded in its result; True when it failed."""
    dry = args.dry_run
    res = {"shape": shape}
    report["shapes"].append(res)
    CURRENT["res"] = res
    save = saver(report, res, time.perf_counter(), args.out, dry)
    failed = False
    try:
        check_shape(shape, args, env, dataset, res, first=(i == 0), save=save)
        if not dry:
            ox = res.get("extract") or {}
            report.setdefault("onnxruntime_version", ox.get("onnxruntime_version"))
    except Exception as e:  # noqa: BLE001 - any error ends this shape, recorded in the report; the next one runs
        log(f"error in {shape}: {type(e).__name__}: {e}")
        res["error"] = f"{type(e).__name__}: {e}"
        failed = True
        if not args.keep and not dry:  # free the disk for the next shape (6.9b: ~28 GB)
            shutil.rmtree(os.path.join(args.work, shape), ignore_errors=True)
    save()
    if not dry:
        log(f"== {shape}: done in {res['total_s']:.0f} s (estimate {EST_S[shape]} s)")
    return failed


def skip_for_budget(shape: str, args, report) -> None:
    log(f"budget: {elapsed():.0f} s spent + ~{EST_ESSENTIAL_S[shape]} s for {shape}'s essential steps > "
        f"{args.budget_s:.0f} s: skipping it")
    report["shapes"].append({"shape": shape, "error": f"skipped: budget ({elapsed():.0f} s spent, "
                                                      f"~{EST_ESSENTIAL_S[shape]} s estimated for build, "
                                                      f"export, read and extract; {args.budget_s:.0f} s)"})
    write_report(report, args.out)


def main(argv=None) -> int:
    args, shapes = parse_args(argv)
    dry = args.dry_run
    status = preflight(args, shapes)
    if status is not None:
        return status
    env = ort_env(args, dry)
    dataset = load_dataset(args.dataset) if os.path.isfile(args.dataset) else {}
    versions, device_name = versions_and_device(args)
    if versions is None:
        return device_name
    report = new_report(args, env, versions, device_name)
    failed = False
    CURRENT.update(report=report, out=args.out)
    if args.deadline_s and not dry:
        threading.Thread(target=watchdog, args=(args.deadline_s,), daemon=True).start()
    for i, shape in enumerate(shapes):
        if not dry and not shape_fits(shape, elapsed(), args.budget_s):
            skip_for_budget(shape, args, report)
            continue
        failed = run_shape(i, shape, args, env, dataset, report) or failed
    if dry:
        log("dry run: nothing was run")
        return 0
    md = write_report(report, args.out)
    print(md)
    log(f"report: {os.path.join(args.out, 'report.json')}, report.md, log.txt")
    write_report(report, args.out)
    bad = failed or any(not r.get("parity", {}).get("pass", False) or not r.get("overflow", {}).get("ok", False)
                        or not r.get("massive", {}).get("ok", True)
                        for r in report["shapes"] if "error" not in r)
    return 1 if bad else 0
