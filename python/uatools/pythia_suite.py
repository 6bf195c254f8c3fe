"""The real study in one command: export, extract, analyze, on this machine or as a Slurm job array.

For every model (default the seed's four: EleutherAI/pythia-410m, -1.4b, -6.9b, -12b) and
every revision (default the Hub's main; e.g. --revisions step143000,step71000 for training
checkpoints), the plan (OUT/plan.json, printed) lists one task per (model, revision), models
outer, revisions inner; task i:

  export    scripts/export --model ID [--revision REV] --out EXPORT_ROOT/NAME
                           --dtype float16 --device cuda --graph-cache OUT/graphs
                           (skipped: --skip-export, or export.json present; the graph cache makes
                           every revision after a model's first write its weights, not trace)
  check     the weights' sha256 (export.json's source.weights) against every other revision of
            the model exported so far: identical weights stop the task before extract
            (EleutherAI/pythia issues 205, 206: some step branches serve another revision's
            weights); --allow-duplicate-weights extracts anyway
  extract   extract --model EXPORT_ROOT/NAME --dataset DATASET --out CACHE_ROOT --name NAME
                    --device cuda [--batch-size N] [--extract-args ...]
then, once, over every complete cache of the plan:
  analyze   analyze --cache CACHE_ROOT --models NAMES --out OUT/analysis [--layer-step N] ...

NAME is the model id's last part, plus -REV with a revision (pythia-410m-step143000).
A task whose cache is complete exits at once; an interrupted one resumes (extract resumes by
itself; its lock keeps one writer per cache). --free-disk deletes a model's ONNX dir once
its cache is complete (the 12B model is ~24 GB in float16).

--scheduler local (default): the tasks in order on this machine (scripts/setup, cargo build
  if a binary is missing), then analyze; a failed step stops the run.
--scheduler slurm: writes OUT/slurm/extract-array.sbatch and OUT/slurm/analyze.sbatch, then
  submits ONE array job (sbatch --array=0-(K-1)[%N] --requeue; task i runs
  `pythia-suite task OUT/plan.json $SLURM_ARRAY_TASK_ID`) and ONE analyze job with
  --dependency=afterany:<array job> (`pythia-suite collect OUT/plan.json`): it analyzes the
  caches that are complete and lists the missing ones in OUT/missing.txt (at least 2
  complete caches needed, else it says so and fails). The analyze job asks for no GPU and
  has its own --analyze-partition, --analyze-time (default 01:00:00), --analyze-cpus-per-task
  and --analyze-mem. Logs: OUT/slurm/logs/. The repository,
  OUT, the cache and export roots and the graph cache must be on a file system the compute nodes share.

  scripts/pythia-suite --dry-run                    # print every command, run nothing
  scripts/pythia-suite --out runs/pythia            # the study, here
  scripts/pythia-suite --scheduler slurm --out /shared/runs/pythia --partition gpu \
      --gpus-per-task 1 --time 04:00:00 --array-throttle 4 \
      --revisions step143000,step71000 --dry-run    # the sbatch commands and batch scripts

The per-task contract, for other engines (Kubernetes Indexed Jobs, Ray):
  scripts/pythia-suite task PLAN INDEX              # one plan entry: export + extract; idempotent
  scripts/pythia-suite collect PLAN                 # analyze the complete caches, list the missing
  scripts/pythia-suite --plan-only --out DIR ...    # write DIR/plan.json only
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

from uatools import REPO
from uatools.binaries import find_bin, ort_env, torch_nvidia_lib_dirs
from uatools.pythia import STUDY_SIZES

DEFAULT_MODELS = [f"EleutherAI/pythia-{size}" for size in STUDY_SIZES]


def say(msg: str) -> None:
    print(f"[pythia-suite {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def q(cmd) -> str:
    return " ".join(shlex.quote(str(c)) for c in cmd)


def run(cmd, args, env=None) -> None:
    say("$ " + q(cmd))
    if args.dry_run:
        return
    r = subprocess.run([str(c) for c in cmd], check=False, env=env)
    if r.returncode != 0:
        raise SystemExit(f"pythia-suite: step failed (exit {r.returncode}): {q(cmd)}")


def cache_complete(path: str) -> bool:
    try:
        with open(os.path.join(path, "manifest.json")) as f:
            return json.load(f).get("complete") is True
    except (OSError, ValueError):
        return False


def cuda_env(device: str) -> dict:
    """Children see the CUDA 13 / cuDNN 9 libraries that pip's torch carries (for the CUDA EP)."""
    env = dict(os.environ)
    if device != "cuda":
        return env
    found = torch_nvidia_lib_dirs()
    if found is None:
        say("torch not importable: LD_LIBRARY_PATH left as is")
        return env
    nv, libs = found
    if libs:
        env["LD_LIBRARY_PATH"] = ":".join(libs + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
        say(f"LD_LIBRARY_PATH += {len(libs)} dirs of torch's nvidia libraries ({nv})")
    return env



# This command's launcher: what the batch scripts and --plan-only run.
SELF = os.path.join(REPO, "scripts", "pythia-suite")
PLAN_FORMAT = "ua-pythia-suite-plan/1"


SIZE_TOKEN = re.compile(r"[0-9]+(\.[0-9]+)?[mMbB]")


def series_and_size(model_id: str):
    """(series, size) where exactly one '-' token of the id's last part is a size:
    EleutherAI/pythia-410m -> (pythia, 410m); else None. The rule of
    schemas::checkpoint::series_and_size, which extract applies by default."""
    tokens = model_id.rstrip("/").split("/")[-1].split("-")
    at = [i for i, t in enumerate(tokens) if SIZE_TOKEN.fullmatch(t)]
    series = [t for i, t in enumerate(tokens) if t and at and i != at[0]]
    if len(at) != 1 or not series:
        return None
    return "-".join(series), tokens[at[0]].lower()


def model_name(model_id: str, revision) -> str:
    base = model_id.rstrip("/").split("/")[-1]
    return f"{base}-{revision}" if revision else base


def cache_state(path: str) -> str:
    """complete, partial (an interrupted or running extract left chunks) or absent."""
    if cache_complete(path):
        return "complete"
    return "partial" if os.path.isdir(path) else "absent"


# ---------------------------------------------------------------- the plan

def build_plan(args, extract: str, analyze: str) -> dict:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    revisions = [r.strip() for r in args.revisions.split(",") if r.strip()] or [None]
    out = os.path.abspath(args.out)
    cache_root = os.path.abspath(args.cache_root or os.path.join(out, "cache"))
    export_root = os.path.abspath(args.export_root or os.path.join(out, "models"))
    graph_cache = os.path.abspath(args.graph_cache or os.path.join(out, "graphs"))
    extract_args = shlex.split(args.extract_args or "")
    if "--device" not in extract_args:
        extract_args = ["--device", args.device] + extract_args
    if args.batch_size and "--batch-size" not in extract_args:
        extract_args += ["--batch-size", str(args.batch_size)]
    for flag in ("--model", "--dataset", "--out", "--name", "--series", "--size", "--revision"):
        if flag in extract_args:
            raise SystemExit(f"pythia-suite: --extract-args must not hold {flag} (the plan sets it per task)")
    analyze_args = []
    for flag, val in (("--layer-step", args.layer_step), ("--pooling", args.pooling), ("--bootstrap", args.bootstrap)):
        if val is not None:
            analyze_args += [flag, str(val)]
    analyze_args += shlex.split(args.analyze_args or "")
    tasks, seen = [], {}
    for model in models:
        size = model.rstrip("/").split("/")[-1]
        for rev in revisions:
            name = model_name(model, rev)
            if name in seen:
                raise SystemExit(f"pythia-suite: {model} {rev or ''} and {seen[name]} share the cache name {name}")
            seen[name] = f"{model} {rev or ''}".strip()
            if args.model_dir_template:
                export_dir = args.model_dir_template.format(name=name, size=size, model=model,
                                                            revision=rev or "main", root=export_root)
            else:
                export_dir = os.path.join(export_root, name)
            tasks.append({"index": len(tasks), "model": model, "size": size, "revision": rev, "name": name,
                          "grid": grid_place(model, rev),
                          "export_dir": os.path.abspath(export_dir), "cache_dir": os.path.join(cache_root, name)})
    return {
        "format": PLAN_FORMAT,
        "out": out,
        "dataset": os.path.abspath(args.dataset),
        "cache_root": cache_root,
        "export_root": export_root,
        "analysis_dir": os.path.join(out, "analysis"),
        "skip_export": bool(args.skip_export),
        "free_disk": bool(args.free_disk),
        "export_args": ["--dtype", args.dtype, "--device", args.device, "--exporter", args.exporter]
        # One graph cache for every task, on the file system they share: a model's revisions
        # (and the array tasks that export them) trace its architecture once.
        + (["--graph-cache", graph_cache] if args.exporter == "dynamo" else []),
        "extract": extract,
        "analyze": analyze,
        "extract_args": extract_args,
        "analyze_args": analyze_args,
        "device": args.device,
        "python": sys.executable,
        # Only when given, so that a plan without it stays as it was.
        **({"allow_duplicate_weights": True} if getattr(args, "allow_duplicate_weights", False) else {}),
        "tasks": tasks,
    }


STEP = re.compile(r"step([0-9]+)(?:-.*)?", re.DOTALL)


def step_of(revision: str):
    """The training step a revision names: step<N> or step<N>-... (a u64, as in
    schemas::checkpoint::step_of); else None."""
    m = STEP.fullmatch(revision)
    step = int(m.group(1)) if m else None
    return step if step is not None and step < 2**64 else None


def grid_place(model: str, rev) -> dict:
    """The manifest keys extract records for this task (model.series, .size, .revision, .step)."""
    place = series_and_size(model)
    return {"series": place[0] if place else None, "size": place[1] if place else None,
            "revision": rev, "step": step_of(rev or "")}


def grid_flags(t: dict) -> list:
    """extract flags that set the grid keys explicitly, so a model dir exported before
    (--model-dir-template, --skip-export) without a recorded revision still gets them."""
    g = t.get("grid") or {}
    flags = []
    for key in ("series", "size", "revision"):
        if g.get(key):
            flags += [f"--{key}", g[key]]
    return flags


def print_layout(plan: dict) -> None:
    """The cache layout: one folder per size x revision, grouped as analyze groups them."""
    say(f"cache layout under {plan['cache_root']} (series / size / step -> folder):")
    for t in plan["tasks"]:
        g = t.get("grid") or {}
        step = "no step" if g.get("step") is None else f"step {g['step']}"
        print(f"  {g.get('series') or '?'} / {g.get('size') or '?'} / {step:<12} -> {t['name']}/", flush=True)


def print_plan(plan: dict) -> None:
    say(f"plan: {len(plan['tasks'])} task(s); caches -> {plan['cache_root']}, exports -> {plan['export_root']}")
    w = max(len(t["name"]) for t in plan["tasks"])
    for t in plan["tasks"]:
        print(f"  task {t['index']:>3}  {t['name']:<{w}}  {t['model']} @ {t['revision'] or 'main'}  "
              f"model dir {t['export_dir']}", flush=True)


def write_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def load_plan(path: str) -> dict:
    try:
        with open(path) as f:
            plan = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"pythia-suite: cannot read the plan {path}: {e}")
    if plan.get("format") != PLAN_FORMAT:
        raise SystemExit(f"pythia-suite: {path} is not a {PLAN_FORMAT} plan")
    return plan


# ---------------------------------------------------------------- duplicate weights

DUPLICATE_ISSUE = "EleutherAI/pythia issue 205/206: some step branches serve another revision's weights"


def weights_record_path(plan: dict, t: dict) -> str:
    """Where --free-disk keeps a task's export.json "source" once it deletes the model dir."""
    return os.path.join(plan["out"], "weights", f"{t['name']}.json")


def recorded_weights(plan: dict, t: dict) -> dict:
    """{weight file: sha256} that a task's export.json records (source.weights), or the copy
    --free-disk kept; {} when neither exists or the export predates the record."""
    for path in (os.path.join(t["export_dir"], "export.json"), weights_record_path(plan, t)):
        try:
            with open(path) as f:
                weights = (json.load(f).get("source") or {}).get("weights")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(weights, dict) and weights:
            return {name: e.get("sha256") if isinstance(e, dict) else e for name, e in weights.items()}
    return {}


def duplicate_weights(plan: dict, t: dict):
    """(other task, weight file, sha256) for the first other revision of t's model exported so far
    that shares a weight file's sha256 with t; None when there is none."""
    mine = {sha: name for name, sha in recorded_weights(plan, t).items() if sha}
    for other in plan["tasks"]:
        if other["index"] == t["index"] or other["model"] != t["model"]:
            continue
        for sha in recorded_weights(plan, other).values():
            if sha in mine:
                return other, mine[sha], sha
    return None


def check_weights(plan: dict, t: dict, tag: str, allow_duplicates: bool = False) -> None:
    """Stop (SystemExit, one line) when t's weights are another revision's of the same model."""
    if not recorded_weights(plan, t):
        say(f"{tag}: export.json records no weight hashes (exported before they were): duplicate check skipped")
        return
    dup = duplicate_weights(plan, t)
    if dup is None:
        return
    other, name, sha = dup
    msg = (f"{tag}: {t['model']} {t['revision'] or 'main'} has the same weights as {other['revision'] or 'main'} "
           f"(task {other['index']}, {other['name']}): {name} sha256 {sha}; {DUPLICATE_ISSUE}")
    if allow_duplicates or plan.get("allow_duplicate_weights"):
        say(f"{msg}; extracting anyway (--allow-duplicate-weights)")
        return
    raise SystemExit(f"pythia-suite: {msg}. Not extracted; --allow-duplicate-weights extracts anyway")


def keep_weights_record(plan: dict, t: dict) -> None:
    """Before --free-disk deletes a model dir: its export.json "source", for later duplicate checks."""
    try:
        with open(os.path.join(t["export_dir"], "export.json")) as f:
            source = json.load(f).get("source")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(source, dict) and source.get("weights"):
        write_json(weights_record_path(plan, t), {"name": t["name"], "source": source})


# ---------------------------------------------------------------- one task (any engine)

def run_task(plan: dict, index: int, dry_run: bool = False, allow_duplicates: bool = False) -> None:
    """Export (unless skipped or present), check the weights against the other revisions', and
    extract one plan entry. Safe to rerun."""
    tasks = plan["tasks"]
    if not 0 <= index < len(tasks):
        raise SystemExit(f"pythia-suite: task index {index} is outside the plan's 0..{len(tasks) - 1}")
    t = tasks[index]
    ns = argparse.Namespace(dry_run=dry_run)
    tag = f"task {index} ({t['name']})"
    if cache_complete(t["cache_dir"]):
        say(f"{tag}: cache complete ({t['cache_dir']}), nothing to do")
        return
    env = ort_env(cuda_env(plan["device"]) if not dry_run else dict(os.environ))
    if os.path.isfile(os.path.join(t["export_dir"], "export.json")):
        say(f"{tag}: export present ({t['export_dir']}/export.json), skipping export")
    elif plan["skip_export"]:
        if not dry_run:
            raise SystemExit(f"pythia-suite: {tag}: --skip-export, but {t['export_dir']} holds no export.json")
        say(f"{tag}: --skip-export: expects {t['export_dir']}/export.json")
    else:
        cmd = [plan["python"], os.path.join(REPO, "scripts", "export"), "--model", t["model"]]
        if t["revision"]:
            cmd += ["--revision", t["revision"]]
        run(cmd + ["--out", t["export_dir"]] + plan["export_args"], ns, env)
    if not dry_run:
        check_weights(plan, t, tag, allow_duplicates)
    cmd = [plan["extract"], "--model", t["export_dir"], "--dataset", plan["dataset"], "--out", plan["cache_root"],
           "--name", t["name"]] + grid_flags(t) + plan["extract_args"]
    run(cmd, ns, env)
    if plan["free_disk"] and not dry_run and cache_complete(t["cache_dir"]):
        say(f"{tag}: cache complete, deleting {t['export_dir']} (--free-disk)")
        keep_weights_record(plan, t)
        shutil.rmtree(t["export_dir"])


# ---------------------------------------------------------------- analyze what is complete

def collect(plan: dict, require_all: bool = False, dry_run: bool = False) -> int:
    complete, missing = [], []
    for t in plan["tasks"]:
        state = cache_state(t["cache_dir"])
        (complete if state == "complete" else missing).append((t, state))
    out = plan["out"]
    lines = [f"task {t['index']} {t['name']}: {state} ({t['cache_dir']})" for t, state in missing]
    say(f"{len(complete)} of {len(plan['tasks'])} cache(s) complete; missing: {len(missing)}")
    # A dry run before any task has run would list every plan entry (120 for 4 sizes x 30 steps).
    shown = lines[:5] if dry_run else lines
    for line in shown:
        print("  missing " + line, flush=True)
    if len(shown) < len(lines):
        print(f"  ... and {len(lines) - len(shown)} more", flush=True)
    status = {"complete": [t["name"] for t, _ in complete],
              "missing": [{"index": t["index"], "name": t["name"], "state": s} for t, s in missing],
              "analysis": None}
    if not dry_run:
        with open(os.path.join(out, "missing.txt"), "w") as f:
            f.write("".join(line + "\n" for line in lines) if lines else "none\n")
    if require_all and missing and not dry_run:
        raise SystemExit(f"pythia-suite: {len(missing)} task(s) did not complete: {', '.join(t['name'] for t, _ in missing)}")
    if len(complete) < 2 and not dry_run:
        write_json(os.path.join(out, "status.json"), status)
        print(f"pythia-suite: analyze needs at least 2 complete caches, the plan has {len(complete)} "
              f"({', '.join(t['name'] for t, _ in complete) or 'none'}); nothing analyzed. "
              f"Rerun the missing tasks, then `scripts/pythia-suite collect {out}/plan.json`.",
              file=sys.stderr, flush=True)
        return 1
    names = [t["name"] for t, _ in complete] if not dry_run else [t["name"] for t in plan["tasks"]]
    cmd = [plan["analyze"], "--cache", plan["cache_root"], "--models", ",".join(names),
           "--out", plan["analysis_dir"]] + plan["analyze_args"]
    run(cmd, argparse.Namespace(dry_run=dry_run), ort_env(dict(os.environ)))
    if not dry_run:
        status["analysis"] = plan["analysis_dir"]
        write_json(os.path.join(out, "status.json"), status)
        say(f"done: {plan['analysis_dir']}/results.json ({len(complete)} model(s)); missing list: {out}/missing.txt")
    return 0


# ---------------------------------------------------------------- Slurm

def sbatch_script(lines_sbatch, body) -> str:
    return "#!/bin/bash\n" + "".join(f"#SBATCH {l}\n" for l in lines_sbatch) + "set -euo pipefail\n" + body


def resources(partition, gpus, cpus, mem, time_limit) -> str:
    return (f"partition {partition or '(the default)'}, {f'{gpus} GPU(s)' if gpus else 'no GPU'}, {cpus} CPU(s), "
            f"memory {mem or '(the default)'}, time limit {time_limit or '(the partition default)'}")


def slurm_paths(plan: dict):
    """(run folder, batch-script folder, log folder, task count, plan path) of a plan."""
    out = plan["out"]
    sdir = os.path.join(out, "slurm")
    return out, sdir, os.path.join(sdir, "logs"), len(plan["tasks"]), os.path.join(out, "plan.json")


def slurm_scripts(plan: dict, args) -> dict:
    """{path: text} of the two batch scripts: the extract array and the analyze job."""
    _, sdir, logs, k, plan_path = slurm_paths(plan)
    me = SELF
    array = f"0-{k - 1}" + (f"%{args.array_throttle}" if args.array_throttle else "")
    account = [f"--account={args.account}"] if args.account else []
    task_opts = [f"--job-name={args.job_name}-extract", f"--array={array}", "--requeue", "--ntasks=1",
                 f"--cpus-per-task={args.cpus_per_task}", "--open-mode=append",
                 f"--output={logs}/task-%a.log"] + account
    if args.partition:
        task_opts.append(f"--partition={args.partition}")
    if args.time:
        task_opts.append(f"--time={args.time}")
    if args.gpus_per_task:
        task_opts.append(f"--gpus-per-task={args.gpus_per_task}")
    if args.mem:
        task_opts.append(f"--mem={args.mem}")
    # analyze reads caches on CPUs: a GPU partition's wait and the tasks' long limit would
    # only delay it (and waste a GPU allocation).
    an_partition = args.analyze_partition or args.partition
    an_opts = [f"--job-name={args.job_name}-analyze", "--ntasks=1", f"--cpus-per-task={args.analyze_cpus_per_task}",
               f"--time={args.analyze_time}", f"--output={logs}/analyze.log"] + account
    if an_partition:
        an_opts.append(f"--partition={an_partition}")
    if args.analyze_mem:
        an_opts.append(f"--mem={args.analyze_mem}")
    env_lines = ""
    if os.environ.get("ORT_DYLIB_PATH"):
        env_lines = f"export ORT_DYLIB_PATH={shlex.quote(os.environ['ORT_DYLIB_PATH'])}\n"
    task_body = (env_lines
                 + 'echo "[$(date +%T)] task ${SLURM_ARRAY_TASK_ID} of job ${SLURM_ARRAY_JOB_ID} on $(hostname)'
                 + ' (restart ${SLURM_RESTART_COUNT:-0})"\n'
                 + f"exec {shlex.quote(plan['python'])} {shlex.quote(me)} task {shlex.quote(plan_path)} "
                 + '"${SLURM_ARRAY_TASK_ID:?not a Slurm array task}"\n')
    an_body = env_lines + f"exec {shlex.quote(plan['python'])} {shlex.quote(me)} collect {shlex.quote(plan_path)}\n"
    return {os.path.join(sdir, "extract-array.sbatch"): sbatch_script(task_opts, task_body),
               os.path.join(sdir, "analyze.sbatch"): sbatch_script(an_opts, an_body)}


def slurm_submit(plan: dict, args) -> int:
    out, sdir, logs, k, plan_path = slurm_paths(plan)
    array = f"0-{k - 1}" + (f"%{args.array_throttle}" if args.array_throttle else "")
    an_partition = args.analyze_partition or args.partition
    scripts = slurm_scripts(plan, args)
    sub_array = ["sbatch", "--parsable", os.path.join(sdir, "extract-array.sbatch")]
    sub_an = ["sbatch", "--parsable", "--dependency=afterany:ARRAY_JOB_ID", os.path.join(sdir, "analyze.sbatch")]
    say(f"resources: {k} array task(s), each " + resources(args.partition, args.gpus_per_task, args.cpus_per_task,
                                                              args.mem, args.time)
        + (f", at most {args.array_throttle} at once" if args.array_throttle else ""))
    say("resources: analyze job (after every task ends) " + resources(an_partition, None, args.analyze_cpus_per_task,
                                                                         args.analyze_mem, args.analyze_time))
    if args.dry_run:
        say(f"each task i runs `pythia-suite task {plan_path} i`; task 0 would run:")
        run_task(plan, 0, dry_run=True)
        say(f"the analyze job runs `pythia-suite collect {plan_path}`:")
        collect(plan, dry_run=True)
        for path, text in scripts.items():
            print(f"\n--- {path} (would be written) ---\n{text}--- end ---", flush=True)
        say("$ " + q(sub_array) + "          # prints ARRAY_JOB_ID")
        say("$ " + q(sub_an))
        say("dry run: nothing written, nothing submitted")
        return 0
    if shutil.which("sbatch") is None:
        raise SystemExit("pythia-suite: sbatch not found (--scheduler slurm needs Slurm's client commands)")
    os.makedirs(logs, exist_ok=True)
    for path, text in scripts.items():
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755)
    r = subprocess.run(sub_array, check=False, capture_output=True, text=True)
    say("$ " + q(sub_array))
    if r.returncode != 0:
        raise SystemExit(f"pythia-suite: sbatch failed (exit {r.returncode}): {r.stderr.strip()}")
    array_id = r.stdout.strip().split(";")[0]
    say(f"array job {array_id}: {k} task(s) ({array})")
    sub_an[2] = f"--dependency=afterany:{array_id}"
    say("$ " + q(sub_an))
    r = subprocess.run(sub_an, check=False, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"pythia-suite: sbatch of the analyze job failed (exit {r.returncode}): {r.stderr.strip()}; "
                         f"the array job {array_id} is submitted")
    analyze_id = r.stdout.strip().split(";")[0]
    say(f"analyze job {analyze_id}: after every task of {array_id} ends; results in {plan['analysis_dir']}, "
        f"missing list in {out}/missing.txt, logs in {logs}")
    write_json(os.path.join(sdir, "jobs.json"), {"array_job": array_id, "analyze_job": analyze_id, "tasks": k})
    print(f"ARRAY_JOB_ID={array_id}\nANALYZE_JOB_ID={analyze_id}", flush=True)
    return 0


# ---------------------------------------------------------------- command line

def sub_main(argv) -> int:
    ap = argparse.ArgumentParser(prog="pythia-suite " + argv[0])
    ap.add_argument("plan")
    if argv[0] == "task":
        ap.add_argument("index", nargs="?", default=None,
                        help="plan entry (default: $SLURM_ARRAY_TASK_ID, else $JOB_COMPLETION_INDEX)")
        ap.add_argument("--allow-duplicate-weights", action="store_true",
                        help="extract even when the weights equal another revision's (default: the plan's)")
    else:
        ap.add_argument("--require-all", action="store_true", help="fail if any task's cache is not complete")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv[1:])
    plan = load_plan(a.plan)
    if argv[0] == "task":
        idx = a.index if a.index is not None else (os.environ.get("SLURM_ARRAY_TASK_ID")
                                                    or os.environ.get("JOB_COMPLETION_INDEX"))
        if idx is None or not str(idx).isdigit():
            raise SystemExit("pythia-suite task: give INDEX, or set SLURM_ARRAY_TASK_ID / JOB_COMPLETION_INDEX")
        run_task(plan, int(idx), a.dry_run, a.allow_duplicate_weights)
        return 0
    return collect(plan, a.require_all, a.dry_run)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("task", "collect"):
        return sub_main(argv)
    args = parse_args(argv)
    preflight(args)
    return run_suite(args)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scheduler", choices=["local", "slurm"], default="local",
                    help="local: run the tasks here in order (default); slurm: submit an array job + analyze job")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma list of Hub ids or local dirs")
    ap.add_argument("--revisions", default="", help="comma list of revisions per model (e.g. step143000); "
                    "default: the Hub's main")
    ap.add_argument("--out", default=os.path.join(REPO, "out", "pythia-suite"),
                    help="run folder: plan.json, analysis/, missing.txt, slurm/ (default out/pythia-suite)")
    ap.add_argument("--cache-root", default=None, help="shared cache root (default OUT/cache)")
    ap.add_argument("--export-root", default=None, help="ONNX exports, one folder per task (default OUT/models)")
    ap.add_argument("--model-dir-template", default=None,
                    help="model dir per task instead of EXPORT_ROOT/NAME, with {name} {size} {model} {revision} "
                    "{root}: e.g. '/data/onnx/{size}/{revision}' (with --skip-export: dirs exported before)")
    ap.add_argument("--graph-cache", default=None,
                    help="scripts/export --graph-cache: the traced graphs every task reuses (default OUT/graphs)")
    ap.add_argument("--skip-export", action="store_true", help="never export: every task's model dir must hold export.json")
    ap.add_argument("--dataset", default=os.path.join(REPO, "tests", "data", "seed-dataset.json"),
                    help="dataset file (default: the seed's, tests/data/seed-dataset.json)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    ap.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo")
    ap.add_argument("--batch-size", type=int, default=None, help="extract --batch-size (default: extract's)")
    ap.add_argument("--extract-args", default="", help="more extract flags, one string (e.g. '--batch-size 1 "
                    "--parity-slack 2'); a --device here replaces the suite's")
    ap.add_argument("--layer-step", type=int, default=None, help="analyze --layer-step (default: analyze's)")
    ap.add_argument("--pooling", default=None, help="analyze --pooling (default: analyze's)")
    ap.add_argument("--bootstrap", type=int, default=None, help="analyze --bootstrap (default: analyze's)")
    ap.add_argument("--analyze-args", default="", help="more analyze flags, one string")
    ap.add_argument("--bin-dir", default=None, help="folder with extract and analyze (default: target/release)")
    ap.add_argument("--no-setup", action="store_true", help="skip scripts/setup (ORT_DYLIB_PATH or .ort/ given)")
    ap.add_argument("--free-disk", action="store_true", help="delete a model's ONNX dir once its cache is complete "
                    "(its export.json's source is kept in OUT/weights/NAME.json for the duplicate check)")
    ap.add_argument("--allow-duplicate-weights", action="store_true",
                    help="extract a revision even when its weights' sha256 equal another revision's of the same "
                    "model (default: stop before extract; EleutherAI/pythia issues 205, 206)")
    ap.add_argument("--plan-only", action="store_true", help="write and print OUT/plan.json, run and submit nothing "
                    "(for another engine: `pythia-suite task PLAN INDEX` per entry, then `collect PLAN`)")
    ap.add_argument("--dry-run", action="store_true", help="print every step's command (slurm: the sbatch commands "
                    "and batch scripts), run nothing")
    sl = ap.add_argument_group("slurm (with --scheduler slurm)")
    sl.add_argument("--partition", default=None, help="sbatch --partition")
    sl.add_argument("--gpus-per-task", type=int, default=None, help="sbatch --gpus-per-task (e.g. 1)")
    sl.add_argument("--cpus-per-task", type=int, default=1, help="sbatch --cpus-per-task (default 1)")
    sl.add_argument("--mem", default=None, help="sbatch --mem per task (e.g. 64G)")
    sl.add_argument("--time", default=None, help="sbatch --time per task (e.g. 04:00:00)")
    sl.add_argument("--account", default=None, help="sbatch --account")
    sl.add_argument("--array-throttle", type=int, default=None, help="at most N tasks at once (--array=0-K%%N)")
    sl.add_argument("--job-name", default="ua-suite", help="job name prefix (default ua-suite)")
    sl.add_argument("--analyze-partition", default=None, help="the analyze job's partition (default: --partition's); "
                    "it never asks for a GPU")
    sl.add_argument("--analyze-time", default="01:00:00", help="the analyze job's time limit (default 01:00:00: "
                    "4 Pythia-size models take seconds, see docs/benchmarks.md)")
    sl.add_argument("--analyze-cpus-per-task", type=int, default=1, help="the analyze job's CPUs (default 1)")
    sl.add_argument("--analyze-mem", default=None, help="the analyze job's --mem (default: the partition's)")
    return ap


def parse_args(argv) -> argparse.Namespace:
    ap = parser()
    args = ap.parse_args(argv)
    if args.dtype == "float16" and args.device == "cpu" and not args.skip_export:
        ap.error("float16 needs --device cuda")
    if args.array_throttle is not None and args.array_throttle < 1:
        ap.error("--array-throttle must be at least 1")
    for flag in ("cpus_per_task", "analyze_cpus_per_task"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be at least 1")
    slurm_only = ("partition", "gpus_per_task", "time", "array_throttle", "mem", "account", "analyze_partition",
                  "analyze_mem")
    given = [f"--{f.replace('_', '-')}" for f in slurm_only if getattr(args, f) is not None]
    given += [f for f in ("--analyze-time", "--analyze-cpus-per-task")
              if any(a == f or a.startswith(f + "=") for a in argv)]
    if args.scheduler == "local" and given:
        ap.error(f"{', '.join(given)}: only with --scheduler slurm")
    return args


def preflight(args) -> None:
    """Python's torch stack (only an export needs it), scripts/setup, the binaries, the dataset."""
    if not args.dry_run and not args.skip_export:
        missing = [m for m in ("torch", "transformers", "onnx", "onnxscript")
                   if subprocess.run([sys.executable, "-c", f"import {m}"], check=False, capture_output=True).returncode]
        if missing:
            raise SystemExit(f"pythia-suite: missing Python packages {missing}: "
                             f"python3 -m pip install {' '.join(missing)}")
    if not args.no_setup:
        run([os.path.join(REPO, "scripts", "setup")] + (["--gpu"] if args.device == "cuda" else []), args)
    extract, have_x = find_bin("extract", [args.bin_dir], use_env=False)
    analyze, have_a = find_bin("analyze", [args.bin_dir], use_env=False)
    if not (have_x and have_a):
        run(["cargo", "build", "--release", "--locked", "-p", "extract", "-p", "analyze"], args)
        extract, _ = find_bin("extract", [args.bin_dir], use_env=False)
        analyze, _ = find_bin("analyze", [args.bin_dir], use_env=False)
    if not args.dry_run and not os.path.isfile(args.dataset):
        raise SystemExit(f"pythia-suite: dataset not found: {args.dataset}")
    args.extract_bin, args.analyze_bin = extract, analyze


def run_suite(args) -> int:
    plan = build_plan(args, args.extract_bin, args.analyze_bin)
    plan_path = os.path.join(plan["out"], "plan.json")
    say(f"{len(plan['tasks'])} model(s) x revision(s) -> {plan['out']} (scheduler {args.scheduler})"
        + ("  (dry run)" if args.dry_run else ""))
    print_plan(plan)
    print_layout(plan)
    if args.dry_run:
        say(f"would write the plan {plan_path}")
    else:
        write_json(plan_path, plan)
        say(f"plan written: {plan_path}")
    if args.plan_only:
        say(f"--plan-only: run `{SELF} task {plan_path} INDEX` for INDEX in 0..{len(plan['tasks']) - 1}, "
            f"then `collect {plan_path}`")
        return 0

    if args.scheduler == "slurm":
        return slurm_submit(plan, args)
    for t in plan["tasks"]:
        run_task(plan, t["index"], args.dry_run)
    return collect(plan, require_all=True, dry_run=args.dry_run)
