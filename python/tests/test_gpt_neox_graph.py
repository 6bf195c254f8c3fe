"""The GPT-NeoX graph written from the config (issue 28: a first export not bound by tracing).

Every variant of the config the writer mirrors is exported with it, and the export's own check
(ONNX Runtime against transformers and the float64 probes, by the parity rule) must pass; a
planted mistake in the written forward must fail that check; configs it does not mirror are
traced; and the written graph's outputs agree with the traced graph's.

Needs the model packages (python/requirements-models.txt); where they are missing, pytest
reports these tests as skipped, with the reason.
"""
import os
import shutil

import numpy as np
import pytest

from uatools import REPO, parity

for package in ("torch", "transformers", "onnxscript", "onnxruntime"):
    pytest.importorskip(package, reason=f"{package} is not installed (python/requirements-models.txt)")

from uatools.export import cli, gpt_neox_graph
from uatools.export.common import DEFAULT_PROBES, ExportError

FIXTURE = os.path.join(REPO, "tests", "fixtures", "tiny-a")
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json"]


def checkpoint(folder, seed=0, **changes):
    """A random GPT-NeoX checkpoint with tiny-a's tokenizer and its config changed by `changes`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(FIXTURE)
    for key, value in changes.items():
        if key == "partial_rotary_factor":
            config.rope_parameters = {**config.rope_parameters, key: value}
        else:
            setattr(config, key, value)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(FIXTURE, name), folder)
    return str(folder)


def export(model, out, *flags):
    return cli.run(cli.parse_args(["--model", model, "--out", str(out), "--no-graph-cache", *flags]))


VARIANTS = {
    "sequential residual": {"use_parallel_residual": False},
    "no attention bias": {"attention_bias": False},
    "whole-head rotary": {"partial_rotary_factor": 1.0},
    "tied output layer": {"tie_word_embeddings": True},
    "odd shape": {"hidden_size": 40, "num_attention_heads": 5, "intermediate_size": 72, "num_hidden_layers": 3},
}


@pytest.mark.parametrize("token_states", [False, True], ids=["pooled", "token-states"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_is_written_and_passes_the_check(tmp_path, capsys, variant, token_states):
    model = checkpoint(tmp_path / "ckpt", **VARIANTS[variant])
    meta_json = export(model, tmp_path / "out", *(["--token-states"] if token_states else []))
    log = capsys.readouterr().out
    assert "writing the GPT-NeoX graph from the config" in log
    assert "tracing the graph" not in log
    assert "verifying with ONNX Runtime" in log and "  ok: " in log
    assert meta_json["outputs"] == (["hidden_states", "token_logprobs"] if token_states
                                    else ["pooled", "nll_sum", "n_predicted"])


def test_a_mistake_in_the_written_forward_fails_the_check(tmp_path, monkeypatch):
    """The MLP without its GELU: ONNX Runtime's values leave the parity bound, the export fails
    and says by how much."""
    def linear_mlp(g, x, prefix):
        return gpt_neox_graph.linear(g, gpt_neox_graph.linear(g, x, prefix + ".dense_h_to_4h"),
                                     prefix + ".dense_4h_to_h")

    monkeypatch.setattr(gpt_neox_graph, "mlp", linear_mlp)
    with pytest.raises(ExportError, match="parity|bound|allowed"):
        export(FIXTURE, tmp_path / "out")


@pytest.mark.parametrize("changes, why", [
    ({"hidden_act": "gelu_new"}, "hidden_act 'gelu_new' is not 'gelu'"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000, "partial_rotary_factor": 0.25}},
     "rope_type 'linear' is not 'default'"),
])
def test_configs_it_does_not_mirror_are_traced(tmp_path, changes, why):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint(tmp_path / "ckpt", **changes), dtype=torch.float32)
    assert gpt_neox_graph.unsupported(model, "float32") == why
    assert gpt_neox_graph.unsupported(model, "float16") is not None


def test_a_llama_is_traced(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, vocab_size=512))
    assert gpt_neox_graph.unsupported(model, "float32") == "model type 'llama' is not gpt_neox"


def test_written_and_traced_graphs_agree(tmp_path, capsys):
    """tiny-a exported both ways: on a right-padded batch with a one-token row, every pooled
    vector and NLL of one is within the parity rule's float32 bound of the other's."""
    from uatools.export.graph import right_padded_ids
    from uatools.export.verify import ort_session, run_ort

    written, traced = tmp_path / "written", tmp_path / "traced"
    export(FIXTURE, written)
    export(FIXTURE, traced, "--trace-graph")
    log = capsys.readouterr().out
    assert "writing the GPT-NeoX graph from the config" in log and "tracing the graph (dynamo" in log
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(FIXTURE)
    ids, mask, lengths = right_padded_ids([list(tokenizer(t)["input_ids"]) for t in DEFAULT_PROBES] + [[7]], "cpu")
    outs = [run_ort(ort_session(os.path.join(d, "model.onnx"), "cpu"), ids, mask)
            for d in (written, traced)]
    bound = parity.bound("float32")
    for row, n in enumerate(lengths):
        for layer in range(outs[0]["pooled"].shape[1]):
            for k in range(3):
                a, b = (np.asarray(o["pooled"][row, layer, k], dtype=np.float64) for o in outs)
                assert parity.vector_error(a, b)[0] <= bound, (row, layer, k)
        assert parity.nll_error(float(outs[0]["nll_sum"][row]), float(outs[1]["nll_sum"][row])) <= bound
        assert int(outs[0]["n_predicted"][row]) == int(outs[1]["n_predicted"][row]) == max(n - 1, 0)
