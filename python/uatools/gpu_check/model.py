"""The random-weight models at Pythia's shapes (planted massive activations included) and the
seed's loop on them."""
import gc
import time

from uatools.files import dir_bytes
from uatools.gpu_check.env import GpuMemPoller
from uatools.gpu_check.plan import SHAPES
from uatools.pythia import neox_config
from uatools.seed import loop as seed_loop_lib


def make_config(shape: str):
    return neox_config(**SHAPES[shape])


def plant_massive(model, shape, args) -> dict:
    """Massive activations as trained Pythia has them: two residual dimensions in the thousands
    from an early layer on, made by the output bias of that layer's MLP."""
    import torch
    layers, hidden = SHAPES[shape]["num_hidden_layers"], SHAPES[shape]["hidden_size"]
    layer = max(0, min(args.massive_layer, layers - 2))  # a hidden state before the final LayerNorm holds it
    dims = [hidden // 3, (2 * hidden) // 3 + 1]
    values = [args.massive_value, -0.8 * args.massive_value]
    with torch.no_grad():
        bias = model.gpt_neox.layers[layer].mlp.dense_4h_to_h.bias
        for d, v in zip(dims, values):
            bias[d] = v
    return {"layer": layer, "dims": dims, "values": values,
            "where": f"gpt_neox.layers[{layer}].mlp.dense_4h_to_h.bias"}


def hidden_probe(model, tokenizer, texts, device) -> dict:
    """Batch-1 forward passes: max |hidden state| per layer (0 = embeddings), all finite?"""
    import torch
    per_layer, finite = None, True
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt").to(device)
            hs = model(**ids, output_hidden_states=True).hidden_states
            m = [float(h.float().abs().max()) for h in hs]
            finite = finite and all(bool(torch.isfinite(h).all()) for h in hs)
            per_layer = m if per_layer is None else [max(a, b) for a, b in zip(per_layer, m)]
    top = max(range(len(per_layer)), key=lambda i: per_layer[i])
    return {"n_statements": len(texts), "max_abs_per_layer": per_layer, "max_abs": per_layer[top],
            "max_abs_layer": top, "all_finite": finite,
            "first_layer_over_1000": next((i for i, v in enumerate(per_layer) if v > 1000), None)}


def probe_texts(dataset) -> list:
    return [d["pairs"][0][0] for d in dataset.values()] + [d["pairs"][0][1] for d in dataset.values()]


def build_and_save(shape, args, hf_dir, dataset) -> dict:
    import torch
    from transformers import GPTNeoXForCausalLM, PreTrainedTokenizerFast
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    with torch.device(args.device):
        model = GPTNeoXForCausalLM._from_config(make_config(shape), dtype=dtype)
    model.eval()
    out = {}
    if shape in args.massive_shapes:
        out["massive_planted"] = plant_massive(model, shape, args)
    if args.device == "cuda":
        torch.cuda.synchronize()
    out["build_s"] = time.perf_counter() - t0
    out["n_parameters"] = sum(p.numel() for p in model.parameters())
    tok = PreTrainedTokenizerFast(tokenizer_file=args.tokenizer)
    out["hidden_probe"] = hidden_probe(model, tok, probe_texts(dataset), args.device)
    t0 = time.perf_counter()
    model.save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    out["save_s"] = time.perf_counter() - t0
    out["checkpoint_bytes"] = dir_bytes(hf_dir)
    del model
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return out


def seed_loop(hf_dir, dataset, args, dtype_name, pairs_per_category=None, time_it=True) -> dict:
    """The notebook's loop (layer_step=4) on this device; per-statement values in dataset order."""
    import numpy as np
    import torch
    dev = args.device
    tokenizer, model, load_s = seed_loop_lib.load_model(hf_dir, dtype_name, dev)
    first = next(iter(dataset.values()))["pairs"][0][0]
    seed_loop_lib.warm_up(first, model, tokenizer, args.layer_step)  # kernels, allocator
    if dev == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    embs, nlls, index = [], [], []
    gi = 0
    t0 = time.perf_counter()
    with GpuMemPoller() if dev == "cuda" else _Null() as poller:
        for data in dataset.values():
            for pi, (a, b) in enumerate(data["pairs"]):
                if pairs_per_category is None or pi < pairs_per_category:
                    ea, eb, na, nb = seed_loop_lib.pair_values(a, b, model, tokenizer, args.layer_step)
                    embs += [ea, eb]
                    nlls += [na, nb]
                    index += [2 * gi, 2 * gi + 1]
                gi += 1
        if dev == "cuda":
            torch.cuda.synchronize()
    loop_s = time.perf_counter() - t0
    layers = seed_loop_lib.layer_keys(embs[0])
    out = {"load_s": load_s, "loop_s": loop_s, "layers": layers, "index": np.asarray(index),
           "emb": {l: np.stack([e[f"layer_{l}"] for e in embs]) for l in layers},
           "nll": np.asarray(nlls, dtype=np.float64), "n_statements": len(index),
           "torch_max_allocated_mib": (torch.cuda.max_memory_allocated() / 2**20) if dev == "cuda" else None,
           "nvidia_smi": poller.result() if dev == "cuda" else None}
    del model
    gc.collect()
    if dev == "cuda":
        torch.cuda.empty_cache()
    return out


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
