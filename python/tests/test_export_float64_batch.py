"""The float64 probes in one forward (meta.float64_batch_values): the texts right-padded into
one batch, each row's values must be those of a forward of its text alone (batch 1, with the
model's own loss), on tiny random GPT-NeoX and Gemma 3 models (Gemma 3's sliding window
shorter than the texts), with float64 weights module by module and with the float64 copy.

Needs torch and transformers (python/requirements-models.txt); where they are missing, pytest
reports these tests as skipped, with the reason.
"""
import os

import numpy as np
import pytest

from uatools import REPO

for package in ("torch", "transformers"):
    pytest.importorskip(package, reason=f"{package} is not installed (python/requirements-models.txt)")

from uatools.export import meta
from uatools.export.common import DEFAULT_PROBES, POOLED_ORDER

TOKENIZER = os.path.join(REPO, "tests", "fixtures", "tiny-a")  # its 512 ids fit the models below
# Texts of different lengths (12, 26, 53 tokens and 1): the shorter rows get pads; the
# one-token text has no token to predict (nll nan, as the loss over no token is).
TEXTS = [*DEFAULT_PROBES, "a"]


def tiny_model(family: str):
    import torch
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, GPTNeoXConfig

    torch.manual_seed(0)
    if family == "gpt_neox":
        config = GPTNeoXConfig(vocab_size=512, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                               intermediate_size=128, rotary_pct=0.25, use_parallel_residual=True)
    else:
        config = Gemma3TextConfig(vocab_size=512, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=16, intermediate_size=128, sliding_window=4,
                                  layer_types=["sliding_attention", "full_attention"] * 2)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32).eval()


def batch_one(text: str, model64, tokenizer) -> dict:
    """The reference: one text alone, the model's loss with labels = input_ids (what the
    seed's get_nll computes), the poolings over all its tokens."""
    import torch

    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad(), meta.float64_throughout():
        out = model64(**inputs, labels=inputs["input_ids"], output_hidden_states=True)
    h = torch.stack(out.hidden_states)[:, 0].numpy()  # [n_layers+1, seq, hidden]
    return {"nll": out.loss.item(), "mean_skip_first": h[:, 1:].mean(axis=1), "mean": h.mean(axis=1),
            "last": h[:, -1]}


def assert_close(got: dict, want: dict) -> None:
    """Within 1e-12 relative: the NLL, and every layer's pooled vector against its largest
    component (a component near zero may lose more digits to the sums' other order)."""
    for key in POOLED_ORDER:
        g, w = np.asarray(got[key]), want[key]
        assert g.shape == w.shape, key
        assert np.array_equal(np.isnan(g), np.isnan(w)), key
        scale = np.abs(np.nan_to_num(w)).max(axis=-1, keepdims=True)
        assert (np.abs(np.nan_to_num(g - w)) <= 1e-12 * scale).all(), key
    assert (np.isnan(got["nll"]) and np.isnan(want["nll"])) or abs(got["nll"] - want["nll"]) <= 1e-12 * abs(want["nll"])


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("family", ["gpt_neox", "gemma3_text"])
def test_one_batched_forward_gives_each_text_its_own_values(family):
    from transformers import AutoTokenizer

    model = tiny_model(family)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    lengths = [len(tokenizer(t)["input_ids"]) for t in TEXTS]
    assert len(set(lengths)) == len(TEXTS) and min(lengths) == 1 and max(lengths) > 2 * 4  # pads; past the window
    copy = meta.float64_model(model)
    want = [batch_one(t, copy, tokenizer) for t in TEXTS]
    with meta.float64_weights(model) as swapped:
        got = meta.float64_batch_values(TEXTS, swapped, tokenizer)
    from_copy = meta.float64_batch_values(TEXTS, copy, tokenizer)
    for text, w, g, c in zip(TEXTS, want, got, from_copy):
        assert np.isnan(w["nll"]) == (text == "a")
        assert_close(g, w)
        assert_close(c, w)
    assert_close(meta.float64_values(TEXTS[1], copy, tokenizer), want[1])  # one text: a batch of one


def test_add_float64_probes_records_each_probe_from_one_forward(monkeypatch):
    """add_float64_probes calls the model once for all the probes, and each record holds that
    probe's batch-1 values and its errors against them."""
    from transformers import AutoTokenizer

    model = tiny_model("gpt_neox")
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    want = [batch_one(t, meta.float64_model(model), tokenizer) for t in DEFAULT_PROBES]
    probes = [{"text": t, "nll": w["nll"], **{k: w[k].astype(np.float32) for k in POOLED_ORDER}}
              for t, w in zip(DEFAULT_PROBES, want)]
    calls = []
    model.register_forward_pre_hook(lambda mod, args: calls.append(1))
    records = meta.add_float64_probes(probes, model, tokenizer)
    assert len(calls) == 1
    for probe, record, w in zip(probes, records, want):
        assert record["text"] == probe["text"]
        assert_close({k: np.asarray(v) if k != "nll" else v for k, v in record["float64"].items()}, w)
        assert record["float64"]["transformers_error"]["nll"] == pytest.approx(0.0, abs=1e-12)
