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

Against the truth. transformers in float32 or float16 is itself only one rounding of the
exact result, and on some statements a poor one: on a real 8-token statement its float32
was 3.6e-5 of scale from float64 while extract's was 7.0e-6, so judged against
transformers a result closer to the truth than the reference was refused. scripts/export
therefore also records each probe in float64 (export.json's probe "float64": the same
poolings and NLL from the same checkpoint run in torch float64, and "transformers_error",
transformers' own dtype values' error against them). Where they exist, a value is judged
against float64 and may be as far from it as

    allowed = max(bound(dtype), TRANSFORMERS_FACTOR * transformers' own error there)

for that probe, pooling and layer (or that probe's NLL). Any factor >= 1 never refuses a
result at least as close to the truth as transformers; 2 also accepts one as accurate as
transformers on average where transformers happened to round well on this vector (its
error and ours are two draws of the same rounding process, either may be the larger), and
a real defect (other weights, a wrong pooling or mask) is 1e-3 of scale or more, orders
above. The old comparison with transformers' dtype values is still reported. An
export.json without float64 probes (older exports, or --no-float64-probes) keeps the rule
above: against transformers' dtype values within bound(dtype).
"""
import json
import sys

import numpy as np

UNIT_ROUNDOFF = {"float32": 2.0 ** -24, "float16": 2.0 ** -11}
ACCUM_UNITS = 192
STORE_UNITS = 64
# Allowed error against float64, in multiples of transformers' own error there (see above).
TRANSFORMERS_FACTOR = 2
# Keeps the ratio defined for an all-zero reference vector (the smallest normal float32).
TINY = float(np.finfo(np.float32).tiny)


def bound(dtype: str) -> float:
    """The largest error allowed for a model computing in `dtype`."""
    if dtype not in UNIT_ROUNDOFF:
        raise ValueError(f"no parity rule for dtype {dtype!r} (float32 or float16)")
    return ACCUM_UNITS * UNIT_ROUNDOFF["float32"] + STORE_UNITS * UNIT_ROUNDOFF[dtype]


def allowed(dtype: str, transformers_error) -> float:
    """The largest error against float64 allowed where transformers' own error there is
    `transformers_error` (a non-finite one is ignored: transformers' values are then no
    measure of rounding, and only the dtype's bound applies)."""
    own = float(transformers_error)
    return max(bound(dtype), TRANSFORMERS_FACTOR * own) if np.isfinite(own) else bound(dtype)


def vector_errors(ours, ref):
    """Each pooled vector's error (the last axis is the hidden dimension), as an array of the
    leading shape; NaN or infinity in a vector gives it an infinite error."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    scale = np.maximum(np.abs(ref).max(axis=-1), TINY)
    rel = np.abs(ours - ref).max(axis=-1) / scale
    bad = ~(np.isfinite(ours).all(axis=-1) & np.isfinite(ref).all(axis=-1) & np.isfinite(rel))
    return np.where(bad, np.inf, rel)


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


def nll_errors(ours, ref):
    """Each NLL's error, as an array of the inputs' shape."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    rel = np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))
    return np.where(np.isfinite(rel), rel, np.inf)


def nll_error(ours, ref) -> float:
    """The largest NLL error over the given values (scalars or arrays)."""
    return float(nll_errors(ours, ref).max(initial=0.0))


def judge(ours, transformers, truth, dtype: str, errors=vector_errors) -> dict:
    """The rule against the truth for matching values (pooled vectors [..., hidden] with
    errors=vector_errors, NLLs with errors=nll_errors): ours, transformers' in `dtype` and
    float64's. Returns the largest error against float64 ("error"), transformers' own
    ("transformers_error"), ours against transformers' (the rule without float64,
    "old_error"), and the largest error / allowed ratio ("of_allowed"; above 1 is refused)."""
    ours_err = np.asarray(errors(ours, truth), dtype=np.float64)
    theirs = np.asarray(errors(transformers, truth), dtype=np.float64)
    limit = np.vectorize(lambda e: allowed(dtype, e), otypes=[np.float64])(theirs)
    ratio = ours_err / limit
    return {"error": float(ours_err.max(initial=0.0)), "transformers_error": float(theirs.max(initial=0.0)),
            "old_error": float(np.asarray(errors(ours, transformers)).max(initial=0.0)),
            "of_allowed": float(ratio.max(initial=0.0))}


def rule() -> dict:
    """The constants, for the Rust side's consistency test."""
    return {
        "accum_units": ACCUM_UNITS,
        "store_units": STORE_UNITS,
        "transformers_factor": TRANSFORMERS_FACTOR,
        "unit_roundoff": UNIT_ROUNDOFF,
        "bound": {d: bound(d) for d in UNIT_ROUNDOFF},
    }


def main(argv=None) -> int:
    """`--rule`: the constants as JSON; anything else: the usage and this module's description."""
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--rule"]:
        print(json.dumps(rule(), indent=2))
    else:
        print("usage: parity.py [--rule]\n\n" + __doc__)
    return 0
