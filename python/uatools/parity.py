"""The one parity rule: how far extract's numbers may be from transformers'.

The same rule, with the same constants, is `extract/src/parity.rs` (extract's probe check
and the Rust parity tests); `scripts/export` (its verify step), `scripts/check-parity`,
`scripts/real-model-check` and `scripts/gpu-check` import this module. A Rust test compares
the constants of both (`python3 scripts/parity.py --rule`).

Why the tolerance scales with the vector. Trained language models carry a few "massive
activation" dimensions whose values reach the thousands. A float32 value of 1755 has a
spacing (ulp) of 1.2e-4, so an absolute bound of 1e-4 refuses plain rounding. Every error
of floating-point arithmetic is relative to the magnitudes that flow through it, so the
error of a pooled vector is measured against that vector's own scale:

    embedding error  = max_j |ours_j - ref_j| / max_j |ref_j|      (one pooled vector)
    NLL error        = |ours - ref| / max(1, |ref|)

and both must stay within

    bound(dtype) = ACCUM_UNITS * u(float32) + STORE_UNITS * u(dtype)

where u is the unit roundoff (2^-24 for float32, 2^-11 for float16). The first term is
reduction order: ONNX Runtime and PyTorch sum the same products in a different order
(blocked matmuls, fused LayerNorm and attention), in float32 accumulators whatever the
model dtype; a sum of n terms in another order moves by about sqrt(n) u, compounded
through the layers. Measured on real trained models (Gemma-3-270M, 18 layers): at most
~90 u, so 192 u leaves about twice that. The second term is storage: a float16 graph rounds
every stored activation to 11 bits, and the two sides round at different places, a few
u(float16) per layer and pooled vector; 64 u(float16) = 3.1e-2 of the vector's scale is
still far below the differences between statements that the analysis measures.

    float32: 256 u(float32)                    = 1.53e-5
    float16: 192 u(float32) + 64 u(float16)    = 3.13e-2
"""
import json
import sys

import numpy as np

UNIT_ROUNDOFF = {"float32": 2.0 ** -24, "float16": 2.0 ** -11}
ACCUM_UNITS = 192
STORE_UNITS = 64
# Keeps the ratio defined for an all-zero reference vector (the smallest normal float32).
TINY = float(np.finfo(np.float32).tiny)


def bound(dtype: str) -> float:
    """The largest error allowed for a model computing in `dtype`."""
    if dtype not in UNIT_ROUNDOFF:
        raise ValueError(f"no parity rule for dtype {dtype!r} (float32 or float16)")
    return ACCUM_UNITS * UNIT_ROUNDOFF["float32"] + STORE_UNITS * UNIT_ROUNDOFF[dtype]


def vector_error(ours, ref):
    """(error, worst dimension) of pooled vectors; the last axis is the hidden dimension.

    With more than one vector the worst vector's error is returned and `worst` indexes the
    flattened array. NaN or infinity anywhere gives an infinite error.
    """
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    diff = np.abs(ours - ref)
    scale = np.maximum(np.abs(ref).max(axis=-1, keepdims=True), TINY)
    rel = diff / scale
    rel = np.where(np.isfinite(rel), rel, np.inf)
    worst = int(np.argmax(rel))
    return float(rel.reshape(-1)[worst]), worst


def nll_error(ours, ref) -> float:
    """The largest NLL error over the given values (scalars or arrays)."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    rel = np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))
    rel = np.where(np.isfinite(rel), rel, np.inf)
    return float(rel.max()) if rel.size else 0.0


def rule() -> dict:
    """The constants, for the Rust side's consistency test."""
    return {
        "accum_units": ACCUM_UNITS,
        "store_units": STORE_UNITS,
        "unit_roundoff": UNIT_ROUNDOFF,
        "bound": {d: bound(d) for d in UNIT_ROUNDOFF},
    }


def main(argv=None) -> int:
    """`--rule`: the constants as JSON; anything else: this module's description."""
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--rule"]:
        print(json.dumps(rule(), indent=2))
    else:
        print(__doc__)
    return 0
