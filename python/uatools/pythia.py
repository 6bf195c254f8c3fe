"""Pythia's architecture at a given shape, for the checks that need no download.

The shapes come from one table, pythia_shapes.json beside this module (tools/synth-cache reads
it too); nothing else writes a Pythia size's layers, width, heads or vocabulary.
"""
import json
import os

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pythia_shapes.json")) as _f:
    _TABLE = json.load(_f)

# The architecture every size shares (rotary 25 %, parallel residual, untied, ...).
ARCHITECTURE = _TABLE["architecture"]
# size label -> num_hidden_layers, hidden_size, num_attention_heads, intermediate_size, vocab_size,
# n_params (the published count), smallest first.
SIZES = _TABLE["sizes"]
# The four sizes the seed studies.
STUDY_SIZES = _TABLE["study_sizes"]


def size_dims(size: str) -> dict:
    """The config.json fields of EleutherAI/pythia-SIZE (n_params left out)."""
    return {k: v for k, v in SIZES[size].items() if k != "n_params"}


def n_params(layers: int, hidden: int, vocab: int) -> int:
    """GPT-NeoX's parameter count with untied embeddings: embed_in and embed_out (V H each), per
    layer QKV and dense (4 H^2 + 4 H), MLP at 4x (8 H^2 + 5 H) and two layer norms (4 H); final
    norm 2 H. It reproduces each size's published n_params (python/tests/test_pythia_shapes.py)."""
    return 2 * vocab * hidden + layers * (12 * hidden * hidden + 13 * hidden) + 2 * hidden


def neox_config(num_hidden_layers: int, hidden_size: int, num_attention_heads: int, intermediate_size: int,
                vocab_size: int):
    """GPTNeoXConfig as Pythia has it at the given shape (ARCHITECTURE for the rest)."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(num_hidden_layers=num_hidden_layers, hidden_size=hidden_size,
                         num_attention_heads=num_attention_heads, intermediate_size=intermediate_size,
                         vocab_size=vocab_size, **ARCHITECTURE)
