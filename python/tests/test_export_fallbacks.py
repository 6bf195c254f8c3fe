"""The export's ways out for a family it was not written against (issue 28): a graph template
that fails is replaced by a trace with the loaded weights, and float64 probes whose weights
cannot be swapped module by module come from a float64 copy of the model. And the module by
module float64 weights give the copy's values.

Needs the model packages (python/requirements-models.txt); where they are missing, pytest
reports these tests as skipped, with the reason.
"""
import os

import numpy as np
import pytest

from uatools import REPO

for package in ("torch", "transformers", "onnxscript", "onnxruntime"):
    pytest.importorskip(package, reason=f"{package} is not installed (python/requirements-models.txt)")

from uatools.export import cli, meta, template
from uatools.export.common import DEFAULT_PROBES, ExportError

FIXTURE = os.path.join(REPO, "tests", "fixtures", "tiny-a")


def export(model, out, *flags):
    return cli.run(cli.parse_args(["--model", model, "--out", out, *flags]))


def test_a_failing_template_falls_back_to_the_trace_with_weights(tmp_path, monkeypatch, capsys):
    """The meta-device trace made to fail (tiny-a traced, not written from its config): the
    export still succeeds (ONNX Runtime's check included), says so in one line, and keeps
    nothing in the graph cache."""
    def failing_trace(self):
        raise ExportError("forced by the test")

    monkeypatch.setattr(template.TraceJob, "run", failing_trace)
    graphs = tmp_path / "graphs"
    meta_json = export(FIXTURE, str(tmp_path / "out"), "--graph-cache", str(graphs), "--trace-graph")
    log = capsys.readouterr().out
    assert "the graph template failed for this model (forced by the test); tracing the graph with the loaded weights" in log
    assert "verifying with ONNX Runtime" in log and "  ok: " in log
    assert [e for e in os.listdir(graphs) if not e.endswith(".lock")] == []
    assert set(meta_json["files"]) == {"model.onnx", "tokenizer.json", "config.json"}
    assert meta_json["probes"] and all("float64" in p for p in meta_json["probes"])


def tiny_model():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(FIXTURE, attn_implementation="eager", dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(FIXTURE)


@pytest.mark.parametrize("block_bytes", [meta.FLOAT64_BLOCK_BYTES, None])
def test_float64_weights_module_by_module_equal_the_float64_copy(monkeypatch, block_bytes):
    """float64_weights against float64_model on tiny-a's probes: bit for bit where no layer is
    computed in blocks; where every nn.Linear is (blocks of a few rows), within float64's
    rounding (the matrix products sum in another order). The model's own weights are left as
    they were."""
    import torch

    model, tokenizer = tiny_model()
    before = {n: t.clone() for n, t in model.state_dict().items()}
    with torch.no_grad():  # transformers adds hooks of its own at the first forward
        model(**tokenizer(DEFAULT_PROBES[0], return_tensors="pt"), output_hidden_states=True)
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    copy = meta.float64_model(model)
    want = [meta.float64_values(t, copy, tokenizer) for t in DEFAULT_PROBES]
    del copy
    if block_bytes is None:
        monkeypatch.setattr(meta, "FLOAT64_BLOCK_BYTES", 4096)
    with meta.float64_weights(model) as swapped:
        got = [meta.float64_values(t, swapped, tokenizer) for t in DEFAULT_PROBES]
    for w, g in zip(want, got):
        for key in ("mean", "mean_skip_first", "last"):
            if block_bytes is None:
                np.testing.assert_allclose(g[key], w[key], rtol=0, atol=1e-12 * np.abs(w[key]).max())
            else:
                assert np.array_equal(g[key], w[key]), key
        assert g["nll"] == w["nll"] if block_bytes else abs(g["nll"] - w["nll"]) < 1e-12
    after = model.state_dict()
    assert all(after[n].dtype == t.dtype and after[n].equal(t) for n, t in before.items())
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()] == hooks
    assert "forward" not in vars(model.get_output_embeddings())


def test_a_forward_that_returns_a_view_of_its_weight_keeps_its_values():
    """float64_weights reuses one float64 buffer from module to module: a module whose output is
    a view of its own weight must keep that output's values when the next module's weights are
    copied in (its buffer is given up, not reused)."""
    import torch

    class Table(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(4, 3))

        def forward(self, x):
            return self.weight[:2]

    class Shift(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.randn(4, 3))

        def forward(self, x):
            return x + self.bias[:2]

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table, self.shift = Table(), Shift()

        def forward(self, x):
            rows = self.table(x)
            return rows, self.shift(rows)

    net = Net()
    with torch.no_grad(), meta.float64_weights(net) as swapped:
        rows, shifted = swapped(torch.zeros(1))
    want = net.table.weight.detach().double()[:2]
    assert rows.dtype == torch.float64 and torch.equal(rows, want)
    assert torch.equal(shifted, want + net.shift.bias.detach().double()[:2])


def test_float64_probes_fall_back_to_a_float64_copy(monkeypatch, capsys):
    """A family whose code reads a module's weights outside its forward (made here: the output
    layer's weight read by the model's own forward) fails module by module; the probes then come
    from the float64 copy, with the copy's values."""
    import torch

    model, tokenizer = tiny_model()
    probes = [{"text": t, "nll": 0.0, **{k: np.zeros((1, 1)) for k in ("mean", "mean_skip_first", "last")}}
              for t in DEFAULT_PROBES[:1]]
    want = meta.float64_values(DEFAULT_PROBES[0], meta.float64_model(model), tokenizer)
    forward = type(model).forward

    def reads_the_head_itself(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        head = self.get_output_embeddings().weight
        out.logits = out.logits + 0 * torch.matmul(out.hidden_states[-1], head.T)
        return out

    monkeypatch.setattr(type(model), "forward", reads_the_head_itself)
    (got,) = meta.add_float64_probes(probes, model, tokenizer)
    assert "from a float64 copy of the whole model instead" in capsys.readouterr().out
    assert got["float64"]["nll"] == want["nll"]
    assert np.array_equal(np.asarray(got["float64"]["mean"]), want["mean"])


def test_one_forward_gives_the_seed_functions_values():
    """probe_record through OneForward (one forward pass a probe) equals probe_record on the
    model itself (three), bit for bit."""
    from uatools.seed import reference as seedref

    model, tokenizer = tiny_model()
    for text in DEFAULT_PROBES:
        assert seedref.probe_record(text, meta.OneForward(model), tokenizer) == seedref.probe_record(text, model,
                                                                                                      tokenizer)
