"""Pythia's architecture at a given shape, for the checks that need no download."""


def neox_config(layers: int, hidden: int, heads: int, intermediate: int):
    """GPTNeoXConfig as Pythia has it: vocab 50304, rotary 25 %, base 10000, 2048 positions,
    parallel residual, untied, eps 1e-5, gelu, bos = eos = 0."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=50304, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=intermediate, rotary_pct=0.25,
        rotary_emb_base=10000, max_position_embeddings=2048, use_parallel_residual=True,
        tie_word_embeddings=False, layer_norm_eps=1e-5, hidden_act="gelu",
        bos_token_id=0, eos_token_id=0)
