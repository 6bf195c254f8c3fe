"""Writing an export's model.onnx (+ model.onnx.data) from a graph template and the loaded
model's tensors.

The weights are written once, straight from the model that computed the probes: one tensor at
a time in the graph's initializer order (transposed where the template says so), hashed while
the next is written, so nothing beside the model is held but one tensor. Each file is written
under a temporary name, synced and renamed into place (the data before the graph that names
it), so an interrupted export leaves no model.onnx that reads half-written weights.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

from uatools.export.common import EXTERNAL_DATA_NAME, EXTERNAL_DATA_THRESHOLD, ExportError

PARTIAL = ".partial"


# A transposed tensor is written in row blocks of about this size, so that no whole copy of it
# (the 50k x hidden output layer) is ever held beside the model.
BLOCK_BYTES = 16 * 2**20


def tensor_blocks(streamed: dict, spec):
    """One template tensor's bytes, as (buffer, owner) blocks in order: the source tensor's own
    memory where it is contiguous and untransposed, else contiguous copies of row blocks of the
    transposed tensor. owner keeps a buffer's memory alive."""
    import torch

    src = streamed.get(spec.source)
    if src is None:
        raise ExportError(f"the graph template reads {spec.source}, which this model does not have")
    t = src.detach()
    if spec.perm is not None:
        t = t.permute(*spec.perm)
    dtype = str(t.dtype).removeprefix("torch.")
    if dtype != spec.dtype or [int(d) for d in t.shape] != spec.shape:
        raise ExportError(f"{spec.source} is {dtype} {list(t.shape)}, the graph template expects {spec.dtype} "
                          f"{spec.shape}")
    if t.dim() == 0 or t.is_contiguous():
        blocks = [t]
    else:
        rows = max(1, BLOCK_BYTES // max(1, t[0].numel() * t.element_size()))
        blocks = [t[i:i + rows] for i in range(0, t.shape[0], rows)]
    for block in blocks:
        block = block.contiguous().cpu()
        yield memoryview(block.reshape(-1).view(torch.uint8).numpy()), block


def write_synced(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def entry(data_hash, nbytes: int) -> dict:
    return {"sha256": data_hash.hexdigest(), "bytes": nbytes}


def data_blocks(template, streamed: dict):
    """model.onnx.data's bytes in order, as tensor_blocks' (buffer, owner): every template tensor
    at its offset, zeros in the gaps the alignment leaves."""
    written = 0
    for spec in template.tensors:
        if written > spec.offset:
            raise ExportError(f"the graph template places {spec.name} at byte {spec.offset}, before {written}")
        if written < spec.offset:
            yield memoryview(bytes(spec.offset - written)), None
            written = spec.offset
        for buf, owner in tensor_blocks(streamed, spec):
            yield buf, owner
            written += len(buf)


def stream_data(template, streamed: dict, path: str) -> dict:
    """model.onnx.data at path (data_blocks), hashed one block behind."""
    digest, written = hashlib.sha256(), 0
    with open(path, "wb") as f, ThreadPoolExecutor(1) as hasher:
        pending = None  # (the previous block's hash, the memory it reads)
        for buf, owner in data_blocks(template, streamed):
            f.write(buf)
            written += len(buf)
            if pending is not None:
                pending[0].result()
            pending = (hasher.submit(digest.update, buf), owner)
        if pending is not None:
            pending[0].result()
        f.flush()
        os.fsync(f.fileno())
    return entry(digest, written)


def inline_graph(template, streamed: dict) -> bytes:
    """The template's proto with every tensor's bytes in it (a model under the external-data
    threshold: a single file, as extract's fixtures are)."""
    import onnx

    proto = onnx.ModelProto.FromString(template.graph)
    where = {init.name: init for init in proto.graph.initializer}
    for spec in template.tensors:
        init = where[spec.name]
        del init.external_data[:]
        init.ClearField("data_location")
        init.raw_data = b"".join(bytes(buf) for buf, _ in tensor_blocks(streamed, spec))
    return proto.SerializeToString()


def write_model(template, streamed: dict, out_dir: str) -> dict:
    """model.onnx (and model.onnx.data above EXTERNAL_DATA_THRESHOLD) in out_dir; returns
    export.json's "files" entries for them."""
    graph_path = os.path.join(out_dir, "model.onnx")
    data_path = os.path.join(out_dir, EXTERNAL_DATA_NAME)
    files = {}
    try:
        if template.data_bytes > EXTERNAL_DATA_THRESHOLD:
            files[EXTERNAL_DATA_NAME] = stream_data(template, streamed, data_path + PARTIAL)
            graph = template.graph
        else:
            graph = inline_graph(template, streamed)
        write_synced(graph_path + PARTIAL, graph)
    except BaseException:
        for path in (graph_path + PARTIAL, data_path + PARTIAL):
            if os.path.exists(path):
                os.unlink(path)
        raise
    if EXTERNAL_DATA_NAME in files:
        os.replace(data_path + PARTIAL, data_path)
    elif os.path.exists(data_path):
        os.unlink(data_path)  # an earlier export's weights, which this graph does not read
    os.replace(graph_path + PARTIAL, graph_path)
    sync_dir(out_dir)
    return {"model.onnx": entry(hashlib.sha256(graph), len(graph)), **files}
