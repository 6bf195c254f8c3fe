"""Export a Hugging Face causal LM (Pythia/GPT-NeoX, Gemma 3, LLaMA, ...) to the ONNX model dir that extract reads.

Writes into --out:
  model.onnx            graph: (input_ids, attention_mask) -> (pooled, nll_sum, n_predicted),
                        or with --token-states -> (hidden_states, token_logprobs)
  model.onnx.data       weights, when the model is over 64 MiB (a session is created faster
                        from them; over 2 GB protobuf allows nothing else)
  tokenizer.json        the fast tokenizer's backend; Rust `tokenizers`
                        encode(text, add_special_tokens=true) == transformers tokenizer(text)
  config.json           the model's transformers config
  export.json           provenance ("source": model, revision, commit (the Hub commit the revision
                        resolved to; null with "commit_reason" for a local folder), "weights"
                        (sha256 and size of every weight file read, by name)), sha256 and size
                        of every file extract reads ("files":
                        model.onnx, its external data, tokenizer.json, config.json),
                        "outputs" (the graph's output names, which say its layout),
                        "pooled_order" (reduced graph only), "adds_bos" (the tokenizer
                        prepends a special token to every statement), and seed-method
                        probe values for parity checks
  reference.safetensors only with --reference-dataset: seed values for every statement

The graph is made once per architecture and kept in the graph cache (--graph-cache,
$UA_GRAPH_CACHE, ~/.cache/ua-scaling/graphs; see uatools.export.graph_cache): a GPT-NeoX (Pythia)
graph in float32 is written node by node from the config (uatools.export.gpt_neox_graph, in
milliseconds; --trace-graph traces it instead), any other is traced by the dynamo exporter with
the weights on torch's meta device. Every export writes the proto as cached and streams its own
model's tensors into model.onnx.data (uatools.export.weights). Where that fails for a model
(its trace without weights, or its weights against the graph), the graph is traced with the
loaded weights instead (one log line says so) and not kept.

Graph contract (extract depends on it exactly):
  inputs   input_ids int64 [batch, seq], attention_mask int64 [batch, seq] (1 = token,
           0 = padding; extract pads on the right, so a row's n real tokens are
           positions 0..n-1); both axes dynamic.
  outputs, default (reduced in the graph; no token-level tensor leaves it):
           pooled float32 [batch, n_layers+1, 3, hidden]: layer l is transformers'
             hidden_states[l] (0 = embeddings, last = after the final layer norm) pooled
             over the row's real tokens, in export.json's "pooled_order":
             0 = mean (tokens 0..n-1), 1 = mean_skip_first (tokens 1..n-1; zeros when
             n == 1), 2 = last (token n-1). Every layer is cast to float32 before any
             sum, whatever the model dtype, and padded positions are zeroed first.
           nll_sum float32 [batch]: -sum_{t=1}^{n-1} log p(input_ids[t] | tokens < t),
             log-softmax over float32 logits (as transformers' loss upcasts); 0 when n == 1.
           n_predicted int64 [batch]: n - 1 (0 when n == 1), so nll_sum / n_predicted is
             transformers' loss with labels = input_ids.
  outputs, with --token-states (every token's state leaves the graph; extract pools
           on the host):
           hidden_states [n_layers+1, batch, seq, hidden] in the model dtype (transformers'
           output_hidden_states stacked: 0 = embeddings, last = after the final layer norm);
           token_logprobs float32 [batch, seq]: log p(input_ids[t] | tokens < t) for t >= 1,
           0.0 at t = 0, so mean over t=1..n-1 of -token_logprobs is transformers' loss.
"""
from __future__ import annotations

import gc
import os
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from uatools.export import gpt_neox_graph
from uatools.export.common import (
    DEFAULT_OPSET,
    DEFAULT_PROBES,
    EXTERNAL_DATA_NAME,
    EXTERNAL_DATA_THRESHOLD,
    FORMAT,
    INPUTS,
    POOLED_ORDER,
    REDUCED_OUTPUTS,
    ExportError,
    first_line,
    log,
    parity,
)
from uatools.export.graph import (
    check_graph_io,
    export_torchscript,
    make_wrapper,
    opset_of,
    parameter_bytes,
    right_padded_batch,
    right_padded_ids,
)
from uatools.export.graph_cache import ENV as GRAPH_CACHE_ENV
from uatools.export.graph_cache import cached_template, default_root, key_of, make_root
from uatools.export.meta import (
    OneForward,
    add_float64_probes,
    adds_bos,
    creation_time,
    export_json,
    file_entry,
    model_dims,
    model_files,
    write_json_atomic,
    write_reference,
)
from uatools.export.source import source_record
from uatools.export.template import TraceJob, trace_with_weights, weight_sources
from uatools.export.verify import (
    compare_with_probes,
    fmt,
    ort_session,
    run_ort,
    torch_reference,
    verification_skip_reason,
    verify,
)
from uatools.export.weights import write_model

# What scripts/make-fixtures and scripts/make-shape-graph use of the export, besides run and parse_args.
__all__ = [
    "DEFAULT_PROBES", "EXTERNAL_DATA_NAME", "FORMAT", "INPUTS", "POOLED_ORDER", "REDUCED_OUTPUTS", "ExportError",
    "check_graph_io", "compare_with_probes", "creation_time", "main", "model_files", "ort_session", "parity",
    "parse_args", "right_padded_ids", "run", "run_ort", "write_json_atomic",
]
import argparse


def looks_like_path(model: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else with path syntax is meant as a dir.
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        return True
    # "dir/name" where dir exists locally is a missing checkpoint, not a hub id.
    return "/" in model and os.path.isdir(model.split("/", 1)[0])


def check_model_source(model: str) -> None:
    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "config.json")):
            raise ExportError(f"{model}: not a transformers checkpoint (no config.json)")
    elif os.path.exists(model):
        raise ExportError(f"{model}: not a directory")
    elif looks_like_path(model):
        raise ExportError(f"{model}: model directory not found")


def check_device_dtype(device: str, dtype: str) -> None:
    import torch

    if device == "cpu" and dtype == "float16":
        raise ExportError("--dtype float16 needs --device cuda: torch's CPU float16 kernels are slow "
                          "and not what the seed ran (float16 on GPU); use --dtype float32 on CPU")
    if device == "cuda" and not torch.cuda.is_available():
        raise ExportError("--device cuda requested but torch sees no CUDA device "
                          f"(torch {torch.__version__}, CUDA build {torch.version.cuda})")


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16}[name]


def load_model_and_tokenizer(model_id: str, revision, dtype: str, device: str):
    """Load as the seed does, with eager attention (the exporters trace it reliably)."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # transformers 5 renamed torch_dtype to dtype; keep working with 4.x too.
    dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(
            model_id, revision=revision, attn_implementation="eager", **{dtype_kw: torch_dtype(dtype)})
    except OSError as e:
        raise ExportError(f"cannot load {model_id}: {first_line(e)}") from e
    model = model.to(device).eval()
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{model_id}: no fast tokenizer (tokenizer.json) available; extract needs one")
    return model, tokenizer


def log_source(source: dict) -> None:
    log(f"  commit {source['commit']}" if source["commit"] else f"  commit unknown: {source['commit_reason']}")
    for name, entry in source["weights"].items():
        log(f"  weights {name} sha256 {entry['sha256']}")
    if not source["weights"]:
        log("  weights: no model.safetensors, pytorch_model.bin or shard index found; none recorded")


def save_tokenizer(tokenizer, path: str, check_texts) -> None:
    """Save the backend tokenizer and prove Rust-side encoding equals transformers'.

    Rust's `tokenizers` crate reads exactly this file; encode(text, add_special_tokens=true)
    applies the saved post-processor, which is where a BOS/EOS would come from. transformers
    may wrap the backend (e.g. add_bos_token), so compare rather than assume.
    """
    from tokenizers import Tokenizer

    tokenizer.backend_tokenizer.save(path)
    reloaded = Tokenizer.from_file(path)
    for text in check_texts:
        want = list(tokenizer(text)["input_ids"])
        got = reloaded.encode(text, add_special_tokens=True).ids
        if got != want:
            raise ExportError(f"saved tokenizer.json encodes {text!r} as {got[:8]}..., transformers as "
                              f"{want[:8]}...; the tokenizer's special-token handling is not in its backend")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="export",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True,
                   help="Hugging Face hub id (e.g. EleutherAI/pythia-410m) or a local checkpoint dir")
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit); recorded in export.json")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="model dtype; float16 needs --device cuda (default: float32)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device to load and trace on (default: cpu)")
    p.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo",
                   help="torch.onnx exporter (default: dynamo; TorchScript's float16 GPT-NeoX graph "
                        "does not load in ONNX Runtime)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, >= 18 (default: {DEFAULT_OPSET})")
    p.add_argument("--probes", type=int, default=len(DEFAULT_PROBES), metavar="N",
                   help=f"number of built-in probe statements recorded in export.json (0-{len(DEFAULT_PROBES)}, "
                        f"default {len(DEFAULT_PROBES)})")
    p.add_argument("--reference-dataset", metavar="FILE",
                   help="dataset in the seed's schema; also write reference.safetensors with the seed "
                        "method's mean_skip_first and nll for every statement (batch 1)")
    p.add_argument("--source-name", default=None,
                   help="name recorded as source.model in export.json (default: --model as given)")
    p.add_argument("--token-states", action="store_true",
                   help="export the token-level graph (outputs hidden_states, token_logprobs: every "
                        "token's state at every layer, pooled by extract on the host) instead of the "
                        "default graph that pools and sums the NLL itself (pooled, nll_sum, n_predicted)")
    p.add_argument("--graph-cache", metavar="DIR", default=None,
                   help=f"where traced graphs are kept for the next checkpoint of the same architecture "
                        f"(default: ${GRAPH_CACHE_ENV}, else ~/.cache/ua-scaling/graphs); share one between "
                        f"the tasks of a Slurm array")
    p.add_argument("--no-graph-cache", action="store_true",
                   help="make the graph even if the graph cache has it, and keep nothing there")
    p.add_argument("--trace-graph", action="store_true",
                   help="trace the graph with the dynamo exporter even where it is written from the config "
                        "(GPT-NeoX in float32, uatools.export.gpt_neox_graph)")
    p.add_argument("--no-float64-probes", action="store_true",
                   help="record the probes in the export dtype only, not also in float64 (computed with "
                        "float64 copies of one module's weights at a time): extract then judges parity against "
                        "transformers' values alone (scripts/parity.py)")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime parity check")
    p.add_argument("--traceback", action="store_true", help="show Python tracebacks on errors")
    args = p.parse_args(argv)
    if args.opset < 18:
        p.error("--opset must be >= 18")
    if not 0 <= args.probes <= len(DEFAULT_PROBES):
        p.error(f"--probes must be between 0 and {len(DEFAULT_PROBES)}")
    if args.graph_cache is not None and args.no_graph_cache:
        p.error("--graph-cache and --no-graph-cache: give one of them")
    if args.graph_cache is not None and args.exporter == "torchscript":
        p.error("--graph-cache works with the dynamo exporter only (torchscript traces with the weights)")
    if args.trace_graph and args.exporter == "torchscript":
        p.error("--trace-graph: the torchscript exporter always traces (give one of them)")
    return args


def return_freed_memory() -> None:
    """Make glibc hand every freed block over 4 MiB back to the system at once. By default its
    threshold for that rises (to 32 MiB) as large blocks are freed, and the float64 probes'
    module copies and the transposed weight blocks below it then stay in its heaps: measured at
    the 1.4B shape, 0.25 GiB more peak memory. Elsewhere (no glibc) nothing changes."""
    import ctypes

    m_mmap_threshold = -3  # glibc's malloc.h
    try:
        ctypes.CDLL("libc.so.6").mallopt(m_mmap_threshold, 4 << 20)
    except (OSError, AttributeError):
        pass


def run(args) -> dict:
    """The whole export; returns export.json's content. Importable (make-fixtures uses it)."""
    from uatools.seed import reference as seedref

    return_freed_memory()
    check_model_source(args.model)
    check_device_dtype(args.device, args.dtype)
    if args.exporter == "dynamo" and not args.no_graph_cache:
        make_root(args.graph_cache or default_root())  # a bad folder fails before the model loads
    os.makedirs(args.out, exist_ok=True)
    created = creation_time()

    # Read the dataset before the (possibly long) model load so a typo fails fast.
    probe_texts = DEFAULT_PROBES[: args.probes]
    check_texts = list(DEFAULT_PROBES)
    if args.reference_dataset:
        try:
            check_texts += [s.text for s in seedref.iter_statements(seedref.load_dataset(args.reference_dataset))]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ExportError(f"{args.reference_dataset}: not a readable dataset in the seed's schema "
                              f"({first_line(e)})") from e

    log(f"loading {args.model} (revision {args.revision or 'default'}, {args.dtype}, {args.device})")
    model, tokenizer = load_model_and_tokenizer(args.model, args.revision, args.dtype, args.device)
    dims = model_dims(model)
    log(f"  {dims['n_layers']} layers, hidden {dims['hidden_size']}, vocab {dims['vocab_size']}, "
        f"{parameter_bytes(model) / 1e6:.1f} MB of parameters")
    graph = GraphWork(args, model, tokenizer, dims)
    # The weights' hashes and the graph (found or traced, then the weights streamed into it) are
    # made beside the probes: reading, hashing and writing the weights wait on the disk, the
    # trace runs in a process of its own, the forward passes on torch's threads.
    with ThreadPoolExecutor(2, thread_name_prefix="export") as pool:
        hashed = pool.submit(source_record, args.model, args.revision, args.source_name,
                             getattr(model.config, "_commit_hash", None))
        written = pool.submit(graph.run) if graph.concurrent else None
        try:
            probes, bos, reference = probes_and_reference(args, model, tokenizer, check_texts, probe_texts)
            made = written.result() if written else graph.run()
            source = hashed.result()
        except BaseException:
            graph.cancel()
            raise
    files, opset = made if made is not None else graph.with_weights()
    log_source(source)

    if args.reference_dataset:
        log(f"computing reference.safetensors for {args.reference_dataset} (seed method, batch 1)")
        n = write_reference(args.reference_dataset, args.out, model, tokenizer, args.dtype, args.device)
        log(f"  {n} statements")

    # The model is not needed any more: free it before ONNX Runtime loads the weights again.
    del model, graph
    gc.collect()
    if args.device == "cuda":
        import torch

        torch.cuda.empty_cache()
    if reference is None:
        log(f"skipping the ONNX Runtime check: {verification_skip_reason(args)}")
    else:
        log("verifying with ONNX Runtime on a right-padded batch")
        result = verify(os.path.join(args.out, "model.onnx"), reference, probes if len(probe_texts) >= 2 else [],
                        args.dtype, args.device)
        log(f"  ok: {fmt(result)}")

    for name in ("tokenizer.json", "config.json"):
        files[name] = file_entry(os.path.join(args.out, name))
    meta = export_json(args, dims, opset, files, probes, created, bos, source)
    write_json_atomic(os.path.join(args.out, "export.json"), meta)
    log(f"done: {args.out}")
    return meta


def probes_and_reference(args, model, tokenizer, check_texts, probe_texts) -> tuple:
    """tokenizer.json and config.json written; (the probes, whether the tokenizer adds a BOS,
    torch's side of the ONNX Runtime check or None where it is skipped)."""
    from uatools.seed import reference as seedref

    log("writing tokenizer.json and config.json")
    save_tokenizer(tokenizer, os.path.join(args.out, "tokenizer.json"), check_texts)
    model.config.to_json_file(os.path.join(args.out, "config.json"))
    bos = adds_bos(tokenizer, check_texts)
    log(f"  the tokenizer {'prepends a BOS token to every statement' if bos else 'adds no special token'}")

    log(f"computing {len(probe_texts)} probe(s) with the seed functions")
    probes = [seedref.probe_record(t, OneForward(model), tokenizer) for t in probe_texts]
    if probes and not args.no_float64_probes:
        log("  and in float64, with float64 copies of one module's weights at a time (the truth the parity rule "
            "judges against)")
        started = time.monotonic()
        probes = add_float64_probes(probes, model, tokenizer)
        log(f"  float64 probes done in {time.monotonic() - started:.1f} s")
    if verification_skip_reason(args):
        return probes, bos, None
    verify_texts = probe_texts if len(probe_texts) >= 2 else DEFAULT_PROBES[:2]
    # torch's side of the check, while the model is loaded; ONNX Runtime's once it is freed.
    return probes, bos, torch_reference(model, tokenizer, verify_texts, args.device)


class GraphWork:
    """model.onnx (+ model.onnx.data): the graph cache's graph of this architecture (traced on a
    miss) with this model's weights streamed into it; or with --exporter torchscript, a trace
    with the weights. run() returns (export.json's entries for the files written, opset)."""

    def __init__(self, args, model, tokenizer, dims: dict):
        self.args, self.model, self.tokenizer, self.dims = args, model, tokenizer, dims
        # Taken now, before the probes' forward passes start beside run(): the float64 probes
        # swap a module's tensors for float64 copies while it computes.
        self.streamed, self.constants = weight_sources(model)
        # TorchScript traces the loaded model itself, so not beside the probes.
        self.concurrent = args.exporter == "dynamo"
        # Why the graph is traced rather than written from the config (None: it is written).
        self.traced_because = ("--trace-graph" if args.trace_graph
                               else gpt_neox_graph.unsupported(model, args.dtype))
        self.trace_job = None
        self.failure = None  # why the graph template failed for this model, where it did
        self.layout = ("token states (hidden_states, token_logprobs)" if args.token_states
                       else "pooled in the graph (pooled, nll_sum, n_predicted)")

    def run(self):
        """(files, opset); or None where the graph template failed for this model (the trace on
        the meta device, or this model's weights against it): then, after the probes,
        with_weights() traces it with the loaded weights."""
        if self.args.exporter == "torchscript":
            return self.torchscript()
        try:
            return self.from_template()
        except ExportError as e:
            if self.trace_job is not None and self.trace_job.cancelled:
                raise
            self.failure = first_line(e)
            return None

    def from_template(self) -> tuple:
        args = self.args
        made = "traced" if self.traced_because else "written from the config"
        if args.no_graph_cache:
            template = self.make()
        else:
            key, made_of = key_of(self.model, args.dtype, args.opset, args.token_states, made)
            root = args.graph_cache or default_root()
            template, reused = cached_template(root, key, made_of, self.make)
            log(f"graph {key[:16]} {'reused from' if reused else made + ' and kept in'} the graph cache {root}")
        if self.trace_job is not None and self.trace_job.cancelled:
            raise ExportError("interrupted")
        external = template.data_bytes > EXTERNAL_DATA_THRESHOLD
        log(f"writing model.onnx{f' and {EXTERNAL_DATA_NAME}' if external else ''}: "
            f"{len(template.tensors)} tensors, {template.data_bytes / 1e6:.1f} MB")
        started = time.monotonic()
        files = write_model(template, self.streamed, args.out)
        log(f"  written and synced in {time.monotonic() - started:.1f} s")
        return files, template.opset

    def with_weights(self) -> tuple:
        """The fallback of run(): model.onnx (+ model.onnx.data) traced by the dynamo exporter with
        the loaded weights, in this process (the probes are done), not kept in the graph cache."""
        args = self.args
        log(f"the graph template failed for this model ({self.failure}); tracing the graph with the loaded "
            f"weights instead (dynamo exporter, not kept in the graph cache), outputs {self.layout}")
        external = parameter_bytes(self.model) > EXTERNAL_DATA_THRESHOLD
        example_ids, example_mask, _ = right_padded_batch(self.tokenizer, DEFAULT_PROBES[:2], args.device)
        opset = trace_with_weights(self.model, (example_ids, example_mask), args.token_states, args.opset, args.out,
                                   external, self.dims, args.dtype)
        return model_files(args.out), opset

    def make(self):
        """The graph template: written from the config where gpt_neox_graph knows the model, else traced."""
        args = self.args
        if self.traced_because is None:
            log(f"writing the GPT-NeoX graph from the config (opset {args.opset}), outputs {self.layout}")
            return gpt_neox_graph.template(self.model, self.streamed, self.constants, args.token_states, args.opset,
                                           self.dims)
        log(f"tracing the graph (dynamo exporter, opset {args.opset}, weights on the meta device), "
            f"outputs {self.layout}; not written from the config: {self.traced_because}")
        self.trace_job = TraceJob(self.model.config, self.constants, self.args.dtype, self.args.token_states,
                                  self.args.opset, self.dims)
        return self.trace_job.run()

    def cancel(self) -> None:
        if self.trace_job is not None:
            self.trace_job.cancel()

    def torchscript(self) -> tuple:
        import onnx

        args = self.args
        external = parameter_bytes(self.model) > EXTERNAL_DATA_THRESHOLD
        log(f"exporting model.onnx with the torchscript exporter, opset {args.opset}, outputs {self.layout}"
            + (f", weights in {EXTERNAL_DATA_NAME}" if external else ""))
        # Two different-length texts so tracing sees real padding and no size-1 axis.
        example_ids, example_mask, _ = right_padded_batch(self.tokenizer, DEFAULT_PROBES[:2], args.device)
        export_torchscript(make_wrapper(self.model, args.token_states), (example_ids, example_mask), args.out,
                           args.opset, external, args.token_states)
        proto = onnx.load(os.path.join(args.out, "model.onnx"), load_external_data=False)
        check_graph_io(proto, args.token_states, self.dims, args.dtype)
        return model_files(args.out), opset_of(proto)


def main(argv=None) -> int:
    args = parse_args(argv)
    # torch's OpenMP threads otherwise spin between operations, taking the cores from the threads
    # that write and hash the weights beside the probes: at the 1.4B shape on 2 cores, 8 CPU
    # seconds and 3 s of wall clock (docs/benchmarks.md). Read once, when torch loads (not yet).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        run(args)
    except ExportError as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("export: error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - unexpected: still one line unless --traceback
        if args.traceback:
            traceback.print_exc()
        print(f"export: error: {type(e).__name__}: {first_line(e)} (rerun with --traceback for details)",
              file=sys.stderr)
        return 1
    return 0
