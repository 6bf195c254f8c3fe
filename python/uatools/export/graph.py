"""The graph: the wrapper that reduces in the graph (or emits token states), the TorchScript
exporter (the dynamo one runs in uatools.export.template), and the check of a graph's inputs
and outputs."""
from __future__ import annotations

import os
import tempfile

from uatools.export.common import EXTERNAL_DATA_NAME, INPUTS, REDUCED_OUTPUTS, TOKEN_STATES_OUTPUTS, ExportError


def output_names(token_states: bool) -> list:
    return list(TOKEN_STATES_OUTPUTS if token_states else REDUCED_OUTPUTS)


def takes_logits_to_keep(model) -> bool:
    """Whether the model's forward takes logits_to_keep (transformers' causal LMs since
    4.50); older ones compute every position's logits and the wrapper slices them."""
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def make_wrapper(model, token_states: bool = False):
    """nn.Module with exactly the graph contract's outputs: the reduced layout (pooled,
    nll_sum, n_predicted) by default, the token-level one (hidden_states, token_logprobs)
    with token_states."""
    import torch

    def next_token_logprobs(logits, input_ids):
        """[batch, seq-1]: log p(input_ids[t] | tokens < t) for t = 1..seq-1."""
        # float32 log-softmax as transformers' loss does (it upcasts logits).
        logprobs = logits.float().log_softmax(dim=-1)
        return logprobs[:, :-1, :].gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)

    class HiddenStatesAndLogprobs(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                             output_hidden_states=True, use_cache=False, return_dict=True)
            hidden_states = torch.stack(out.hidden_states, dim=0)
            next_token = next_token_logprobs(out.logits, input_ids)
            first = torch.zeros((input_ids.shape[0], 1), dtype=next_token.dtype, device=next_token.device)
            token_logprobs = torch.cat([first, next_token], dim=1)
            return hidden_states, token_logprobs

    class PooledAndNll(torch.nn.Module):
        """Pools every layer over the real tokens and sums the NLL inside the graph.

        Right padding: a row's n real tokens are positions 0..n-1. One float32 weight
        tensor W [batch, 3, seq] holds the rows mask (mean), mask without position 0
        (mean_skip_first) and one-hot at n-1 (last); weights 0/1 make every product
        exact, so a pooled vector is one float32 sum of real tokens' values, divided once
        by its count (n, n-1, 1; at least 1). Each layer's [batch, seq, hidden] state is
        cast to float32 before the sum (float16 sums overflow on massive activations) and
        its padded positions are zeroed first (0 * inf would be NaN); the small
        [batch, 3, hidden] results are stacked, never the token states themselves.
        """

        def __init__(self, model):
            super().__init__()
            self.model = model
            self.keeps = takes_logits_to_keep(model)

        def forward(self, input_ids, attention_mask):
            real = attention_mask > 0                                    # [B, T]
            # Token t is predicted from position t-1: positions 0..T-2 alone go through
            # the output layer (logits_to_keep), most of a small model's arithmetic.
            keep = {"logits_to_keep": torch.arange(input_ids.shape[1] - 1, device=input_ids.device)}
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                             use_cache=False, return_dict=True, **(keep if self.keeps else {}))
            logits = out.logits if self.keeps else out.logits[:, :-1, :]  # [B, T-1, V]
            n = attention_mask.sum(dim=1)                                # [B] int64
            pos = torch.arange(input_ids.shape[1], device=input_ids.device)
            skip = real & (pos >= 1).unsqueeze(0)
            last = pos.unsqueeze(0) == (n - 1).unsqueeze(1)
            weights = torch.stack([real, skip, last], dim=1).to(torch.float32)  # [B, 3, T]
            counts = torch.stack([n, n - 1, torch.ones_like(n)], dim=1).clamp(min=1)
            counts = counts.to(torch.float32).unsqueeze(-1)              # [B, 3, 1]
            keep = real.unsqueeze(-1)                                    # [B, T, 1]
            pooled = []
            for h in out.hidden_states:
                h32 = torch.where(keep, h.to(torch.float32), torch.zeros((), dtype=torch.float32,
                                                                         device=h.device))
                pooled.append(torch.bmm(weights, h32) / counts)          # [B, 3, H]
            pooled = torch.stack(pooled, dim=1)                          # [B, L+1, 3, H]
            # -log p(token t | tokens < t), t = 1..T-1, in float32 as transformers' loss
            # (it upcasts the logits). A log-softmax, not logsumexp minus the target: ONNX
            # Runtime's LogSoftmax sums 262k exponentials closely enough for the parity
            # bound, its ReduceLogSumExp did not (3x the bound on Gemma-3-270M).
            logprobs = logits.float().log_softmax(dim=-1)
            nll = -logprobs.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            predicted = real[:, 1:]   # t = 1..n-1: the real ones among 1..seq-1
            zero = torch.zeros((), dtype=nll.dtype, device=nll.device)
            nll_sum = torch.where(predicted, nll, zero).sum(dim=1)
            n_predicted = (n - 1).clamp(min=0)
            return pooled, nll_sum, n_predicted

    cls = HiddenStatesAndLogprobs if token_states else PooledAndNll
    return cls(model).eval()


def right_padded_batch(tokenizer, texts, device):
    """int64 input_ids/attention_mask, padded on the right with id 0 (masked anyway)."""
    return right_padded_ids([list(tokenizer(t)["input_ids"]) for t in texts], device)


def right_padded_ids(ids, device):
    """right_padded_batch for token id lists: (input_ids, attention_mask, lengths)."""
    import torch

    seq = max(len(x) for x in ids)
    input_ids = torch.zeros((len(ids), seq), dtype=torch.int64)
    attention_mask = torch.zeros((len(ids), seq), dtype=torch.int64)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = torch.tensor(x, dtype=torch.int64)
        attention_mask[row, : len(x)] = 1
    return input_ids.to(device), attention_mask.to(device), [len(x) for x in ids]


def parameter_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def export_torchscript(wrapper, args, out_dir: str, opset: int, external: bool, token_states: bool) -> None:
    """--exporter torchscript: out_dir/model.onnx (+ model.onnx.data when external), traced with
    the weights (no graph cache: its constant folding renames the weights it transposes)."""
    import onnx
    import torch

    names = {"input_names": list(INPUTS), "output_names": output_names(token_states)}
    dest = os.path.join(out_dir, "model.onnx")
    for stale in (dest, os.path.join(out_dir, EXTERNAL_DATA_NAME)):
        if os.path.exists(stale):
            os.unlink(stale)

    # TorchScript writes one file per tensor for large models; export into a scratch dir
    # and re-save so the layout is always model.onnx (+ a single model.onnx.data).
    with tempfile.TemporaryDirectory(dir=os.path.dirname(dest)) as tmp:
        tmp_path = os.path.join(tmp, "model.onnx")
        dyn = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
        if names["output_names"] == TOKEN_STATES_OUTPUTS:
            dyn.update({"hidden_states": {1: "batch", 2: "seq"}, "token_logprobs": {0: "batch", 1: "seq"}})
        else:
            dyn.update({name: {0: "batch"} for name in REDUCED_OUTPUTS})
        with torch.no_grad():
            torch.onnx.export(wrapper, args, tmp_path, dynamo=False, opset_version=opset,
                              dynamic_axes=dyn, do_constant_folding=True, **names)
        proto = onnx.load(tmp_path, load_external_data=True)
        onnx.save_model(proto, dest, save_as_external_data=external, all_tensors_to_one_file=True,
                        location=EXTERNAL_DATA_NAME, size_threshold=1024)


def opset_of(proto) -> int:
    return max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def check_graph_io(model, token_states: bool = False, dims: dict | None = None,
                   dtype: str | None = None) -> None:
    """Fail early if the graph's names, element types or axes differ from the contract (for the
    layout token_states selects). model: a ModelProto, or the path of a saved one. With dims
    (model_dims) and dtype, the outputs' fixed axes and the hidden states' element type are
    checked too."""
    import onnx

    graph = (onnx.load(model, load_external_data=False) if isinstance(model, str) else model).graph
    ins = [i.name for i in graph.input]
    outs = [o.name for o in graph.output]
    want_outs = output_names(token_states)
    if ins != INPUTS or outs != want_outs:
        raise ExportError(f"exported graph has inputs {ins} and outputs {outs}, not the contract's "
                          f"{INPUTS} -> {want_outs}")

    def shape(value):
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in value.type.tensor_type.shape.dim]

    for value in graph.input:
        s = shape(value)
        if len(s) != 2 or any(isinstance(d, int) for d in s):
            raise ExportError(f"input {value.name} has static axes {s}; try the other --exporter")
    T = onnx.TensorProto
    if token_states:
        model_type = {"float32": T.FLOAT, "float16": T.FLOAT16}.get(dtype)
        L, H = (dims["n_layers"] + 1, dims["hidden_size"]) if dims else (None, None)
        want = {"hidden_states": (model_type, [L, "batch", "seq", H]),
                "token_logprobs": (T.FLOAT, ["batch", "seq"])}
    else:
        L, H = (dims["n_layers"] + 1, dims["hidden_size"]) if dims else (None, None)
        want = {"pooled": (T.FLOAT, ["batch", L, 3, H]), "nll_sum": (T.FLOAT, ["batch"]),
                "n_predicted": (T.INT64, ["batch"])}
    for value in graph.output:
        elem, axes = want[value.name]
        got_elem = value.type.tensor_type.elem_type
        if elem is not None and got_elem != elem:
            raise ExportError(f"output {value.name} has element type {T.DataType.Name(got_elem)}, "
                              f"the contract says {T.DataType.Name(elem)}")
        s = shape(value)
        if len(s) != len(axes):
            raise ExportError(f"output {value.name} has shape {s}, the contract says {axes}")
        for got, ax in zip(s, axes):
            # "batch"/"seq" must stay dynamic; a known size must match (dynamo may leave it symbolic).
            if (isinstance(ax, str) and isinstance(got, int)) or (isinstance(ax, int) and isinstance(got, int)
                                                                 and got != ax):
                raise ExportError(f"output {value.name} has shape {s}, the contract says {axes}; "
                                  "try the other --exporter")
