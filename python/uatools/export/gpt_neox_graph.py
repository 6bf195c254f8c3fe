"""The graph of a GPT-NeoX (Pythia) checkpoint, written node by node from its config.

The dynamo trace of a 24-layer model costs about 45 CPU seconds on a 2-core machine (torch.export,
the decompositions, the ONNX translation and its optimizer), which made the first export of every
Pythia size a minute. This module writes the same computation directly, in milliseconds, as a
graph template (uatools.export.template.Template: the proto with every weight an external
reference, and the list of those tensors with the parameter each is read from), so a first export
costs what a second checkpoint does. Families it does not know, and configs it does not mirror
(`unsupported` says which), keep the trace.

The forward mirrors transformers' modeling_gpt_neox.py (5.x) with eager attention, so the two can
be read side by side: GPTNeoXModel.forward (embed_in, the rotary cos/sin, the causal and padding
mask), GPTNeoXLayer.forward (parallel residual or not), GPTNeoXAttention.forward with
eager_attention_forward, GPTNeoXMLP with nn.functional.gelu (erf), the final layer norm and the
output layer; the outputs are uatools.export.graph.make_wrapper's, in both layouts. Float32
only: the float16 graph's casts (eager softmax in float32, the rotary cos/sin rounded to the model
dtype) would be checked on a GPU, so float16 exports keep the trace.

Nothing here reads a weight's values: a built graph, like a traced one, is a template for every
checkpoint of the shape, and the export's probes and ONNX Runtime check judge each checkpoint's
numbers against transformers as for any export.
"""
from __future__ import annotations

import numpy as np

from uatools.export.common import EXTERNAL_DATA_NAME, INPUTS
from uatools.export.graph import check_graph_io, output_names

# What the config must say for this module's forward to be transformers' (else: the trace).
HIDDEN_ACT = "gelu"
ROPE_TYPE = "default"


def unsupported(model, dtype: str) -> str | None:
    """Why this module cannot write `model`'s graph (it is then traced), or None."""
    config = model.config
    if getattr(config, "model_type", None) != "gpt_neox":
        return f"model type {getattr(config, 'model_type', None)!r} is not gpt_neox"
    if dtype != "float32":
        return f"{dtype}: the written graph is float32 only"
    if type(model).__name__ != "GPTNeoXForCausalLM":
        return f"{type(model).__name__} is not GPTNeoXForCausalLM"
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", ROPE_TYPE) != ROPE_TYPE:
        return f"rope_type {rope.get('rope_type')!r} is not {ROPE_TYPE!r}"
    if config.hidden_act != HIDDEN_ACT:
        return f"hidden_act {config.hidden_act!r} is not {HIDDEN_ACT!r}"
    if config.hidden_size % config.num_attention_heads:
        return "hidden_size is not a multiple of num_attention_heads"
    return None


class Nodes:
    """The graph being written: nodes, small constants (kept in the proto) and the streamed
    weights (external references, in order of first use, which is the order they are written)."""

    def __init__(self, streamed: dict):
        self.streamed = streamed
        self.nodes, self.constants = [], []
        self.weights = {}  # parameter name -> None: a set in the order of first use
        self.count = 0

    def op(self, op_type: str, *inputs, outputs: int = 1, **attrs):
        from onnx import helper

        self.count += 1
        names = [f"{op_type.lower()}_{self.count}" + (f"_{i}" if outputs > 1 else "") for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=f"n{self.count}", **attrs))
        return names[0] if outputs == 1 else names

    def const(self, value, dtype=np.float32) -> str:
        from onnx import numpy_helper

        self.count += 1
        name = f"const_{self.count}"
        self.constants.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, *values) -> str:
        return self.const(list(values), np.int64)

    def weight(self, source: str) -> str:
        """The parameter `source` (weight_sources' name), as the checkpoint holds it: never
        transposed (the linear layers are Gemm with transB), so its bytes are streamed as they
        are, with no copy."""
        from uatools.export.common import ExportError

        if source not in self.streamed:
            raise ExportError(f"the GPT-NeoX graph reads {source}, which this model does not have")
        self.weights[source] = None
        return source


def layer_norm(g: Nodes, x: str, prefix: str, eps: float) -> str:
    return g.op("LayerNormalization", x, g.weight(prefix + ".weight"), g.weight(prefix + ".bias"),
                axis=-1, epsilon=eps)


def linear(g: Nodes, x: str, prefix: str, bias: bool = True) -> str:
    """nn.Linear on x [..., in]: a Gemm with transB over x's rows (so the weight is read as stored)."""
    weight = g.weight(prefix + ".weight")
    out_features = g.streamed[weight].shape[0]
    rows = g.op("Reshape", x, g.ints(-1, g.streamed[weight].shape[1]))
    y = g.op("Gemm", rows, weight, *([g.weight(prefix + ".bias")] if bias else []), transB=1)
    return g.op("Reshape", y, g.op("Concat", g.op("Shape", x, end=-1), g.ints(out_features), axis=0))


def last_axis(g: Nodes, x: str, start: int, end: int) -> str:
    """x[..., start:end]"""
    return g.op("Slice", x, g.ints(start), g.ints(end), g.ints(-1))


def rotate_half(g: Nodes, x: str, rotary: int) -> str:
    """cat(-x2, x1) over the last axis, x1 and x2 its halves."""
    x1, x2 = last_axis(g, x, 0, rotary // 2), last_axis(g, x, rotary // 2, rotary)
    return g.op("Concat", g.op("Neg", x2), x1, axis=-1)


def apply_rotary_pos_emb(g: Nodes, x: str, cos: str, sin: str, rotary: int, head_size: int) -> str:
    x_rot, x_pass = last_axis(g, x, 0, rotary), last_axis(g, x, rotary, head_size)
    x_embed = g.op("Add", g.op("Mul", x_rot, cos), g.op("Mul", rotate_half(g, x_rot, rotary), sin))
    return g.op("Concat", x_embed, x_pass, axis=-1)


def attention(g: Nodes, x: str, prefix: str, config, cos: str, sin: str, mask: str, rotary: int) -> str:
    """GPTNeoXAttention.forward with eager_attention_forward; x [B, T, H] -> [B, T, H]."""
    heads = config.num_attention_heads
    head_size = config.hidden_size // heads
    bias = config.attention_bias
    qkv = linear(g, x, prefix + ".query_key_value", bias)                    # [B, T, 3H]
    qkv = g.op("Reshape", qkv, g.ints(0, 0, heads, 3 * head_size))            # view(*input_shape, -1, 3 hd)
    qkv = g.op("Transpose", qkv, perm=[0, 2, 1, 3])                           # [B, heads, T, 3 hd]
    q, k, v = g.op("Split", qkv, g.ints(head_size, head_size, head_size), axis=-1, outputs=3)
    q = apply_rotary_pos_emb(g, q, cos, sin, rotary, head_size)
    k = apply_rotary_pos_emb(g, k, cos, sin, rotary, head_size)
    scores = g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2]))
    scores = g.op("Add", g.op("Mul", scores, g.const(head_size ** -0.5)), mask)
    probs = g.op("Softmax", scores, axis=-1)
    out = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])      # [B, T, heads, hd]
    out = g.op("Reshape", out, g.ints(0, 0, config.hidden_size))
    return linear(g, out, prefix + ".dense", bias)


def mlp(g: Nodes, x: str, prefix: str) -> str:
    """GPTNeoXMLP.forward; gelu as torch computes it: x * 0.5 * (1 + erf(x / sqrt 2))."""
    h = linear(g, x, prefix + ".dense_h_to_4h")
    erf = g.op("Erf", g.op("Mul", h, g.const(np.sqrt(0.5))))
    h = g.op("Mul", g.op("Mul", h, g.const(0.5)), g.op("Add", erf, g.const(1.0)))
    return linear(g, h, prefix + ".dense_4h_to_h")


def decoder_layer(g: Nodes, x: str, prefix: str, config, cos: str, sin: str, mask: str, rotary: int) -> str:
    """GPTNeoXLayer.forward."""
    eps = config.layer_norm_eps
    attn = attention(g, layer_norm(g, x, prefix + ".input_layernorm", eps), prefix + ".attention", config,
                     cos, sin, mask, rotary)
    if config.use_parallel_residual:
        mlp_out = mlp(g, layer_norm(g, x, prefix + ".post_attention_layernorm", eps), prefix + ".mlp")
        return g.op("Add", g.op("Add", mlp_out, attn), x)
    attn = g.op("Add", attn, x)
    mlp_out = mlp(g, layer_norm(g, attn, prefix + ".post_attention_layernorm", eps), prefix + ".mlp")
    return g.op("Add", mlp_out, attn)


def rotary_cos_sin(g: Nodes, positions: str, inv_freq: str) -> tuple:
    """GPTNeoXRotaryEmbedding.forward: cos and sin [T, rotary] of position * inv_freq (the
    attention scaling of the default rope is 1)."""
    freqs = g.op("Mul", g.op("Unsqueeze", g.op("Cast", positions, to=1), g.ints(1)), inv_freq)
    emb = g.op("Concat", freqs, freqs, axis=-1)
    return g.op("Cos", emb), g.op("Sin", emb)


def causal_padding_mask(g: Nodes, positions: str, attention_mask: str) -> str:
    """transformers' eager mask [B, 1, T, T]: 0 where key <= query and the key is a real token,
    float32's lowest value elsewhere (added to the scores before the softmax)."""
    causal = g.op("LessOrEqual", g.op("Unsqueeze", positions, g.ints(0)), g.op("Unsqueeze", positions, g.ints(1)))
    padding = g.op("Unsqueeze", g.op("Cast", attention_mask, to=9), g.ints(1, 2))   # [B, 1, 1, T]
    allowed = g.op("And", g.op("Unsqueeze", causal, g.ints(0, 1)), padding)
    return g.op("Where", allowed, g.const(0.0), g.const(np.finfo(np.float32).min))


def next_token_logprobs(g: Nodes, hidden: str, input_ids: str, lm_head: str) -> str:
    """[B, T-1]: log p(input_ids[t] | tokens < t), t = 1..T-1: the output layer on positions
    0..T-2 only, a float32 log-softmax, the target's entry."""
    logits = linear(g, g.op("Slice", hidden, g.ints(0), g.ints(-1), g.ints(1)), lm_head, bias=False)
    logprobs = g.op("LogSoftmax", logits, axis=-1)
    targets = g.op("Unsqueeze", g.op("Slice", input_ids, g.ints(1), g.ints(2**62), g.ints(1)), g.ints(-1))
    return g.op("Squeeze", g.op("GatherElements", logprobs, targets, axis=-1), g.ints(-1))


def pooled_and_nll(g: Nodes, hidden_states: list, logprobs: str, attention_mask: str, positions: str) -> list:
    """make_wrapper's PooledAndNll after the model: every layer pooled over the real tokens
    (mean, mean_skip_first, last) with one 0/1 weight matrix, the NLL summed over real tokens."""
    real = g.op("Greater", attention_mask, g.const(0, np.int64))                  # [B, T]
    n = g.op("ReduceSum", attention_mask, g.ints(1), keepdims=0)                   # [B]
    n_minus_1 = g.op("Sub", n, g.const(1, np.int64))
    skip = g.op("And", real, g.op("Unsqueeze", g.op("GreaterOrEqual", positions, g.const(1, np.int64)), g.ints(0)))
    last = g.op("Equal", g.op("Unsqueeze", positions, g.ints(0)), g.op("Unsqueeze", n_minus_1, g.ints(1)))
    rows = [g.op("Unsqueeze", m, g.ints(1)) for m in (real, skip, last)]
    weights = g.op("Cast", g.op("Concat", *rows, axis=1), to=1)                     # [B, 3, T]
    one = g.op("Add", g.op("Sub", n, n), g.const(1, np.int64))
    counts = g.op("Concat", *[g.op("Unsqueeze", c, g.ints(1)) for c in (n, n_minus_1, one)], axis=1)
    counts = g.op("Unsqueeze", g.op("Cast", g.op("Max", counts, g.const(1, np.int64)), to=1), g.ints(-1))
    keep = g.op("Unsqueeze", real, g.ints(-1))                                      # [B, T, 1]
    pooled = []
    for h in hidden_states:
        h32 = g.op("Where", keep, h, g.const(0.0))
        pooled.append(g.op("Unsqueeze", g.op("Div", g.op("MatMul", weights, h32), counts), g.ints(1)))
    predicted = g.op("Slice", real, g.ints(1), g.ints(2**62), g.ints(1))
    nll_sum = g.op("ReduceSum", g.op("Where", predicted, g.op("Neg", logprobs), g.const(0.0)), g.ints(1), keepdims=0)
    n_predicted = g.op("Max", n_minus_1, g.const(0, np.int64))
    return [g.op("Concat", *pooled, axis=1), nll_sum, n_predicted]


def build(model, streamed: dict, constants: dict, token_states: bool, opset: int) -> tuple:
    """(the ModelProto of model's graph, its Tensors): every weight an initializer named as its
    parameter, in order of first use, each an external reference to its place in
    model.onnx.data."""
    from onnx import TensorProto, helper

    from uatools.export.template import Tensor

    config = model.config
    g = Nodes(streamed)
    base = "model." + model.base_model_prefix
    head_size = config.hidden_size // config.num_attention_heads
    rotary = int(head_size * config.rope_parameters.get("partial_rotary_factor", 1.0))
    input_ids, attention_mask = INPUTS

    seq = g.op("Squeeze", g.op("Shape", input_ids, start=1, end=2), g.ints(0))
    positions = g.op("Range", g.const(0, np.int64), seq, g.const(1, np.int64))   # [T]
    inv_freq = g.const(constants[base + ".rotary_emb.inv_freq"].detach().cpu().numpy())
    cos, sin = rotary_cos_sin(g, positions, inv_freq)
    mask = causal_padding_mask(g, positions, attention_mask)

    h = g.op("Gather", g.weight(base + ".embed_in.weight"), input_ids, axis=0)
    hidden_states = [h]
    for i in range(config.num_hidden_layers):
        h = decoder_layer(g, h, f"{base}.layers.{i}", config, cos, sin, mask, rotary)
        hidden_states.append(h)
    hidden_states[-1] = layer_norm(g, h, base + ".final_layer_norm", config.layer_norm_eps)
    head = next(name for name, module in model.named_modules() if module is model.get_output_embeddings())
    logprobs = next_token_logprobs(g, hidden_states[-1], input_ids, f"model.{head}")

    if token_states:
        zeros = g.op("Mul", g.op("Cast", g.op("Slice", input_ids, g.ints(0), g.ints(1), g.ints(1)), to=1),
                     g.const(0.0))
        outputs = [g.op("Concat", *[g.op("Unsqueeze", h, g.ints(0)) for h in hidden_states], axis=0),
                   g.op("Concat", zeros, logprobs, axis=1)]
    else:
        outputs = pooled_and_nll(g, hidden_states, logprobs, attention_mask, positions)
    names = output_names(token_states)
    for node in g.nodes:  # the last nodes' outputs get the contract's names
        node.output[:] = [names[outputs.index(o)] if o in outputs else o for o in node.output]

    layers, hidden = config.num_hidden_layers + 1, config.hidden_size
    if token_states:
        shapes = {"hidden_states": (TensorProto.FLOAT, [layers, "batch", "seq", hidden]),
                  "token_logprobs": (TensorProto.FLOAT, ["batch", "seq"])}
    else:
        shapes = {"pooled": (TensorProto.FLOAT, ["batch", layers, 3, hidden]),
                  "nll_sum": (TensorProto.FLOAT, ["batch"]), "n_predicted": (TensorProto.INT64, ["batch"])}
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"]) for name in INPUTS]
    outs = [helper.make_tensor_value_info(name, *shapes[name]) for name in names]
    tensors, placeholders = [], []
    for name in g.weights:
        src = streamed[name]
        t = Tensor.placed(name, name, None, src, list(src.shape), after=tensors[-1].end if tensors else 0)
        tensors.append(t)
        placeholders.append(TensorProto(name=name, data_type=TensorProto.FLOAT, dims=t.shape,
                                        data_location=TensorProto.EXTERNAL))
        set_external_location(placeholders[-1], t)
    graph = helper.make_graph(g.nodes, "gpt_neox", inputs, outs, initializer=placeholders + g.constants)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="uatools")
    proto.ir_version = 8
    return proto, tensors


def set_external_location(init, tensor) -> None:
    """init's bytes are tensor's place in model.onnx.data."""
    for key, value in (("location", EXTERNAL_DATA_NAME), ("offset", tensor.offset), ("length", tensor.nbytes)):
        entry = init.external_data.add()
        entry.key, entry.value = key, str(value)


def template(model, streamed: dict, constants: dict, token_states: bool, opset: int, dims: dict):
    """The graph template of model's architecture (see the module's doc)."""
    from uatools.export.template import Template

    proto, tensors = build(model, streamed, constants, token_states, opset)
    check_graph_io(proto, token_states, dims, "float32")
    return Template(graph=proto.SerializeToString(), tensors=tensors, opset=opset)
