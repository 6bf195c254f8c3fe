"""The graph cache (issue 28): two checkpoints of one architecture exported in a row; the second
reuses the first one's graph (it is not traced) and gives the export a from-scratch trace gives,
down to extract's cache by the parity rule.

Needs the model packages (python/requirements-models.txt: torch, transformers, onnxscript,
onnxruntime); where they are missing, pytest reports these tests as skipped, with the reason.
The cache comparison also needs the extract binary (scripts/test builds it).
"""
import json
import os
import shutil
import subprocess

import pytest

from uatools import REPO, parity

for package in ("torch", "transformers", "onnxscript", "onnxruntime"):
    pytest.importorskip(package, reason=f"{package} is not installed (python/requirements-models.txt)")

from uatools.binaries import find_bin, ort_env
from uatools.export import cli, gpt_neox_graph, template

FIXTURE = os.path.join(REPO, "tests", "fixtures", "tiny-a")
CHECKPOINT_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
DATASET = os.path.join(REPO, "tests", "fixtures", "demo-dataset.json")


def later_checkpoint(out):
    """tiny-a's architecture with other weights: every tensor plus 1e-3 of its RMS in noise."""
    import torch
    from safetensors.torch import load_file, save_file

    os.makedirs(out)
    for name in CHECKPOINT_FILES:
        shutil.copy(os.path.join(FIXTURE, name), out)
    tensors = load_file(os.path.join(out, "model.safetensors"))
    gen = torch.Generator().manual_seed(28)
    for name, t in tensors.items():
        rms = float(t.float().pow(2).mean().sqrt())
        tensors[name] = t + torch.randn(t.shape, generator=gen) * (1e-3 * max(rms, 1e-3))
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    return out


def export(model, out, *flags):
    return cli.run(cli.parse_args(["--model", model, "--out", out, *flags]))


# How the graph is made: GPT-NeoX's is written from the config by default, traced on request.
HOW = {"written": [], "traced": ["--trace-graph"]}


@pytest.fixture(scope="module", params=list(HOW))
def exports(tmp_path_factory, request):
    """{name: out dir}: tiny-a's graph made into a fresh graph cache (written or traced), then a
    later checkpoint with that cache (making the graph forbidden), and the same checkpoint's
    graph made from scratch."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOURCE_DATE_EPOCH", "1767398400")  # the same "created" in every export.json
        yield make_exports(tmp_path_factory.mktemp("graph-cache"), HOW[request.param])


def make_exports(root, how):
    """The three exports (how: the flags that say how the graph is made)."""
    graphs = str(root / "graphs")
    later = later_checkpoint(str(root / "tiny-a-later"))
    outs = {name: str(root / name) for name in ("first", "reused", "scratch")}
    export(FIXTURE, outs["first"], "--graph-cache", graphs, *how)
    entries = [e for e in os.listdir(graphs) if not e.endswith(".lock")]
    assert len(entries) == 1, entries

    def no_graph(*args, **kwargs):
        raise AssertionError("the second checkpoint of an architecture had its graph made again")

    with pytest.MonkeyPatch.context() as forbid:
        forbid.setattr(template.TraceJob, "run", no_graph)
        forbid.setattr(gpt_neox_graph, "template", no_graph)
        export(later, outs["reused"], "--graph-cache", graphs, *how)
    assert [e for e in os.listdir(graphs) if not e.endswith(".lock")] == entries
    export(later, outs["scratch"], "--no-graph-cache", *how)
    return outs


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_the_reused_graph_is_the_one_made_from_scratch(exports):
    """The later checkpoint's model.onnx is byte for byte what making its graph anew writes, and its
    export.json records its own weights (not the first checkpoint's)."""
    with open(os.path.join(exports["reused"], "model.onnx"), "rb") as f:
        reused = f.read()
    with open(os.path.join(exports["scratch"], "model.onnx"), "rb") as f:
        assert f.read() == reused
    first, later, scratch = (read_json(os.path.join(exports[k], "export.json")) for k in ("first", "reused", "scratch"))
    assert later == {**scratch, "versions": later["versions"]}
    assert later["source"]["weights"] != first["source"]["weights"]
    assert later["files"]["model.onnx"] != first["files"]["model.onnx"]


def test_a_damaged_entry_is_made_again(tmp_path):
    """An entry whose proto no longer matches its hash is not used."""
    graphs = tmp_path / "graphs"
    export(FIXTURE, str(tmp_path / "a"), "--graph-cache", str(graphs))
    (entry,) = [e for e in graphs.iterdir() if e.is_dir()]
    with open(entry / "model.onnx", "ab") as f:
        f.write(b"\0")
    export(FIXTURE, str(tmp_path / "b"), "--graph-cache", str(graphs))
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()
    assert template.load_template(str(entry))[1] is None


def test_extract_caches_agree_by_the_parity_rule(exports, tmp_path):
    """extract over the reused export and over the from-scratch one: every pooled vector and
    NLL within the parity rule's float32 bound of each other."""
    from uatools.reader import load_cache

    extract, found = find_bin("extract")
    if not found:
        pytest.skip(f"no extract binary at {extract} (cargo build --release -p extract)")
    caches = {}
    for name in ("reused", "scratch"):
        out = tmp_path / "cache"
        subprocess.run([extract, "--model", exports[name], "--dataset", DATASET, "--out", str(out), "--name", name,
                        "--device", "cpu"], check=True, env=ort_env(dict(os.environ)), capture_output=True)
        caches[name] = load_cache(str(out / name))
    a, b = caches["reused"], caches["scratch"]
    assert list(a.statements["statement_id"]) == list(b.statements["statement_id"])
    bound = parity.bound("float32")
    for layer in a.layers:
        for pooling in a.manifest["run"]["poolings"]:
            worst = max(parity.vector_error(x, y)[0] for x, y in zip(a.layer(layer, pooling), b.layer(layer, pooling)))
            assert worst <= bound, (layer, pooling, worst)
    for x, y in zip(a.statements["nll_mean"], b.statements["nll_mean"]):
        assert parity.nll_error(x, y) <= bound
