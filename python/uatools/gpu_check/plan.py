"""Shapes, time estimates and the --budget-s arithmetic."""
import shlex

from uatools.gpu_check.runlog import elapsed
from uatools.pythia import SIZES, size_dims

# name: the model's config fields (num_hidden_layers, hidden_size, num_attention_heads,
# intermediate_size, vocab_size): Pythia's sizes from the one table (uatools.pythia), and
# "tiny", the CPU self-test: 5 layers so that layer_step 4 samples layer 4, which carries the
# planted activations (the last one is after the final LayerNorm); the vocabulary of the
# smaller Pythia sizes, which the GPT-NeoX tokenizer's ids fit.
SHAPES = {
    "tiny": {"num_hidden_layers": 5, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 256,
             "vocab_size": SIZES["410m"]["vocab_size"]},
    **{size: size_dims(size) for size in ("160m", "410m", "1.4b", "6.9b", "12b")},
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
