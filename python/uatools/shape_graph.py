"""Write a model dir whose graph has a real model's output shape but almost no forward pass.

For measuring what extract does on the host (reading the outputs, NLL, Parquet, the
sidecar, resumable chunks) at each Pythia size's output shape, without the forward
passes' compute or any weights: the graph emits scripts/export's default (reduced)
outputs

  pooled       float32 [batch, L+1, 3, H]  = C1 * a + C2 * b per row
  nll_sum      float32 [batch]             = (n - 1) * (1 + a)
  n_predicted  int64   [batch]             = max(n - 1, 0)

for inputs input_ids / attention_mask int64 [batch, seq] (both axes dynamic), where n is
the row's sum(attention_mask), a = sum(input_ids * mask) / (max(n, 1) * vocab_size) (the
mean token id over the vocabulary, in [0, 1)) and b = n / 64, and C1, C2 are fixed
standard-normal float32 tensors [1, L+1, 3, H] from --seed. So every statement gets its
own vectors and NLL (nothing degenerates), at a cost of a few elementwise ops per output
element. It is NOT a language model: its numbers mean nothing.

The dir is what extract reads from scripts/export: model.onnx, tokenizer.json (the real
GPT-NeoX-20B tokenizer Pythia uses, tests/data/gpt-neox-20b-tokenizer.json), a minimal
config.json and export.json with scripts/export's keys (format ua-export/1, dtype float32,
n_layers, hidden_size, vocab_size, max_positions 2048, n_parameters = the Pythia size's
parameter count (GPT-NeoX's formula 2 V H + L (12 H^2 + 13 H) + 2 H, which gives the
published counts), outputs, pooled_order, adds_bos false, files with sha256 and bytes,
created (SOURCE_DATE_EPOCH if set), and one probe that this graph itself computed in ONNX
Runtime at batch 1 (uatools.seed.reference's probe record: text, input_ids, nll,
mean_skip_first, mean, last as [L+1][H] lists), so extract's parity probe passes.

  scripts/make-shape-graph --pythia 6.9b --out out/shape-6.9b
  scripts/make-shape-graph --layers 12 --hidden 768 --out out/shape-L12-H768
  extract --model out/shape-6.9b --dataset tests/data/seed-dataset.json --out out/cache-shape
  scripts/bench-engine --model out/shape-6.9b

Needs numpy, onnx, onnxruntime and tokenizers.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys

from uatools import REPO, cli
from uatools.contract import POOLINGS
from uatools.pythia import SIZES, n_params

TOKENIZER = os.path.join(REPO, "tests", "data", "gpt-neox-20b-tokenizer.json")
MAX_POSITIONS = 2048
OPSET = 18
# Without --pythia: the vocabulary of the smaller Pythia sizes.
DEFAULT_VOCAB = SIZES["410m"]["vocab_size"]


class ShapeError(Exception):
    """Bad input: printed as one line."""


class OneLineParser(cli.OneLineParser):
    error_class = ShapeError


def load_export_module():
    """scripts/export's module (uatools.export.cli), for its constants and provenance helpers, so
    export.json is written exactly as an export writes it. Importing it needs no torch."""
    from uatools.export import cli as export_cli

    return export_cli


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(prog="make-shape-graph", description=__doc__.split("\n\n")[0],
                      epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pythia", choices=list(SIZES),
                   help="the shape of EleutherAI/pythia-SIZE (layers, hidden): " + ", ".join(
                       f"{s} ({d['num_hidden_layers']}, {d['hidden_size']})" for s, d in SIZES.items()))
    p.add_argument("--layers", type=int, help="transformer layers L (the graph emits L+1 hidden states)")
    p.add_argument("--hidden", type=int, help="hidden size H")
    p.add_argument("--vocab", type=int, default=None,
                   help=f"vocab_size (default: the Pythia size's, else {DEFAULT_VOCAB})")
    p.add_argument("--out", required=True, help="model dir to write (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="seed of the constant tensors (default 0)")
    args = p.parse_args(argv)
    if args.pythia:
        if args.layers is not None or args.hidden is not None:
            p.error("give --pythia or --layers/--hidden, not both")
        size = SIZES[args.pythia]
        args.layers, args.hidden = size["num_hidden_layers"], size["hidden_size"]
        args.vocab = args.vocab or size["vocab_size"]
    elif args.layers is None or args.hidden is None:
        p.error("give --pythia SIZE or both --layers and --hidden")
    args.vocab = args.vocab or DEFAULT_VOCAB
    if args.layers < 1 or args.hidden < 1:
        p.error("--layers and --hidden must be at least 1")
    if args.vocab < 2:
        p.error("--vocab must be at least 2")
    return args


def build_graph(layers: int, hidden: int, vocab: int, seed: int):
    import numpy as np
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    shape = (1, layers + 1, 3, hidden)
    c1 = rng.standard_normal(shape, dtype=np.float32)
    c2 = rng.standard_normal(shape, dtype=np.float32)

    def const(name, value):
        return numpy_helper.from_array(np.asarray(value), name)

    inits = [
        numpy_helper.from_array(c1, "C1"), numpy_helper.from_array(c2, "C2"),
        const("axis1", np.array([1], dtype=np.int64)),
        const("row4", np.array([-1, 1, 1, 1], dtype=np.int64)),
        const("one_f", np.array(1.0, dtype=np.float32)),
        const("vocab_f", np.array(float(vocab), dtype=np.float32)),
        const("b_scale", np.array(1.0 / 64.0, dtype=np.float32)),
        const("one_i", np.array(1, dtype=np.int64)),
        const("zero_i", np.array(0, dtype=np.int64)),
    ]
    n = helper.make_node
    nodes = [
        n("ReduceSum", ["attention_mask", "axis1"], ["n_int"], keepdims=0),         # [B] int64
        n("Sub", ["n_int", "one_i"], ["n_minus_1"]),
        n("Max", ["n_minus_1", "zero_i"], ["n_predicted"]),                        # output
        n("Cast", ["attention_mask"], ["mask_f"], to=T.FLOAT),
        n("Cast", ["input_ids"], ["ids_f"], to=T.FLOAT),
        n("Mul", ["ids_f", "mask_f"], ["ids_masked"]),
        n("ReduceSum", ["ids_masked", "axis1"], ["ids_sum"], keepdims=0),          # [B]
        n("Cast", ["n_int"], ["n_f"], to=T.FLOAT),
        n("Max", ["n_f", "one_f"], ["n_at_least_1"]),
        n("Mul", ["n_at_least_1", "vocab_f"], ["a_denominator"]),
        n("Div", ["ids_sum", "a_denominator"], ["a"]),                             # mean id / vocab
        n("Mul", ["n_f", "b_scale"], ["b"]),                                       # n / 64
        n("Reshape", ["a", "row4"], ["a4"]),
        n("Reshape", ["b", "row4"], ["b4"]),
        n("Mul", ["C1", "a4"], ["pooled_a"]),
        n("Mul", ["C2", "b4"], ["pooled_b"]),
        n("Add", ["pooled_a", "pooled_b"], ["pooled"]),                            # output
        n("Cast", ["n_predicted"], ["n_predicted_f"], to=T.FLOAT),
        n("Add", ["a", "one_f"], ["a_plus_1"]),
        n("Mul", ["n_predicted_f", "a_plus_1"], ["nll_sum"]),                      # output
    ]
    inputs = [helper.make_tensor_value_info("input_ids", T.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_mask", T.INT64, ["batch", "seq"])]
    outputs = [helper.make_tensor_value_info("pooled", T.FLOAT, ["batch", layers + 1, 3, hidden]),
               helper.make_tensor_value_info("nll_sum", T.FLOAT, ["batch"]),
               helper.make_tensor_value_info("n_predicted", T.INT64, ["batch"])]
    graph = helper.make_graph(nodes, "shape_graph", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="make-shape-graph")
    model.ir_version = min(model.ir_version, 10)  # loadable by ONNX Runtime releases of the last years
    onnx.checker.check_model(model)
    return model


def probe_record(session, tokenizer, text: str) -> dict:
    """uatools.seed.reference's probe record, from this graph itself at batch 1."""
    import numpy as np

    ids = tokenizer.encode(text, add_special_tokens=True).ids
    feeds = {"input_ids": np.asarray([ids], dtype=np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
    pooled, nll_sum, n_predicted = session.run(["pooled", "nll_sum", "n_predicted"], feeds)
    k = int(n_predicted[0])
    rec = {"text": text, "input_ids": [int(i) for i in ids],
           "nll": float(nll_sum[0]) / k if k > 0 else 0.0}
    for index, key in enumerate(POOLINGS):
        rec[key] = pooled[0, :, index, :].tolist()
    # seedref's key order: text, input_ids, nll, mean_skip_first, mean, last.
    return {key: rec[key] for key in ("text", "input_ids", "nll", "mean_skip_first", "mean", "last")}


def write(args) -> dict:
    import onnx
    import onnxruntime as ort
    from tokenizers import Tokenizer

    ex = load_export_module()
    if list(ex.POOLED_ORDER) != list(POOLINGS):
        raise ShapeError(f"scripts/export's POOLED_ORDER is {ex.POOLED_ORDER}; update make-shape-graph")
    if not os.path.isfile(TOKENIZER):
        raise ShapeError(f"{TOKENIZER}: missing (the GPT-NeoX tokenizer this script ships with)")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ShapeError(f"{args.out}: exists and is not a directory")
    os.makedirs(args.out, exist_ok=True)
    created = ex.creation_time()
    L, H, V = args.layers, args.hidden, args.vocab
    onnx_path = os.path.join(args.out, "model.onnx")
    for stale in (onnx_path, os.path.join(args.out, ex.EXTERNAL_DATA_NAME)):
        if os.path.exists(stale):
            os.unlink(stale)
    onnx.save_model(build_graph(L, H, V, args.seed), onnx_path)
    dims = {"n_layers": L, "hidden_size": H, "vocab_size": V, "max_positions": MAX_POSITIONS,
            "n_parameters": n_params(L, H, V)}
    try:
        ex.check_graph_io(onnx_path, False, dims, "float32")
    except ex.ExportError as e:
        raise ShapeError(f"{onnx_path}: {e}") from e
    shutil.copyfile(TOKENIZER, os.path.join(args.out, "tokenizer.json"))
    config = {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
              "num_hidden_layers": L, "hidden_size": H, "vocab_size": V,
              "max_position_embeddings": MAX_POSITIONS,
              "_comment": "make-shape-graph: the output shape of this model, no weights; not a language model"}
    ex.write_json_atomic(os.path.join(args.out, "config.json"), config)

    tokenizer = Tokenizer.from_file(os.path.join(args.out, "tokenizer.json"))
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    probe = probe_record(session, tokenizer, ex.DEFAULT_PROBES[0])
    name = f"pythia-{args.pythia}" if args.pythia else f"L{L}-H{H}"

    meta = {
        "format": ex.FORMAT,
        "source": {"model": f"make-shape-graph/{name}", "revision": None},
        "dtype": "float32",
        "device": "cpu",
        "exporter": "make-shape-graph",
        "opset": OPSET,
        "versions": {"python": platform.python_version(), "onnx": onnx.__version__,
                     "onnxruntime": ort.__version__},
        **dims,
        "inputs": list(ex.INPUTS),
        "outputs": list(ex.REDUCED_OUTPUTS),
        "pooled_order": list(ex.POOLED_ORDER),
        "adds_bos": False,
        "files": ex.model_files(args.out),
        "created": created,
        "probes": [probe],
    }
    ex.write_json_atomic(os.path.join(args.out, "export.json"), meta)
    return meta


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        meta = write(args)
    except ShapeError as e:
        print(f"make-shape-graph: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"make-shape-graph: error: {e}", file=sys.stderr)
        return 1
    onnx_bytes = meta["files"]["model.onnx"]["bytes"]
    print(f"make-shape-graph: {args.out}: {meta['source']['model']}, {meta['n_layers']} layers, hidden "
          f"{meta['hidden_size']}, vocab {meta['vocab_size']}, {meta['n_parameters']:,} parameters "
          f"(recorded, not present); model.onnx {onnx_bytes / 2**20:.1f} MiB")
    return 0
