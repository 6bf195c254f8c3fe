"""The graph template: a model's ONNX graph without its weights, traced once per architecture.

A checkpoint's graph depends on its config, the export options and the tool versions, never on
its weights, so the export traces a copy of the model whose parameters live on torch's meta
device (no values, no memory) and keeps what comes out as a template: the graph proto, in
which every weight-derived initializer is an external reference into model.onnx.data (offset,
length), and the list of those tensors in the graph's initializer order with the parameter each
one is read from ("recipe"). Writing an export is then copying the proto and streaming the
checkpoint's tensors into model.onnx.data in that order (uatools.export.weights).

Tracing without values also keeps the graph honest: with real weights the optimizer merges
initializers that happen to be equal (the zero biases of a fresh model, the unit layer-norm
gains of a step-0 checkpoint), so a traced-with-weights graph can differ between two
checkpoints of one architecture. The one folding it did on weights, Transpose of a parameter
that nothing else reads (the MatMul weights), is done here as a recipe (parameter + perm), so
the graph holds the same pre-transposed tensors as before and ONNX Runtime has none to fold
at session start. Non-persistent buffers (rotary inv_freq) are functions of the config: their
values are taken from the loaded model and stay in the proto.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass

from uatools.export.common import EXTERNAL_DATA_NAME, INPUTS, ExportError
from uatools.export.graph import check_graph_io, make_wrapper, opset_of, output_names

TEMPLATE_FORMAT = "ua-graph-template/1"
GRAPH = "model.onnx"
LAYOUT = "layout.json"
# The folder that holds the package uatools, for the trace's own process.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The traced example: two rows so no axis is 1; values do not exist on the meta device, so
# only the shape matters, and any shape gives the same graph (both axes are dynamic).
EXAMPLE_SHAPE = (2, 12)
# Every tensor starts at a multiple of the page size in model.onnx.data: ONNX Runtime's CPU
# provider then maps the file's pages rather than reading each tensor into memory of its own,
# so a session over a just-written export holds no second copy of the weights (the gaps are
# zeros, at most a page per tensor).
DATA_ALIGNMENT = 4096


@dataclass
class Tensor:
    """One weight-derived initializer: where its bytes go and where they come from."""
    name: str          # the initializer's name in the graph
    source: str        # the wrapper's parameter or persistent buffer it is read from
    perm: list | None  # transpose applied to the source (the folded Transpose), or None
    dtype: str         # torch dtype name of the bytes written (the source's)
    shape: list        # shape of the initializer (after perm)
    offset: int        # in model.onnx.data
    nbytes: int

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def placed(cls, name: str, source: str, perm, src, shape: list, after: int) -> Tensor:
        """The initializer `name` read from the torch tensor `src`, at the first multiple of
        DATA_ALIGNMENT at or after byte `after` of model.onnx.data."""
        return cls(name=name, source=source, perm=perm, dtype=str(src.dtype).removeprefix("torch."), shape=shape,
                   offset=-(-after // DATA_ALIGNMENT) * DATA_ALIGNMENT, nbytes=src.numel() * src.element_size())

    @property
    def end(self) -> int:
        return self.offset + self.nbytes


@dataclass
class Template:
    graph: bytes       # the serialized ModelProto, weights as external references
    tensors: list      # [Tensor], the graph's initializer order
    opset: int

    @property
    def data_bytes(self) -> int:
        return self.tensors[-1].end if self.tensors else 0

    def layout(self) -> dict:
        return {"format": TEMPLATE_FORMAT, "graph_sha256": hashlib.sha256(self.graph).hexdigest(),
                "graph_bytes": len(self.graph), "opset": self.opset,
                "tensors": [t.to_json() for t in self.tensors]}

    @classmethod
    def from_layout(cls, layout: dict, graph: bytes) -> Template:
        return cls(graph=graph, tensors=[Tensor(**t) for t in layout["tensors"]], opset=int(layout["opset"]))


def meta_model(config, dtype: str):
    """The architecture config describes, with every parameter and buffer on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, attn_implementation="eager",
                                                dtype=getattr(torch, dtype)).eval()


def trace_program(model, token_states: bool, opset: int, example=None):
    """The dynamo exporter's ONNXProgram of the wrapper around model, unoptimized; example: the
    inputs traced (default: EXAMPLE_SHAPE on the meta device, for a model there)."""
    import torch

    wrapper = make_wrapper(model, token_states)
    if example is None:
        example = tuple(torch.ones(EXAMPLE_SHAPE, dtype=torch.int64, device="meta") for _ in INPUTS)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    with torch.no_grad(), warnings.catch_warnings():
        # "axis name X will not be used": dynamo renaming noise; the axes are checked after.
        warnings.filterwarnings("ignore", message=".*axis name.*")
        return torch.onnx.export(
            wrapper, example, dynamo=True, opset_version=opset, verbose=False, optimize=False,
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
            input_names=list(INPUTS), output_names=output_names(token_states))


def weight_sources(model) -> tuple:
    """(streamed, constants) of the wrapper (names prefixed "model."): streamed are the tensors
    a checkpoint holds (parameters and persistent buffers, tied names included), constants the
    non-persistent buffers, functions of the config."""
    prefix = "model."
    streamed = {prefix + n: t for n, t in model.named_parameters(remove_duplicate=False)}
    persistent = set(model.state_dict().keys())
    constants = {}
    for n, b in model.named_buffers(remove_duplicate=False):
        (streamed if n in persistent else constants)[prefix + n] = b
    return streamed, constants


def bind_values(program, streamed: dict, constants: dict) -> None:
    """Streamed initializers get no value (the optimizer cannot fold or merge them), constants
    their real one; an initializer that is neither (a tensor the trace made up) is refused."""
    from torch.onnx._internal.exporter._core import TorchTensor

    for name, value in program.model.graph.initializers.items():
        if name in streamed:
            value.const_value = None
        elif name in constants:
            value.const_value = TorchTensor(constants[name].detach().cpu(), name)
        else:
            raise ExportError(f"the traced graph holds an initializer {name!r} that is neither a parameter nor "
                              "a buffer of the model; this family needs --exporter torchscript")


def fold_transposes(graph, streamed: dict) -> dict:
    """Transpose(parameter), where the Transpose is the parameter's only reader, becomes an
    initializer of its own (as the optimizer folds it with values): {initializer: (source, perm)}."""
    import onnx_ir as ir

    recipes = {}
    for node in list(graph):
        if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 1:
            continue
        src = node.inputs[0]
        if src is None or src.name not in streamed or not src.is_initializer() or len(src.uses()) != 1:
            continue
        perm = [int(i) for i in node.attributes["perm"].as_ints()]
        out = node.outputs[0]
        folded = ir.Value(name=out.name, shape=out.shape, type=out.type,
                          const_value=ir.ExternalTensor(EXTERNAL_DATA_NAME, 0, 0, src.dtype,
                                                        shape=out.shape, name=out.name))
        out.replace_all_uses_with(folded)
        graph.remove(node, safe=True)
        del graph.initializers[src.name]
        graph.register_initializer(folded)
        recipes[out.name] = (src.name, perm)
    return recipes


def clear_metadata(model) -> None:
    """The exporter's per-node provenance (fx node, stack traces with local paths) is never
    written: it triples a small model's file and makes bytes machine-dependent."""
    import onnx_ir as ir

    graphs = [model.graph, *model.functions.values()]
    for g in graphs:
        for node in ir.traversal.RecursiveGraphIterator(g):
            node.metadata_props.clear()
            node.doc_string = None
            for out in node.outputs:
                out.metadata_props.clear()
    for value in [*model.graph.inputs, *model.graph.outputs, *model.graph.initializers.values()]:
        value.metadata_props.clear()
    model.doc_string = None


def layout_tensors(graph, streamed: dict, recipes: dict) -> list:
    """Every weight-derived initializer in graph order as a Tensor, in model.onnx.data at the
    next multiple of DATA_ALIGNMENT; its value in the graph becomes the external reference."""
    import onnx_ir as ir

    tensors = []
    for name, value in graph.initializers.items():
        if name in recipes:
            source, perm = recipes[name]
        elif name in streamed:
            source, perm = name, None
        else:
            continue
        src = streamed[source]
        shape = [int(d) for d in (src.shape if perm is None else [src.shape[i] for i in perm])]
        if list(value.shape.numpy()) != shape:
            raise ExportError(f"initializer {name} has shape {list(value.shape.numpy())}, its source {source} "
                              f"{shape}{'' if perm is None else f' after transposing by {perm}'}")
        t = Tensor.placed(name, source, perm, src, shape, after=tensors[-1].end if tensors else 0)
        tensors.append(t)
        value.const_value = ir.ExternalTensor(EXTERNAL_DATA_NAME, t.offset, t.nbytes, value.dtype,
                                              shape=ir.Shape(shape), name=name)
    return tensors


def trace_template(config, dtype: str, token_states: bool, opset: int, dims: dict, constants: dict) -> Template:
    """Trace the graph of config's architecture without weights (see the module's doc); constants:
    the loaded model's non-persistent buffers (weight_sources' second part), by name."""
    import onnx_ir as ir

    model = meta_model(config, dtype)
    program = trace_program(model, token_states, opset)
    wrapper_sources = weight_sources(model)
    missing = sorted(set(wrapper_sources[1]) - set(constants))
    if missing:
        raise ExportError(f"the model's buffers {', '.join(missing)} were not given to the trace")
    bind_values(program, wrapper_sources[0], constants)
    # The optimizer warns once per initializer without a value that it cannot deduplicate it.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        program.optimize()
    finally:
        logging.disable(previous)
    graph = program.model.graph
    recipes = fold_transposes(graph, wrapper_sources[0])
    clear_metadata(program.model)
    tensors = layout_tensors(graph, wrapper_sources[0], recipes)
    proto = ir.serde.serialize_model(program.model)
    check_graph_io(proto, token_states, dims, dtype)
    return Template(graph=proto.SerializeToString(), tensors=tensors, opset=opset_of(proto))


def trace_with_weights(model, example, token_states: bool, opset: int, out_dir: str, external: bool, dims: dict,
                       dtype: str) -> int:
    """The fallback for a model whose template fails (its trace on the meta device, or its
    weights against the template): the dynamo exporter's trace of the loaded model itself,
    optimized with its values (which may fold and merge weights, so the graph is no template for
    another checkpoint and is not kept), saved as out_dir/model.onnx (+ model.onnx.data when
    external). Returns its opset."""
    import onnx

    program = trace_program(model, token_states, opset, example)
    program.optimize()
    clear_metadata(program.model)
    dest = os.path.join(out_dir, GRAPH)
    for stale in (dest, os.path.join(out_dir, EXTERNAL_DATA_NAME)):
        if os.path.exists(stale):
            os.unlink(stale)
    # ONNXProgram.save names the external file "<basename>.data" = model.onnx.data.
    program.save(dest, external_data=external)
    del program
    proto = onnx.load(dest, load_external_data=False)
    check_graph_io(proto, token_states, dims, dtype)
    return opset_of(proto)


def save_template(template: Template, folder: str, extra: dict | None = None) -> None:
    """folder/model.onnx and folder/layout.json (the graph cache's entry), each synced."""
    from uatools.export.weights import write_synced

    write_synced(os.path.join(folder, GRAPH), template.graph)
    layout = {**template.layout(), **(extra or {})}
    write_synced(os.path.join(folder, LAYOUT), (json.dumps(layout, indent=1) + "\n").encode("utf-8"))


def load_template(folder: str):
    """(Template, None) from folder, or (None, why) when it is absent (why None) or damaged."""
    try:
        with open(os.path.join(folder, LAYOUT), encoding="utf-8") as f:
            layout = json.load(f)
        with open(os.path.join(folder, GRAPH), "rb") as f:
            graph = f.read()
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as e:
        return None, f"unreadable ({e})"
    if not isinstance(layout, dict) or layout.get("format") != TEMPLATE_FORMAT:
        return None, f"format {layout.get('format') if isinstance(layout, dict) else None!r}, not {TEMPLATE_FORMAT}"
    if hashlib.sha256(graph).hexdigest() != layout.get("graph_sha256"):
        return None, f"{GRAPH} does not match the sha256 in {LAYOUT}"
    try:
        return Template.from_layout(layout, graph), None
    except (KeyError, TypeError, ValueError) as e:
        return None, f"{LAYOUT} is malformed ({e})"


class TraceJob:
    """The trace, in a process of its own (python -m uatools.export.template REQUEST FOLDER), so
    that it runs beside the probes' forward passes: the tracer holds the interpreter's lock
    almost all the time, the forward passes almost never, and the exporter's global state
    (torch.onnx.is_in_onnx_export) must not leak into the probes."""

    def __init__(self, config, constants: dict, dtype: str, token_states: bool, opset: int, dims: dict):
        """constants: weight_sources' second part, taken while no forward pass runs (the float64
        probes swap a module's buffers for float64 copies during its forward)."""
        self.request = {"config": config, "dtype": dtype, "token_states": token_states, "opset": opset,
                        "dims": dims, "constants": {n: b.detach().cpu() for n, b in constants.items()}}
        self.proc = None
        self.cancelled = False

    def run(self) -> Template:
        import subprocess

        import torch

        with tempfile.TemporaryDirectory(prefix="ua-trace-") as tmp:
            request = os.path.join(tmp, "request.pt")
            torch.save(self.request, request)
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                [PACKAGE_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]))
            self.proc = subprocess.Popen([sys.executable, "-m", "uatools.export.template", request, tmp],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            if self.cancelled:
                self.proc.kill()
            _, err = self.proc.communicate()
            if self.proc.returncode != 0:
                lines = [line for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
                raise ExportError(f"tracing the graph failed: {lines[-1] if lines else f'exit {self.proc.returncode}'}")
            template, damage = load_template(tmp)
            if template is None:
                raise ExportError(f"the trace wrote no graph template ({damage or 'nothing in its folder'})")
            return template

    def cancel(self) -> None:
        self.cancelled = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()


def child_main(argv) -> int:
    import torch

    request_path, folder = argv
    request = torch.load(request_path, weights_only=False)
    try:
        template = trace_template(request["config"], request["dtype"], request["token_states"],
                                  request["opset"], request["dims"], request["constants"])
    except ExportError as e:
        print(f"{e}", file=sys.stderr)
        return 1
    save_template(template, folder)
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
