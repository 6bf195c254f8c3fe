"""Provenance: export.json (files, versions, dims, probes), reference.safetensors, and
the byte-stable writing of both."""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform

from uatools.export.common import FORMAT, INPUTS, POOLED_ORDER, ExportError, first_line, log
from uatools.export.graph import output_names
from uatools.files import sha256_file


def creation_time() -> str:
    """Now, or SOURCE_DATE_EPOCH (reproducible-builds convention) so fixtures rebuild byte-identical."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        when = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
    else:
        when = datetime.datetime.now(datetime.timezone.utc)
    return when.replace(microsecond=0).isoformat()


def file_entry(path: str) -> dict:
    return {"sha256": sha256_file(path), "bytes": os.path.getsize(path)}


def versions() -> dict:
    import onnx
    import torch
    import transformers

    v = {"python": platform.python_version(), "torch": torch.__version__,
         "transformers": transformers.__version__, "onnx": onnx.__version__}
    try:
        import onnxruntime

        v["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return v


def text_config(config):
    """The language model's own config: nested as text_config in multimodal checkpoints
    (Gemma 3 4B+, LLaVA-style), the config itself otherwise."""
    get = getattr(config, "get_text_config", None)
    cfg = get() if callable(get) else getattr(config, "text_config", None) or config
    return cfg


def model_dims(model) -> dict:
    cfg = text_config(model.config)
    return {"n_layers": int(cfg.num_hidden_layers), "hidden_size": int(cfg.hidden_size),
            "vocab_size": int(cfg.vocab_size), "max_positions": int(cfg.max_position_embeddings),
            # analyze orders models by size; counting here spares it parsing ONNX.
            "n_parameters": int(sum(p.numel() for p in model.parameters()))}


def adds_bos(tokenizer, texts) -> bool:
    """Whether the tokenizer prepends a special token (BOS) to every statement: then the
    seed's mean_skip_first drops that token, otherwise it drops the first word piece."""
    with_special = [list(tokenizer(t)["input_ids"]) for t in texts]
    without = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    prefixed = [len(a) > len(b) and a[len(a) - len(b):] == b and a[0] in tokenizer.all_special_ids
                for a, b in zip(with_special, without)]
    if any(prefixed) and not all(prefixed):
        raise ExportError("the tokenizer prepends a special token to some statements but not to others")
    return all(prefixed)


class OneForward:
    """The model as the seed functions see it while the probes are recorded: probe_record calls
    it three times on one statement (get_nll with labels, the poolings with
    output_hidden_states), and each call after the first on the same inputs gets the first
    one's output, which was computed with both (labels = input_ids, as get_nll asks, and every
    hidden state). A forward on the same inputs gives the same values, so the record is the
    three passes' with a third of their arithmetic."""

    def __init__(self, model):
        self.model, self.device, self.last = model, model.device, None

    def __call__(self, labels=None, output_hidden_states=False, **inputs):
        import torch

        if labels is not None and not torch.equal(labels, inputs["input_ids"]):
            return self.model(labels=labels, output_hidden_states=output_hidden_states, **inputs)
        key = {k: v.cpu().numpy().tobytes() + bytes(str(v.shape), "ascii") for k, v in sorted(inputs.items())}
        if self.last is None or self.last[0] != key:
            self.last = (key, self.model(labels=inputs["input_ids"], output_hidden_states=True, **inputs))
        return self.last[1]


def float64_model(model):
    """A float64 copy of `model` with the same (dtype-rounded) weights: run under
    float64_throughout, its outputs are the exact result, to float64's rounding, of the
    computation that the export's graph rounds in its dtype. 8 bytes a parameter: the fallback
    of float64_weights, for a family whose code reads a module's weights outside its forward."""
    import copy

    import torch

    return copy.deepcopy(model).to(torch.float64).eval()


# A linear layer whose float64 weight is larger (the output layer, and the MLP and attention
# projections of the larger sizes) is computed in blocks of its rows of about this size, so that
# no float64 copy of a 50k- or 256k-row matrix is ever made whole, and the float64 scratch
# memory stays small beside the weights (a 1.4B export peaked at 1.23x the weights with 128 MiB
# blocks, at 1.20x with these).
FLOAT64_BLOCK_BYTES = 16 * 2**20


def restore_tensors(module, saved: dict) -> None:
    """Undo float64_weights' swap of module's tensors (and an embedding's padding_idx)."""
    for key, value in saved.items():
        if key == "padding_idx":
            module.padding_idx = value
        else:
            getattr(module, key[0])[key[1]] = value


class Float64Scratch:
    """The float64 memory float64_weights copies modules' weights into, reused from module to
    module: fresh float64 copies of every module cost the 1.4B shape 7 CPU seconds of page
    faults. One buffer per depth of nested forwards (a module with weights inside another's
    forward) and one for the output layer's blocks. A buffer that a module's output still
    refers to (a forward that returns a view of its own weight) is left to that output and
    never handed out again."""

    def __init__(self):
        self.buffers = {}

    def copy(self, slot, values: list) -> list:
        """Float64 copies of `values` (tensors), in slot's buffer."""
        import torch

        need = sum(v.numel() for v in values)
        key = (slot, values[0].device)  # a hooked module has at least one floating tensor
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < need:
            buf = self.buffers[key] = torch.empty(need, dtype=torch.float64, device=key[1])
        copies, offset = [], 0
        for v in values:
            copies.append(buf[offset:offset + v.numel()].view(v.shape).copy_(v))
            offset += v.numel()
        return copies

    def release_if_held(self, slot, out) -> None:
        """Forget slot's buffer where a tensor in `out` (any nesting) shares its memory."""
        import torch
        from torch.utils._pytree import tree_leaves

        held = {t.untyped_storage().data_ptr() for t in tree_leaves(out) if isinstance(t, torch.Tensor)}
        for key in [k for k, buf in self.buffers.items() if k[0] == slot and buf.untyped_storage().data_ptr() in held]:
            del self.buffers[key]


def blockwise_float64(linear, scratch: Float64Scratch):
    """A forward for the nn.Linear `linear` that computes in float64 from float64 copies of
    FLOAT64_BLOCK_BYTES of its rows at a time (each block's output features written into the
    whole output in place, not concatenated from a list: the 262k-column output layer's float64
    logits are held once)."""
    import torch

    def forward(x):
        w, b = linear.weight, linear.bias
        rows = max(1, FLOAT64_BLOCK_BYTES // (w.shape[1] * 8))
        out = torch.empty((*x.shape[:-1], w.shape[0]), dtype=torch.float64, device=x.device)
        for i in range(0, w.shape[0], rows):
            block = [w[i:i + rows].detach()] + ([] if b is None else [b[i:i + rows].detach()])
            out[..., i:i + rows] = torch.nn.functional.linear(x, *scratch.copy("blocks", block))
        return out
    return forward


@contextlib.contextmanager
def float64_weights(model):
    """`model` computing with float64 weights, without a float64 copy of it: each module that
    holds floating-point parameters or buffers gets float64 copies of its own just around its
    forward (hooks; the originals back after), in memory reused from module to module
    (Float64Scratch), so at most one module's weights are held twice.
    Two modules are never copied whole: an embedding gathers, in float64, only the rows its
    input reads (the ids renumbered into them), and a large nn.Linear (the output layer)
    computes its float64 output in blocks of FLOAT64_BLOCK_BYTES of rows. The values are those
    of float64_model's copy (converting float32 to float64 is exact; gathering and splitting the
    output columns change no arithmetic), under float64_throughout just the same."""
    import torch

    handles, overrides, swapped = [], [], []
    scratch = Float64Scratch()

    def swap(module, names, gather=False):
        def pre(mod, args, kwargs):
            rows = None
            if gather:
                rows, renumbered = torch.unique(args[0] if args else kwargs["input"], return_inverse=True)
            saved, values = {}, []
            for kind, name in names:
                table = getattr(mod, kind)
                saved[kind, name] = table[name]
                value = table[name].detach()
                values.append(value[rows] if rows is not None and (kind, name) == ("_parameters", "weight") else value)
            depth = len(swapped)
            for (kind, name), value in zip(names, scratch.copy(depth, values)):
                getattr(mod, kind)[name] = (torch.nn.Parameter(value, requires_grad=False)
                                            if kind == "_parameters" else value)
            swapped.append((mod, saved))
            if rows is None:
                return None
            saved["padding_idx"] = mod.padding_idx
            mod.padding_idx = None  # an index into the whole table, not into the rows gathered
            if args:
                return (renumbered, *args[1:]), kwargs
            return args, {**kwargs, "input": renumbered}

        def post(mod, args, kwargs, out):
            restore_tensors(*swapped.pop())
            scratch.release_if_held(len(swapped), out)
            return out

        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post, with_kwargs=True, always_call=True))

    for module in model.modules():
        names = [("_parameters", n) for n, p in module._parameters.items() if p is not None and p.is_floating_point()]
        names += [("_buffers", n) for n, b in module._buffers.items() if b is not None and b.is_floating_point()]
        if not names:
            continue
        params = [n for kind, n in names if kind == "_parameters"]
        if (type(module).forward is torch.nn.Linear.forward and set(names) <= {("_parameters", "weight"), ("_parameters", "bias")}
                and module.weight.numel() * 8 > FLOAT64_BLOCK_BYTES):
            module.forward = blockwise_float64(module, scratch)
            overrides.append(module)
        elif isinstance(module, torch.nn.Embedding) and params == ["weight"] and module.max_norm is None:
            swap(module, names, gather=True)
        else:
            swap(module, names)
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()
        for module in overrides:
            del module.forward
        while swapped:
            restore_tensors(*swapped.pop())


def float64_throughout():
    """A torch dispatch mode under which every op asked for a float32, float16 or bfloat16
    result gives float64 instead. transformers casts down in places whatever the model dtype
    (the rotary embedding's .to(torch.float), Gemma's RMSNorm's .float(), eager attention's
    softmax, the loss' upcast), which would round a float64 model back to float32 there."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    narrow = (torch.float32, torch.float16, torch.bfloat16)

    class Float64Throughout(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if kwargs.get("dtype") in narrow:
                kwargs["dtype"] = torch.float64
            return func(*args, **kwargs)

    return Float64Throughout()


def float64_values(text: str, model64, tokenizer) -> dict:
    """What the seed's functions give for `text` (batch 1: get_nll's loss with labels =
    input_ids, the poolings of POOLED_ORDER at every layer, float64 [n_layers+1, hidden]), from
    the float64 model (float64_model or float64_weights) in float64 throughout:
    float64_batch_values of the one text."""
    return float64_batch_values([text], model64, tokenizer)[0]


def float64_batch_values(texts: list, model64, tokenizer) -> list:
    """float64_values of each of `texts`, from ONE forward of the float64 model over them all,
    right-padded (padding id 0, attention_mask 0 on the pads): under float64_weights each
    module's weights are then converted to float64 once for all the texts, not once per text,
    the bulk of the cost for a large model. A row's values are those of its text alone:
    attention is causal and the position ids count from 0 along the sequence whatever the mask
    (transformers' GPT-NeoX, Llama, Gemma 3), so a real token sees only the real tokens before
    it, the pads after it add nothing to any of them, and only the real tokens are read back.
    The NLL is computed here, not by the model's loss (labels would average it over the whole
    batch): the mean over t = 1..n-1 of -log p(ids[t] | ids[<t]), log_softmax in float64 over
    the vocabulary, what get_nll's loss gives for the text alone; nan where n == 1, as that loss
    over no token is."""
    import numpy as np
    import torch

    from uatools.export.graph import right_padded_ids

    input_ids, attention_mask, lengths = right_padded_ids(
        [list(tokenizer(t)["input_ids"]) for t in texts], model64.device)
    with torch.no_grad(), float64_throughout():
        out = model64(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        nlls = [-torch.log_softmax(out.logits[row, :n - 1].to(torch.float64), dim=-1)
                .gather(-1, input_ids[row, 1:n, None]).mean() for row, n in enumerate(lengths)]
    out.logits = None  # [batch, seq, vocab] in float64: not held beside what follows
    # Layer by layer, not stacked: a stacked copy of every float64 state was the peak of a 1.4B export.
    pooled = [{"mean_skip_first": [], "mean": [], "last": []} for _ in lengths]
    for layer in out.hidden_states:  # [batch, seq, hidden] each
        layer = layer.cpu().numpy()
        for row, n in enumerate(lengths):
            h = layer[row, :n]  # the row's real tokens: [n, hidden]
            pooled[row]["mean_skip_first"].append(h[1:].mean(axis=0))
            pooled[row]["mean"].append(h.mean(axis=0))
            pooled[row]["last"].append(h[-1])
    return [{"nll": float(nlls[row].item()), **{k: np.stack(v) for k, v in pooled[row].items()}}
            for row in range(len(lengths))]


def float64_record(probe: dict, values: dict) -> dict:
    """One probe's "float64": its float64_values, and "transformers_error": the error of the
    probe's values (transformers' in the export dtype) against them, per pooling and layer,
    by the parity rule."""
    import numpy as np

    from uatools import parity

    values = dict(values)
    errors = {"nll": parity.nll_error(probe["nll"], values["nll"])}
    for key in POOLED_ORDER:
        errors[key] = parity.vector_errors(np.asarray(probe[key]), values[key]).tolist()
        values[key] = values[key].tolist()
    return {**values, "transformers_error": errors}


def add_float64_probes(probes: list, model, tokenizer) -> list:
    """The probes with their "float64" records (see float64_record), all computed in one
    forward (float64_batch_values) with float64 weights module by module (float64_weights), so
    that each module's weights are converted once. A family whose code reads a module's weights
    outside that module's forward fails there (float64 meets float32 in a matrix product): then
    they are computed again, in one forward too, from a float64 copy of the whole model
    (float64_model), which lives only while they are."""
    if not probes:
        return []
    texts = [p["text"] for p in probes]
    values = None
    try:
        with float64_weights(model) as model64:
            values = float64_batch_values(texts, model64, tokenizer)
    except RuntimeError as e:
        log(f"  float64 weights module by module failed ({first_line(e)}); "
            "from a float64 copy of the whole model instead")
    if values is None:  # the copy made outside the except block, which holds the failed forward's frames
        model64 = float64_model(model)
        try:
            values = float64_batch_values(texts, model64, tokenizer)
        finally:
            del model64
    return [{**p, "float64": float64_record(p, v)} for p, v in zip(probes, values)]


def external_data_files(onnx_path: str) -> list:
    """Every external-data file the graph refers to (relative names), in order of first use."""
    import onnx

    proto = onnx.load(onnx_path, load_external_data=False)
    names = []

    def visit(graph):
        tensors = list(graph.initializer) + [a.t for n in graph.node for a in n.attribute if a.HasField("t")]
        for t in tensors:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                loc = next((e.value for e in t.external_data if e.key == "location"), None)
                if loc and loc not in names:
                    names.append(loc)
        for n in graph.node:
            for a in n.attribute:
                if a.HasField("g"):
                    visit(a.g)
                for g in a.graphs:
                    visit(g)

    visit(proto.graph)
    return names


def model_files(out_dir: str) -> dict:
    """export.json's "files": everything extract reads from the model dir, with sha256 and size."""
    onnx_path = os.path.join(out_dir, "model.onnx")
    names = ["model.onnx", *external_data_files(onnx_path), "tokenizer.json", "config.json"]
    files = {}
    for name in names:
        path = os.path.join(out_dir, name)
        if not os.path.isfile(path):
            raise ExportError(f"{path}: missing (the graph or the contract refers to it)")
        files[name] = file_entry(path)
    return files


def export_json(args, dims: dict, opset: int, files: dict, probes: list, created: str, bos: bool,
                source: dict) -> dict:
    """dims: model_dims'; files: model_files' (or the same entries, made while writing);
    source: uatools.export.source.source_record's (model, revision, commit, commit_reason, weights)."""
    return {
        "format": FORMAT,
        "source": source,
        "dtype": args.dtype,
        "device": args.device,
        "exporter": args.exporter,
        "opset": opset,
        "versions": versions(),
        **dims,
        "inputs": list(INPUTS),
        "outputs": output_names(args.token_states),
        **({} if args.token_states else {"pooled_order": list(POOLED_ORDER)}),
        "adds_bos": bos,
        "files": files,
        "created": created,
        "probes": probes,
    }


def write_json_atomic(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def write_reference(dataset_path: str, out_dir: str, model, tokenizer, dtype: str, device: str) -> int:
    """reference.safetensors: the seed method's values for every statement, batch 1."""
    import torch
    import transformers
    from safetensors.numpy import save_file

    from uatools.seed import reference as seedref

    try:
        dataset = seedref.load_dataset(dataset_path)
        statements = list(seedref.iter_statements(dataset))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ExportError(f"{dataset_path}: not a dataset in the seed's schema ({first_line(e)})") from e
    max_pos = model_dims(model)["max_positions"]
    for i, s in enumerate(statements):
        n = len(tokenizer(s.text)["input_ids"])
        if n < 2 or n > max_pos:
            raise ExportError(f"{dataset_path}: statement {i} ({s.category} pair {s.pair_index} {s.side}) has "
                              f"{n} tokens; the seed method needs 2..{max_pos}")

    def progress(done, total):
        if done % 50 == 0 or done == total:
            log(f"  reference {done}/{total}")

    arrays = seedref.reference_arrays(statements, model, tokenizer, progress)
    metadata = {
        "dataset_sha256": sha256_file(dataset_path),
        "n_statements": str(len(statements)),
        # The name the committed fixtures carry (now uatools.seed.reference): kept, so rebuilds stay byte-identical.
        "produced_by": (f"scripts/seedref.py seed get_layer_embeddings(layer_step=1) and get_nll, batch 1, "
                        f"transformers {transformers.__version__}, torch {torch.__version__}, {dtype}, {device}"),
    }
    path = os.path.join(out_dir, "reference.safetensors")
    save_file(arrays, path + ".tmp", metadata=metadata)
    sort_safetensors_header(path + ".tmp")
    os.replace(path + ".tmp", path)
    return len(statements)


def sort_safetensors_header(path: str) -> None:
    """Rewrite the header JSON with sorted keys so reruns give identical bytes.

    safetensors serialises __metadata__ from a hash map, so its key order changes from run
    to run. Same keys and values -> same length, so the data offsets stay valid.
    """
    import struct

    with open(path, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        sorted_header = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
        if len(sorted_header) > n:
            raise ExportError(f"{path}: unexpected safetensors header size")
        f.seek(8)
        f.write(sorted_header.ljust(n, b" "))
