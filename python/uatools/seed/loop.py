"""The seed notebook's loop: per pair get_layer_embeddings(A), get_layer_embeddings(B),
get_nll(A), get_nll(B) (the last two are the seed's get_output_preference(A, B) = NLL(B) - NLL(A)),
batch 1, in the dataset's order. scripts/gpu-check, scripts/bench-extract-cpu and
scripts/real-model-check time it; each keeps its own bookkeeping around these calls.
"""
import time


def load_model(model_dir: str, dtype_name: str = "float32", device=None):
    """(tokenizer, model in eval mode, seconds): from_pretrained as the notebook loads a model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype_name))
    if device is not None:
        model = model.to(device)
    model = model.eval()
    if device == "cuda":
        torch.cuda.synchronize()
    return tokenizer, model, time.perf_counter() - t0


def pair_values(text_a: str, text_b: str, model, tokenizer, layer_step: int):
    """The seed's four calls for one pair: (embeddings A, embeddings B, NLL A, NLL B)."""
    from uatools.seed import reference

    emb_a = reference.get_layer_embeddings(text_a, model, tokenizer, layer_step)
    emb_b = reference.get_layer_embeddings(text_b, model, tokenizer, layer_step)
    nll_a = reference.get_nll(text_a, model, tokenizer)  # get_output_preference(A, B)
    nll_b = reference.get_nll(text_b, model, tokenizer)  # = nll_b - nll_a
    return emb_a, emb_b, nll_a, nll_b


def warm_up(text: str, model, tokenizer, layer_step: int) -> None:
    """One untimed pass (kernels, allocator), as every timed loop does before it starts."""
    from uatools.seed import reference

    reference.get_layer_embeddings(text, model, tokenizer, layer_step)


def layer_keys(embs: dict) -> list:
    """The layer numbers of a get_layer_embeddings dict ('layer_X' keys), in its order."""
    return [int(k.split("_")[1]) for k in embs]
