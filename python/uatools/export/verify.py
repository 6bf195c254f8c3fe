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


def compare_real_tokens(ort_out: dict, torch_out, lengths):
    """Parity-rule errors (scripts/parity.py) of ORT vs torch on the same padded batch:
    pooled vectors (mean, mean_skip_first, last at every layer) and per-row NLL. torch's side
    is always its own token states pooled in float64 here, so for the reduced graph this
    measures the in-graph pooling and NLL sum too."""
    t_hidden, t_lp = torch_out
    emb, nll, hmax = 0.0, 0.0, 0.0
    for row, n in enumerate(lengths):
        ours, ours_nll, k = row_values(ort_out, row, n)
        if k != max(n - 1, 0):
            raise ExportError(f"row {row} with {n} real tokens: the graph counts {k} predicted tokens, not {n - 1}")
        emb = max(emb, parity.vector_error(ours, pooled(t_hidden, row, n))[0])
        if n > 1:
            nll = max(nll, parity.nll_error(ours_nll, row_nll(t_lp, row, n)))
        elif ours_nll != 0.0:
            raise ExportError(f"row {row} with 1 real token: the graph's NLL is {ours_nll}, not 0")
        hmax = max(hmax, float(abs(t_hidden[:, row, :n, :]).max()))
    return {"torch_pooled_error": emb, "torch_nll_error": nll, "hidden_abs_max": hmax}


def compare_with_probes(ort_out: dict, lengths, probes):
    """Parity-rule errors of ONNX pooled values vs the seed functions' batch-1 values in export.json."""
    import numpy as np

    emb, nll = 0.0, 0.0
    for row, (n, probe) in enumerate(zip(lengths, probes)):
        ours, ours_nll, _ = row_values(ort_out, row, n)
        for k, key in enumerate(POOLED_ORDER):
            if key in probe and (key != "mean_skip_first" or n > 1):
                emb = max(emb, parity.vector_error(ours[k], np.asarray(probe[key]))[0])
        if n > 1:
            nll = max(nll, parity.nll_error(ours_nll, probe["nll"]))
    return {"probe_pooled_error": emb, "probe_nll_error": nll}


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
    in float64 on real tokens, and vs the probes' seed values, within parity.bound(dtype)
    (scale-relative). Needs no model: the export frees it first, so that the weights are not
    held twice."""
    session = ort_session(onnx_path, device)
    lengths = reference["lengths"]
    ort_out = run_ort(session, reference["input_ids"], reference["attention_mask"])
    result = compare_real_tokens(ort_out, reference["torch_out"], lengths)
    if probes:
        result.update(compare_with_probes(ort_out, lengths, probes))
    bound = parity.bound(dtype)
    errors = {k: v for k, v in result.items() if k.endswith("_error")}
    worst = max(errors.values())
    result["bound"] = bound
    result["worst_of_bound"] = worst / bound
    result["provider"] = session.get_providers()[0]
    if not worst <= bound:
        raise ExportError(f"ONNX Runtime output differs from torch beyond the {dtype} parity bound "
                          f"{bound:.3g} (scripts/parity.py): {fmt(result)}")
    return result


def fmt(d: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())
