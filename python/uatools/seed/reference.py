"""The seed notebook's reference method, kept as literally as possible.

`get_layer_embeddings` and `get_nll` are copied from the seed notebook
(shared/seed/pythia_scaling_notebook.txt, "2. Core Functions"): one statement at a time,
batch 1, `tokenizer(text, return_tensors="pt")`, transformers' own forward pass. Every
number the toolkit computes another way (ONNX, batching, padding) is checked against these.

The helpers below them only reshape the seed's outputs (all layers stacked, the extra
`mean`/`last` poolings the design asks for) or walk a dataset in the seed's order; they
never change how a number is computed.

Used by scripts/export (probes, reference.safetensors), scripts/make-fixtures and later
checks (GPU parity, CPU benchmark).
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from uatools.extras import need
from uatools.seed.dataset import Statement, iter_statements, load_dataset

__all__ = [
    "Statement",
    "get_layer_embeddings",
    "get_nll",
    "get_output_preference",
    "iter_statements",
    "load_dataset",
    "mean_skip_first_all_layers",
    "other_poolings_all_layers",
    "probe_record",
    "reference_arrays",
]

torch = need("torch", "uatools.seed.reference (the seed's transformers loop)")

# ---------------------------------------------------------------------------------------
# Seed functions (verbatim apart from `get_nll` being lifted out of
# `get_output_preference`, where the seed defines it as an inner function).
# ---------------------------------------------------------------------------------------


def get_layer_embeddings(text: str, model, tokenizer, layer_step: int = 4) -> Dict[str, np.ndarray]:
    """
    Extract embeddings from every Nth layer.

    Args:
        text: Input text
        model: HuggingFace model
        tokenizer: HuggingFace tokenizer
        layer_step: Sample every Nth layer (default: 4)

    Returns:
        Dict with 'layer_X' keys containing mean-pooled embeddings
    """
    inputs = tokenizer(text, return_tensors="pt").to(model.device)

    with torch.no_grad():
        outputs = model(**inputs, output_hidden_states=True)
        hidden_states = outputs.hidden_states  # Tuple of (n_layers + 1) tensors

    n_layers = len(hidden_states) - 1  # Exclude embedding layer

    embeddings = {}

    # Sample every layer_step layers + final layer
    layer_indices = list(range(0, n_layers + 1, layer_step))
    if n_layers not in layer_indices:
        layer_indices.append(n_layers)

    for layer_idx in layer_indices:
        layer_hidden = hidden_states[layer_idx]
        # Mean-pooled (skip BOS token)
        embeddings[f'layer_{layer_idx}'] = layer_hidden[0, 1:, :].mean(dim=0).cpu().numpy().astype(np.float32)

    return embeddings


def get_nll(text, model, tokenizer):
    inputs = tokenizer(text, return_tensors="pt").to(model.device)
    with torch.no_grad():
        outputs = model(**inputs, labels=inputs["input_ids"])
        return outputs.loss.item()


def get_output_preference(text_a: str, text_b: str, model, tokenizer) -> float:
    """
    Calculate output preference as NLL(B) - NLL(A).
    Positive = prefers A, Negative = prefers B.
    """
    nll_a = get_nll(text_a, model, tokenizer)
    nll_b = get_nll(text_b, model, tokenizer)

    return nll_b - nll_a


# ---------------------------------------------------------------------------------------
# Helpers around the seed functions.
# ---------------------------------------------------------------------------------------


def mean_skip_first_all_layers(text: str, model, tokenizer) -> np.ndarray:
    """The seed's pooling at every layer: float32 [n_layers + 1, hidden]."""
    embs = get_layer_embeddings(text, model, tokenizer, layer_step=1)
    # layer_step=1 yields keys layer_0..layer_L in order; index explicitly anyway.
    return np.stack([embs[f"layer_{i}"] for i in range(len(embs))])


def other_poolings_all_layers(text: str, model, tokenizer) -> Dict[str, np.ndarray]:
    """`mean` (all tokens) and `last` (last token) poolings, float32 [n_layers + 1, hidden].

    Same forward pass as the seed's get_layer_embeddings; only the token reduction differs.
    """
    inputs = tokenizer(text, return_tensors="pt").to(model.device)
    with torch.no_grad():
        hidden_states = model(**inputs, output_hidden_states=True).hidden_states
    mean = [h[0, :, :].float().mean(dim=0).cpu().numpy().astype(np.float32) for h in hidden_states]
    last = [h[0, -1, :].float().cpu().numpy().astype(np.float32) for h in hidden_states]
    return {"mean": np.stack(mean), "last": np.stack(last)}


def probe_record(text: str, model, tokenizer) -> dict:
    """Everything export.json records for one probe statement (seed semantics)."""
    input_ids = tokenizer(text)["input_ids"]
    others = other_poolings_all_layers(text, model, tokenizer)
    return {
        "text": text,
        "input_ids": [int(i) for i in input_ids],
        "nll": float(get_nll(text, model, tokenizer)),
        "mean_skip_first": mean_skip_first_all_layers(text, model, tokenizer).tolist(),
        "mean": others["mean"].tolist(),
        "last": others["last"].tolist(),
    }


def reference_arrays(statements: List[Statement], model, tokenizer, progress=None) -> Dict[str, np.ndarray]:
    """Seed values for a list of statements: mean_skip_first f32 [n, L+1, H], nll f64 [n]."""
    embs, nlls = [], []
    for i, s in enumerate(statements):
        embs.append(mean_skip_first_all_layers(s.text, model, tokenizer))
        nlls.append(get_nll(s.text, model, tokenizer))
        if progress is not None:
            progress(i + 1, len(statements))
    return {
        "mean_skip_first": np.stack(embs).astype(np.float32),
        "nll": np.asarray(nlls, dtype=np.float64),
    }
