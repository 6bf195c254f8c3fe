"""The verify step: ONNX Runtime on a right-padded batch against transformers and the probes,
by the one parity rule."""
from __future__ import annotations

from uatools import parity
from uatools.export.common import POOLED_ORDER, ExportError
from uatools.export.graph import make_wrapper, right_padded_ids


def verification_skip_reason(args):
    """Why the ONNX Runtime check cannot or should not run here, or None."""
    if args.no_verify:
        return "--no-verify"
    try:
        import onnxruntime as ort
    except ImportError:
        return "python onnxruntime is not installed (extract still checks export.json's probes)"
    if args.dtype == "float16" and "CUDAExecutionProvider" not in ort.get_available_providers():
        # ORT's CPU kernels cover float16 only partly; a big model there is slow or fails.
        return ("python onnxruntime has no CUDAExecutionProvider for the float16 graph "
                "(extract still checks export.json's probes)")
    return None


def ort_session(path: str, device: str):
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" in available:
        # TF32 would blur float32 parity; float16 runs are unaffected.
        providers = [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    # Prepacking copies every MatMul weight into the CPU kernels' layout: a second copy of the
    # model for a check that runs one small batch.
    options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(path, options, providers=providers)


def run_ort(session, input_ids, attention_mask) -> dict:
    """Every output of the graph, by name (either layout)."""
    feeds = {"input_ids": input_ids.cpu().numpy(), "attention_mask": attention_mask.cpu().numpy()}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def pooled(hidden, row: int, n: int):
    """The three poolings of one right-padded row of token states [n_layers+1, batch, seq,
    hidden], in float64: [3, n_layers+1, hidden] in POOLED_ORDER (mean, mean_skip_first, last)."""
    import numpy as np

    h = np.asarray(hidden[:, row, :n, :], dtype=np.float64)
    return np.stack([h.mean(axis=1), h[:, 1:, :].mean(axis=1) if n > 1 else np.zeros_like(h[:, 0, :]),
                     h[:, n - 1, :]])


def row_nll(logprobs, row: int, n: int) -> float:
    import numpy as np

    return -float(np.asarray(logprobs[row, 1:n], dtype=np.float64).mean()) if n > 1 else 0.0


def row_values(out: dict, row: int, n: int):
    """One row of a graph's outputs, either layout, as (pooled float64 [3, n_layers+1, hidden]
    in POOLED_ORDER, NLL mean (0.0 when nothing is predicted), number of predicted tokens)."""
    import numpy as np

    if "pooled" in out:
        ours = np.asarray(out["pooled"][row], dtype=np.float64).transpose(1, 0, 2)
        k = int(out["n_predicted"][row])
        return ours, (float(out["nll_sum"][row]) / k if k > 0 else float(out["nll_sum"][row])), k
    return pooled(out["hidden_states"], row, n), row_nll(out["token_logprobs"], row, n), max(n - 1, 0)


def float64_truth(probe):
    """A probe's float64 record as (pooled [3, n_layers+1, hidden] in POOLED_ORDER, NLL), or None
    where export.json holds none (then the rule judges against transformers' values alone)."""
    import numpy as np

    f = (probe or {}).get("float64")
    if f is None:
        return None
    return np.stack([np.asarray(f[key], dtype=np.float64) for key in POOLED_ORDER]), f["nll"]


def judge_row(ours, ours_nll, theirs, theirs_nll, truth, n: int, dtype: str, names=POOLED_ORDER) -> dict:
    """One row by the parity rule: ours against transformers' values (`theirs`; pooled
    [poolings, n_layers+1, hidden] with the poolings `names`, and the NLL) and, where `truth`
    (the same shapes in float64) exists, against float64. "of_allowed" is the largest error
    over what the rule allows (above 1: refused), by the float64 rule where there is a truth,
    else by the bound against transformers."""
    # mean_skip_first has no tokens to pool in a 1-token row (the graph gives zeros).
    keys = [k for k, key in enumerate(names) if key != "mean_skip_first" or n > 1]
    old = max(parity.vector_error(ours[k], theirs[k])[0] for k in keys)
    old_nll = parity.nll_error(ours_nll, theirs_nll) if n > 1 else 0.0
    if truth is None:
        return {"error": old, "nll_error": old_nll, "of_allowed": max(old, old_nll) / parity.bound(dtype)}
    pooled64, nll64 = truth
    emb = parity.judge(ours[keys], theirs[keys], pooled64[keys], dtype)
    nll = parity.judge(ours_nll, theirs_nll, nll64, dtype, errors=parity.nll_errors)
    return {"error": old, "nll_error": old_nll, "float64_error": emb["error"], "float64_nll_error": nll["error"],
            "transformers_float64_error": max(emb["transformers_error"], nll["transformers_error"]),
            "of_allowed": max(emb["of_allowed"], nll["of_allowed"])}


def worst(rows: list, names: dict) -> dict:
    """The largest of each field over the `rows` (judge_row's) that have it, under the names given."""
    return {name: max(r[field] for r in rows if field in r) for field, name in names.items()
            if any(field in r for r in rows)}


def compare_real_tokens(ort_out: dict, torch_out, lengths, probes, dtype: str):
    """ORT vs torch on the same padded batch, by the parity rule (judge_row): pooled vectors
    (mean, mean_skip_first, last at every layer) and per-row NLL, each row against the float64
    truth of its probe where export.json's probes carry one (`probes[row]`, None for rows
    that are no probe). torch's side is always its own token states pooled in float64 here,
    so for the reduced graph this measures the in-graph pooling and NLL sum too."""
    t_hidden, t_lp = torch_out
    rows, hmax = [], 0.0
    for row, n in enumerate(lengths):
        ours, ours_nll, k = row_values(ort_out, row, n)
        if k != max(n - 1, 0):
            raise ExportError(f"row {row} with {n} real tokens: the graph counts {k} predicted tokens, not {n - 1}")
        if n == 1 and ours_nll != 0.0:
            raise ExportError(f"row {row} with 1 real token: the graph's NLL is {ours_nll}, not 0")
        truth = float64_truth(probes[row]) if row < len(probes) else None
        rows.append(judge_row(ours, ours_nll, pooled(t_hidden, row, n), row_nll(t_lp, row, n), truth, n, dtype))
        hmax = max(hmax, float(abs(t_hidden[:, row, :n, :]).max()))
    return {**worst(rows, {"error": "torch_pooled_error", "nll_error": "torch_nll_error",
                           "float64_error": "torch_row_float64_error",
                           "transformers_float64_error": "torch_row_own_float64_error",
                           "of_allowed": "torch_of_allowed"}),
            "hidden_abs_max": hmax}


def compare_with_probes(ort_out: dict, lengths, probes, dtype: str):
    """ONNX pooled values vs the seed functions' batch-1 values in export.json by the parity
    rule (judge_row: against their float64 record where there is one)."""
    import numpy as np

    rows = []
    for row, (n, probe) in enumerate(zip(lengths, probes)):
        ours, ours_nll, _ = row_values(ort_out, row, n)
        present = [k for k, key in enumerate(POOLED_ORDER) if key in probe]
        names = [POOLED_ORDER[k] for k in present]
        theirs = np.stack([np.asarray(probe[key], dtype=np.float64) for key in names])
        truth = float64_truth(probe)
        if truth is not None:
            truth = (truth[0][present], truth[1])
        rows.append(judge_row(ours[present], ours_nll, theirs, probe["nll"], truth, n, dtype, names))
    return worst(rows, {"error": "probe_pooled_error", "nll_error": "probe_nll_error",
                        "float64_error": "probe_float64_error", "float64_nll_error": "probe_float64_nll_error",
                        "transformers_float64_error": "probe_own_float64_error", "of_allowed": "probe_of_allowed"})


def torch_reference(model, tokenizer, texts, device) -> dict:
    """What verify compares ONNX Runtime with, computed while the model is loaded: a right-padded
    batch of 2+ different-length texts plus a 1-token row (the first text's first token), and
    torch's token states and log-probabilities on it (float32 numpy)."""
    import torch

    ids = [list(tokenizer(t)["input_ids"]) for t in texts]
    ids.append(ids[0][:1])
    input_ids, attention_mask, lengths = right_padded_ids(ids, device)
    with torch.no_grad():
        torch_out = make_wrapper(model, token_states=True)(input_ids, attention_mask)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "lengths": lengths,
            "torch_out": tuple(x.float().cpu().numpy() for x in torch_out)}


def verify(onnx_path, reference, probes, dtype, device) -> dict:
    """ONNX Runtime (either layout) on torch_reference's batch vs torch's token states pooled
    in float64 on real tokens, and vs the probes' seed values, by the parity rule
    (scripts/parity.py): against the probes' float64 record where they carry one, else within
    parity.bound(dtype). Needs no model: the export frees it first, so that the weights are
    not held twice."""
    session = ort_session(onnx_path, device)
    lengths = reference["lengths"]
    ort_out = run_ort(session, reference["input_ids"], reference["attention_mask"])
    result = compare_real_tokens(ort_out, reference["torch_out"], lengths, probes, dtype)
    if probes:
        result.update(compare_with_probes(ort_out, lengths, probes, dtype))
    result["bound"] = parity.bound(dtype)
    result["worst_of_allowed"] = max(v for k, v in result.items() if k.endswith("_of_allowed"))
    result["provider"] = session.get_providers()[0]
    if not result["worst_of_allowed"] <= 1.0:
        raise ExportError(f"ONNX Runtime output differs from torch beyond what the {dtype} parity rule allows "
                          f"(scripts/parity.py; bound {result['bound']:.3g}"
                          + (f", against float64 up to {parity.TRANSFORMERS_FACTOR}x transformers' own error"
                             if any(p.get("float64") for p in probes) else "")
                          + f"): {fmt(result)}")
    return result


def fmt(d: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())
