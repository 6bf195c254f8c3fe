"""scripts/bench-export's checkpoints: random weights at a Pythia shape, float32, as a local
Hugging Face checkpoint (config.json, model.safetensors, the committed GPT-NeoX tokenizer).

Weights are N(0, 0.02) as GPT-NeoX initialises them, layer norms at gain 1 and bias 0, so
the forward passes are those of a model of that size; a different --seed gives a second
checkpoint of the same architecture (the case the graph cache serves).
"""
from __future__ import annotations

import argparse
import os
import sys

from uatools.pythia import SIZES, neox_config, size_dims
from uatools.shape_graph import TOKENIZER


def make_checkpoint(size: str, seed: int, out: str) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import PreTrainedTokenizerFast

    config = neox_config(**size_dims(size))
    os.makedirs(out, exist_ok=True)
    config.save_pretrained(out)
    from transformers import GPTNeoXForCausalLM

    with torch.device("meta"):
        shapes = {n: p.shape for n, p in GPTNeoXForCausalLM(config).state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in shapes.items():
        if "norm" in name:
            tensors[name] = torch.ones(shape) if name.endswith("weight") else torch.zeros(shape)
        else:
            tensors[name] = torch.empty(shape).normal_(0.0, 0.02, generator=gen)
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=TOKENIZER, bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tokenizer.save_pretrained(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pythia", required=True, choices=list(SIZES), help="the shape of EleutherAI/pythia-SIZE")
    p.add_argument("--seed", type=int, required=True, help="seed of the random weights")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    args = p.parse_args(argv)
    make_checkpoint(args.pythia, args.seed, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
