"""Shapes, time estimates and the --budget-s arithmetic."""
import shlex

from uatools.gpu_check.runlog import elapsed

# name: (layers, hidden, heads, intermediate); all vocab 50304 (Pythia's padded vocabulary)
SHAPES = {
    "tiny": (5, 64, 4, 256),  # CPU self-test; 5 layers so that layer_step 4 samples layer 4, which
                              # carries the planted activations (the last one is after the final LayerNorm)
    "160m": (12, 768, 12, 3072),
    "410m": (24, 1024, 16, 4096),
    "1.4b": (24, 2048, 16, 8192),
    "6.9b": (32, 4096, 32, 16384),
    "12b": (36, 5120, 40, 20480),
}
# Estimated seconds per shape on one H100 (docs/gpu-check.md says how); used by --budget-s.
EST_S = {"tiny": 20, "160m": 90, "410m": 120, "1.4b": 140, "6.9b": 300, "12b": 420}
# ... of which the essential steps (build, export, read, the first extract run) take:
EST_ESSENTIAL_S = {"tiny": 10, "160m": 60, "410m": 75, "1.4b": 95, "6.9b": 200, "12b": 290}
STARTUP_EST_S = 30
SPEED_TARGET = {"shape": "410m", "ratio": 100.0}
READ_TARGET = {"shape": "6.9b", "ratio": 2.0}


def shape_list(text: str) -> list:
    if text.strip().lower() in ("", "none"):
        return []
    return [s.strip() for s in text.split(",") if s.strip()]


def estimates(shapes: list) -> list:
    """Per shape: its estimate, its estimate through extract, and when it starts (start-up first)."""
    plan, t = [], STARTUP_EST_S
    for s in shapes:
        plan.append(f"{s} ~{EST_S[s]} s, through extract ~{EST_ESSENTIAL_S[s]} s (starts ~{t} s)")
        t += EST_S[s]
    return plan


def shape_fits(shape: str, spent_s: float, budget_s) -> bool:
    """--budget-s: a shape starts only if the time spent plus its essential steps fit."""
    return not budget_s or spent_s + EST_ESSENTIAL_S[shape] <= budget_s


def over_budget(args) -> bool:
    return bool(args.budget_s) and elapsed() > args.budget_s


def extract_runs_for(shape, args) -> list:
    """[(label, extra extract args)]: the --batching configurations on those shapes, else one."""
    if shape in args.batching_shapes and args.batching:
        return [(c, shlex.split(c)) for c in args.batching]
    base = ["--batch-size", str(args.batch_size)] if args.batch_size else []
    return [(" ".join(base) or "extract's defaults", base)]
