"""Copy an exported model dir with one weight changed, so that only the parity probe can tell.

  scripts/perturb-onnx MODEL_DIR OUT_DIR [--initializer NAME] [--index I] [--delta D]

Copies every file of MODEL_DIR into OUT_DIR (created; must not exist or be empty), adds
--delta (default +0.5) to one element (--index into the flattened tensor, default: the
element of largest |value|) of one initializer of model.onnx: --initializer NAME, or by
default the largest floating-point initializer that is not an embedding (no "embed", "wte",
"wpe" in its name and, as the dynamo exporter renames folded weights "val_N", no axis of
export.json's vocab_size), ties broken by name: a layer weight, so hidden states and NLL
both move. The graph is saved in its original layout (weights inline,
or in the same external-data files), and export.json's "files" entries (sha256, bytes) of
every changed file are rewritten, so extract's file checks pass and only its parity probe
(the probes' seed values in export.json, untouched) can catch the change.

Prints one line: the initializer, index, old and new value. Needs only numpy and onnx.
"""
import argparse
import json
import os
import shutil

import numpy as np

from uatools.extras import need
from uatools.files import sha256_file

onnx = need("onnx", "uatools.perturb_onnx")
numpy_helper = need("onnx.numpy_helper", "uatools.perturb_onnx")

EMBEDDING_MARKERS = ("embed", "wte", "wpe")


def external_locations(proto) -> list:
    names = []
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if loc and loc not in names:
                names.append(loc)
    return names


def pick(proto, name, vocab_size):
    inits = {t.name: t for t in proto.graph.initializer}
    if name is not None:
        if name not in inits:
            raise SystemExit(f"perturb-onnx: no initializer {name!r} in model.onnx")
        return inits[name]

    def size(t):
        n = 1
        for d in t.dims:
            n *= d
        return n

    cands = [t for t in proto.graph.initializer
             if not any(m in t.name.lower() for m in EMBEDDING_MARKERS)
             and not (vocab_size and vocab_size in t.dims)
             and t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) and size(t) > 1]
    if not cands:
        raise SystemExit("perturb-onnx: model.onnx has no floating-point non-embedding initializer")
    return max(cands, key=lambda t: (size(t), t.name))


def main() -> int:
    ap = argparse.ArgumentParser(prog="perturb-onnx", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--initializer", default=None, help="initializer name (default: largest non-embedding)")
    ap.add_argument("--index", type=int, default=None, help="flat element index (default: largest |value|)")
    ap.add_argument("--delta", type=float, default=0.5, help="value added to the element (default 0.5)")
    a = ap.parse_args()

    src, dst = a.model_dir, a.out_dir
    if not os.path.isfile(os.path.join(src, "model.onnx")):
        raise SystemExit(f"perturb-onnx: {src}: no model.onnx")
    if os.path.exists(dst) and os.listdir(dst):
        raise SystemExit(f"perturb-onnx: {dst}: exists and is not empty")
    os.makedirs(dst, exist_ok=True)
    for name in sorted(os.listdir(src)):
        p = os.path.join(src, name)
        if os.path.isfile(p):
            shutil.copy2(p, os.path.join(dst, name))

    path = os.path.join(dst, "model.onnx")
    meta_path = os.path.join(dst, "export.json")
    meta = None
    if os.path.isfile(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    proto = onnx.load(path, load_external_data=True)
    locations = external_locations(onnx.load(path, load_external_data=False))
    t = pick(proto, a.initializer, (meta or {}).get("vocab_size"))
    arr = numpy_helper.to_array(t).copy()
    flat = arr.reshape(-1)
    i = int(np.argmax(np.abs(flat))) if a.index is None else a.index
    if not 0 <= i < flat.size:
        raise SystemExit(f"perturb-onnx: --index {i} outside {t.name} ({flat.size} elements)")
    old = float(flat[i])
    flat[i] = flat.dtype.type(old + a.delta)
    t.CopyFrom(numpy_helper.from_array(arr, t.name))

    if locations:
        if len(locations) > 1:
            raise SystemExit("perturb-onnx: graphs with several external-data files are not supported")
        for loc in locations:
            os.unlink(os.path.join(dst, loc))
        onnx.save_model(proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=locations[0], size_threshold=1024)
    else:
        onnx.save_model(proto, path)

    if meta is not None:
        for name, entry in meta.get("files", {}).items():
            p = os.path.join(dst, name)
            if os.path.isfile(p):
                entry["sha256"] = sha256_file(p)
                entry["bytes"] = os.path.getsize(p)
        with open(meta_path, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, ensure_ascii=False)
            f.write("\n")
    print(f"perturb-onnx: {t.name}[{i}] {old!r} -> {float(flat[i])!r} (delta {a.delta:+g}) in {path}")
    return 0
