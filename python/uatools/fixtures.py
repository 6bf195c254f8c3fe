"""Make the tiny test models under tests/fixtures/ (deterministic from --seed).

Tests cannot download anything, so the project ships four tiny random-initialised
GPT-NeoX models with the Pythia architecture (partial rotary 0.25, parallel residual,
untied embeddings) at depths 6, 6, 8, 9 and growing widths, plus a byte-level BPE
tokenizer trained here on scripts/fixture_corpus.txt. Each fixture dir holds the HF
checkpoint (config.json, model.safetensors, tokenizer files), and what scripts/export
makes from it: model.onnx, tokenizer.json, export.json and reference.safetensors for
tests/fixtures/demo-dataset.json.

A fifth fixture, tiny-m, looks like a real trained model where tests need one: planted
"massive activations" (a large output bias on two residual dimensions of layer 0's MLP,
+2900 and -2900, so hidden states 1..L-1 carry values in the thousands, as Pythia, Gemma
and LLaMA do) and a tokenizer that prepends a <bos> token to every statement
(TemplateProcessing post-processor), so the seed's mean_skip_first drops the BOS. Its later
layer norms give the massive dimensions a tiny gain and the others a large one, as trained
models' norms do, so the layers after the plant still see the statement's own signal.

A sixth, tiny-r, keeps a probe whose float32 rounding in transformers is poor: tiny-m's plant
with the token embeddings left at init scale, so the massive dimensions outweigh the others
about 1e4 to 1 and the layer norms' float32 statistics round them badly. On its probes
transformers' float32 is up to ~12x the parity bound from float64 while ONNX Runtime stays
nearer (about half as far), so extract's parity check refuses it against transformers' values
(the rule before float64 probes) and accepts it against float64 (tests/e2e/parity.rs). Its
export.json carries float64 probes; it has no reference.safetensors (no test compares the
demo dataset with it) and is always rebuilt in full (make-fixtures checks that the plant
still holds: transformers beyond the bound, ONNX Runtime within half of what the rule allows).

The graphs are scripts/export's default (pooled, nll_sum, n_predicted; --token-states for
the token-level layout). A rebuild on one machine is byte-identical, but the seed values
(reference.safetensors, export.json's probes) come from torch's CPU kernels, which MKL,
oneDNN and ATen pick by CPU: another CPU gives the same values to a few float32 ulps, not
the same bytes (the committed ones come from an AMD EPYC). The checkpoints, tokenizers and
graphs do not depend on the CPU. --graph-only therefore re-exports only model.onnx and
export.json of the existing fixtures from their committed checkpoints and keeps the seed
values as they are (checked against this machine's to the parity bound, and the new graph
against them), so a change of the graph does not churn numbers that did not change.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import types

from uatools import REPO as REPO_ROOT
from uatools.files import dir_bytes, sha256_file

SCRIPTS_DIR = os.path.join(REPO_ROOT, "scripts")
CORPUS = os.path.join(SCRIPTS_DIR, "fixture_corpus.txt")
FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures")
DEMO_DATASET = os.path.join(FIXTURES, "demo-dataset.json")
EOT = "<|endoftext|>"
PAD = "<|padding|>"
VOCAB_SIZE = 512

# name -> (layers, hidden, heads). head_dim 8 everywhere, so the rotary part
# (0.25 * head_dim = 2) is the smallest even size; widths grow with depth like a ladder.
LADDER = {
    "tiny-a": (6, 32, 4),
    "tiny-b": (6, 48, 6),
    "tiny-c": (8, 56, 7),
    "tiny-d": (9, 64, 8),
}
# Default GPT-NeoX init (0.02) makes a random tiny model's outputs almost identical for
# every statement; a larger std spreads hidden states and NLLs so the analysis'
# correlations are non-trivial.
INIT_STD = 0.2
# tiny-m: (layers, hidden, heads), planted values on residual dims, and the BOS token.
MASSIVE = ("tiny-m", (5, 32, 4))
# Opposite signs, so the layer norms' mean subtraction does not shift the other dims.
MASSIVE_DIMS = {5: 2900.0, 17: -2900.0}
# Trained models' residual streams hold values of order 10 besides the massive ones; with
# init-scale embeddings (std 0.2) the ratio to the planted dims would be 1e4, far harsher
# than any real model for the layer norms' float32 cancellation.
MASSIVE_EMBED_STD = 5.0
# tiny-r: tiny-m's shape and plant with embeddings of std INIT_STD (see the docstring), and
# its own seed, fixed rather than derived from --seed: the poor rounding is a property of
# these weights. Of the seeds 20261003-20261007 (tried in that order), this one has
# transformers' float32 farthest beyond the bound while ONNX Runtime stays within 0.4 of what
# the rule allows on every probe.
ROUNDING = ("tiny-r", (5, 32, 4))
ROUNDING_SEED = 20261004
# make-fixtures refuses a tiny-r whose ONNX Runtime values use more of what the rule allows:
# the margin that other CPUs' kernels (which round differently) have in CI.
ROUNDING_MARGIN = 0.5
BOS = "<bos>"
MAX_POSITIONS = 128  # small on purpose: tests can build a statement that is too long
SIZE_LIMIT = 12 * 2**20  # all fixtures together
FIXTURE_EPOCH = 1767398400  # 2026-01-03T00:00:00Z, the seed notebook's date
# Far above float32 roundoff (1e-7), so a stand-in's hidden states and NLLs really move and
# its parity probe would catch it passed off as the fixture; small enough that every
# stand-in keeps its fixture's character (it is "the same model, later in training").
STANDIN_NOISE = 1e-3


def load_export_module() -> types.ModuleType:
    """scripts/export's module (uatools.export.cli), so fixtures use exactly its code."""
    from uatools.export import cli

    return cli


def train_tokenizer(corpus_path: str, bos: bool = False):
    """Byte-level BPE like GPT-NeoX's: no prefix space, no BOS/EOS added on encode.

    Special tokens take ids 0 and 1 as in Pythia's tokenizer (<|endoftext|>, <|padding|>).
    With bos=True a third special token <bos> (id 2) is prepended to every encoding, as
    Gemma's and LLaMA's tokenizers do.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # Pythia's tokenizer.json has a ByteLevel post-processor (offsets only, no tokens added).
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True)
    specials = [EOT, PAD] + ([BOS] if bos else [])
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False)
    tok.train([corpus_path], trainer)
    if bos:
        bos_id = tok.token_to_id(BOS)
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(add_prefix_space=False, trim_offsets=True),
            processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1",
                                          special_tokens=[(BOS, bos_id)]),
        ])
    return tok


def save_tokenizer_files(backend, out_dir: str, bos: bool = False) -> None:
    """tokenizer.json plus a tokenizer_config.json shaped like Pythia's on the hub, so
    AutoTokenizer builds the same transformers class (GPTNeoXTokenizer) as for real Pythia
    and scripts/export meets the same wrapping (and its post-processor handling).
    With bos=True the generic fast class, which keeps tokenizer.json's post-processor."""
    backend.save(os.path.join(out_dir, "tokenizer.json"))
    config = {"add_prefix_space": False, "bos_token": EOT, "eos_token": EOT, "unk_token": EOT,
              "pad_token": PAD, "model_max_length": MAX_POSITIONS, "tokenizer_class": "GPTNeoXTokenizer"}
    if bos:
        config.update(bos_token=BOS, tokenizer_class="PreTrainedTokenizerFast")
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


def make_model(layers: int, hidden: int, heads: int, vocab_size: int, seed: int):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden,  # Pythia uses 4x; 2x keeps the fixtures small
        hidden_act="gelu", rotary_pct=0.25, rotary_emb_base=10000, max_position_embeddings=MAX_POSITIONS,
        initializer_range=INIT_STD, layer_norm_eps=1e-5, use_parallel_residual=True,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, use_cache=True)
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(config).eval()
    perturb_norms(model, seed)
    return model


def perturb_norms(model, seed: int) -> None:
    """Random layer-norm gains and biases: all-ones/zeros would make every layer's output
    statistics alike, which real trained models are not."""
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or "layer_norm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=gen))


def plant_massive_activations(model, embed_std: float = MASSIVE_EMBED_STD) -> None:
    """Layer 0's MLP output bias writes MASSIVE_DIMS into the residual stream of every token;
    the later layer norms (and the final one) read those dims with gain 1e-3 and the others
    with a gain scaled up by the massive dims' share of the normalising std. The token
    embeddings get std `embed_std`."""
    import math

    import torch

    hidden = model.config.hidden_size
    dims = sorted(MASSIVE_DIMS)
    others = [d for d in range(hidden) if d not in MASSIVE_DIMS]
    # The massive dims dominate the per-token std that layer norm divides by; the other
    # dims' own std is about the embeddings' (the layers add less than that).
    boost = math.sqrt(sum(v * v for v in MASSIVE_DIMS.values()) / hidden) / embed_std
    with torch.no_grad():
        emb = model.gpt_neox.embed_in.weight
        emb *= embed_std / INIT_STD
        bias = model.gpt_neox.layers[0].mlp.dense_4h_to_h.bias
        for d, v in MASSIVE_DIMS.items():
            bias[d] += v
        norms = [model.gpt_neox.final_layer_norm]
        for layer in model.gpt_neox.layers[1:]:
            norms += [layer.input_layernorm, layer.post_attention_layernorm]
        for norm in norms:
            norm.weight[dims] = 1e-3
            norm.weight[others] *= boost
            norm.bias[dims] = 0.0


def save_checkpoint(model, backend, out_dir: str, bos: bool = False) -> None:
    # Start from an empty dir so files from an older layout never linger in the fixture.
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer_files(backend, out_dir, bos)
    # generation_config.json is noise for these fixtures (and carries no information).
    gen = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gen):
        os.unlink(gen)


def export_args(name: str, model_dir: str, out_dir: str, token_states: bool) -> list:
    return (["--model", model_dir, "--out", out_dir, "--dtype", "float32", "--device", "cpu",
             "--source-name", f"fixture/{name}"] + (["--token-states"] if token_states else []))


# export.json's "source" as the committed fixtures have it: scripts/export now adds commit,
# commit_reason and weights, which a rebuild drops so the fixtures stay byte-identical
# (the checkpoint is model.safetensors beside them); stand-ins keep them.
FIXTURE_SOURCE_KEYS = ("model", "revision")


def fixture_source(meta: dict) -> dict:
    return {**meta, "source": {k: meta["source"][k] for k in FIXTURE_SOURCE_KEYS}}


def export_fixture(export_mod, name: str, out_dir: str, token_states: bool = False, stand_in: bool = False) -> None:
    args = export_mod.parse_args(export_args(name, out_dir, out_dir, token_states)
                                 + ["--reference-dataset", DEMO_DATASET])
    meta = export_mod.run(args)
    if not stand_in:
        export_mod.write_json_atomic(os.path.join(out_dir, "export.json"), fixture_source(meta))


# What --graph-only reads from a committed fixture; it rewrites only the last two.
CHECKPOINT_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
GRAPH_FILES = ["model.onnx", "export.json"]


def regraph_fixture(export_mod, name: str, fixture_dir: str, token_states: bool = False) -> None:
    """--graph-only: a fresh model.onnx and export.json for an existing fixture, exported
    from its own checkpoint, with the committed probes (seed values) kept in export.json and
    reference.safetensors left alone. Refuses (ExportError) when the export's tokenizer.json
    or config.json differ from the fixture's, the probes' statements or tokens differ, or
    either the fresh probes or the new graph are outside the parity bound of the kept ones."""
    import filecmp

    import numpy as np
    from safetensors import safe_open

    parity = export_mod.parity

    error = export_mod.ExportError
    missing = [f for f in CHECKPOINT_FILES + GRAPH_FILES + ["reference.safetensors"]
               if not os.path.isfile(os.path.join(fixture_dir, f))]
    if missing:
        raise error(f"{fixture_dir}: no {', '.join(missing)} (--graph-only needs a complete fixture; "
                    "rebuild it without --graph-only)")
    with open(os.path.join(fixture_dir, "export.json"), encoding="utf-8") as f:
        kept = json.load(f)["probes"]
    with safe_open(os.path.join(fixture_dir, "reference.safetensors"), "np") as f:
        ref_dataset = (f.metadata() or {}).get("dataset_sha256")
    if ref_dataset != sha256_file(DEMO_DATASET):
        raise error(f"{fixture_dir}/reference.safetensors is not for {os.path.relpath(DEMO_DATASET, REPO_ROOT)} "
                    "as it is now; rebuild the fixture without --graph-only")
    with tempfile.TemporaryDirectory(prefix=f"make-fixtures-{name}-") as tmp:
        model_dir, out_dir = os.path.join(tmp, "hf"), os.path.join(tmp, "onnx")
        os.makedirs(model_dir)
        for f in CHECKPOINT_FILES:
            shutil.copyfile(os.path.join(fixture_dir, f), os.path.join(model_dir, f))
        meta = export_mod.run(export_mod.parse_args(export_args(name, model_dir, out_dir, token_states)))
        for f in ("tokenizer.json", "config.json"):
            if not filecmp.cmp(os.path.join(out_dir, f), os.path.join(fixture_dir, f), shallow=False):
                raise error(f"{name}: the export's {f} differs from the fixture's; rebuild it without --graph-only")
        fresh = meta["probes"]
        if [(p["text"], p["input_ids"]) for p in fresh] != [(p["text"], p["input_ids"]) for p in kept]:
            raise error(f"{name}: the committed probes are other statements or tokens than the export's; "
                        "rebuild it without --graph-only")
        # This machine's seed values vs the kept ones: same checkpoint, so rounding only.
        seed_err = 0.0
        for a, b in zip(fresh, kept):
            for key in export_mod.POOLED_ORDER:
                seed_err = max(seed_err, parity.vector_error(np.asarray(a[key]), np.asarray(b[key]))[0])
            seed_err = max(seed_err, parity.nll_error(a["nll"], b["nll"]))
        # The new graph (ONNX Runtime, one right-padded batch) vs the kept seed values.
        input_ids, attention_mask, lengths = export_mod.right_padded_ids([p["input_ids"] for p in kept], "cpu")
        session = export_mod.ort_session(os.path.join(out_dir, "model.onnx"), "cpu")
        graph = export_mod.compare_with_probes(export_mod.run_ort(session, input_ids, attention_mask), lengths, kept,
                                               "float32")
        bound = parity.bound("float32")
        print(f"make-fixtures: {name}: kept seed values vs this machine's: {seed_err:.3g} "
              f"({seed_err / bound:.3f} of the bound); new graph vs kept probes: {graph['probe_pooled_error']:.3g}, "
              f"{graph['probe_of_allowed']:.3f} of what the parity rule allows", flush=True)
        if not (seed_err <= bound and graph["probe_of_allowed"] <= 1.0):
            raise error(f"{name}: beyond the float32 parity bound {bound:.3g}; rebuild it without --graph-only")
        meta["probes"] = kept
        export_mod.write_json_atomic(os.path.join(out_dir, "export.json"), fixture_source(meta))
        for f in GRAPH_FILES:
            shutil.copyfile(os.path.join(out_dir, f), os.path.join(fixture_dir, f + ".tmp"))
        for f in GRAPH_FILES:
            os.replace(os.path.join(fixture_dir, f + ".tmp"), os.path.join(fixture_dir, f))


def perturb_weights(model, seed: int, rel: float = STANDIN_NOISE) -> None:
    """Every parameter += rel * its RMS * N(0, 1): relative to each tensor's own scale, so
    layer-norm gains (about 1) and projections (about INIT_STD) move alike. Tensors that are
    all zeros stay so."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            rms = p.pow(2).mean().sqrt()
            p.add_(rel * rms * torch.randn(p.shape, generator=gen))


def make_stand_ins(export_mod, fixtures_dir: str, names: list, steps: list, seed: int, out_root: str,
                   token_states: bool = False) -> int:
    from transformers import GPTNeoXForCausalLM

    backends = {}
    for name in names:
        src = os.path.join(fixtures_dir, name)
        if not os.path.isfile(os.path.join(src, "model.safetensors")):
            print(f"make-fixtures: error: {src}: no model.safetensors (the fixture's checkpoint)", file=sys.stderr)
            return 1
        bos = name == MASSIVE[0]
        if bos not in backends:
            backends[bos] = train_tokenizer(CORPUS, bos=bos)
        for step in steps:
            standin = f"{name}-step{step}"
            out_dir = os.path.join(out_root, standin)
            print(f"make-fixtures: {standin}: {name}'s weights + {STANDIN_NOISE:g} x RMS noise (seed {seed + step})",
                  flush=True)
            model = GPTNeoXForCausalLM.from_pretrained(src, attn_implementation="eager").eval()
            perturb_weights(model, seed + step)
            save_checkpoint(model, backends[bos], out_dir, bos=bos)
            try:
                export_fixture(export_mod, standin, out_dir, token_states, stand_in=True)
            except export_mod.ExportError as e:
                print(f"make-fixtures: error: {standin}: {e}", file=sys.stderr)
                return 1
    return 0


def comma_list(text: str, conv=str) -> list:
    """argparse type: "a,b,c"; argparse prefixes its errors with the flag's name."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        vals = [conv(t) for t in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of integers: {text!r}")
    if not vals:
        raise argparse.ArgumentTypeError("empty list")
    if len(set(vals)) != len(vals):
        raise argparse.ArgumentTypeError(f"an entry is repeated: {text!r}")
    return vals


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=20260103, help="base random seed (default: 20260103)")
    p.add_argument("--out", default=None, help="fixtures dir (default: tests/fixtures); with --checkpoint-of, "
                   "required: the stand-ins' parent dir")
    p.add_argument("--only", nargs="*", choices=sorted(LADDER) + [MASSIVE[0], ROUNDING[0]],
                   help="make only these fixtures")
    known = sorted(LADDER) + [MASSIVE[0]]
    p.add_argument("--checkpoint-of", metavar="NAME[,NAME...]", default=None,
                   type=comma_list,
                   help=f"make stand-in checkpoints of these fixtures ({', '.join(known)}), read from --fixtures")
    p.add_argument("--steps", metavar="N[,N...]", default=None, type=lambda t: comma_list(t, int),
                   help="with --checkpoint-of: one stand-in per step, noise seeded by --seed + N")
    p.add_argument("--fixtures", default=FIXTURES, help="where --checkpoint-of reads fixtures (default: tests/fixtures)")
    p.add_argument("--graph-only", action="store_true",
                   help="re-export model.onnx and export.json of the existing fixtures in --out (with --only: "
                        "those) from their checkpoints, keeping the seed values (reference.safetensors, "
                        "export.json's probes) byte for byte")
    p.add_argument("--token-states", action="store_true",
                   help="export the token-level graph (scripts/export --token-states) instead of the default")
    args = p.parse_args(argv)
    if args.graph_only and ROUNDING[0] in (args.only or []):
        p.error(f"--graph-only: {ROUNDING[0]} is always rebuilt in full (its plant is re-checked then)")
    if args.graph_only and args.checkpoint_of is not None:
        p.error("--graph-only re-exports fixtures; --checkpoint-of makes stand-ins: give one of them")
    if args.checkpoint_of is not None:
        unknown = [n for n in args.checkpoint_of if n not in known]
        if unknown:
            p.error(f"--checkpoint-of: no fixture {', '.join(unknown)} (known: {', '.join(known)})")
        if args.steps is None:
            p.error("--checkpoint-of needs --steps N[,N...]")
        if any(n < 0 for n in args.steps):
            p.error("--steps must be non-negative")
        if args.only is not None:
            p.error("--only makes fixtures; --checkpoint-of makes stand-ins: give one of them")
        # No default: in tests/fixtures the stand-ins would look like committed fixtures.
        if args.out is None:
            p.error("--checkpoint-of needs --out DIR (stand-ins go to DIR/NAME-stepN)")
    elif args.steps is not None:
        p.error("--steps needs --checkpoint-of")
    elif args.out is None:
        args.out = FIXTURES
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # Progress bars from transformers/hub would drown the per-fixture log lines.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Fixed export.json "created" so a rebuild is byte-identical (see export.creation_time).
    os.environ.setdefault("SOURCE_DATE_EPOCH", str(FIXTURE_EPOCH))
    import numpy as np
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # float32 sums in one fixed order -> identical bytes on rerun
    np.random.seed(args.seed)

    export_mod = load_export_module()
    if args.checkpoint_of is not None:
        return make_stand_ins(export_mod, args.fixtures, args.checkpoint_of, args.steps, args.seed, args.out,
                              args.token_states)
    if args.graph_only:
        return regraph_fixtures(export_mod, args)
    return make_fixtures(export_mod, args)


def regraph_fixtures(export_mod, args) -> int:
    """--graph-only: every chosen fixture re-exported from its checkpoint, seed values kept."""
    for name in list(LADDER) + [MASSIVE[0]]:
        if args.only and name not in args.only:
            continue
        print(f"make-fixtures: {name}: new model.onnx and export.json from {os.path.join(args.out, name)}, "
              "seed values kept", flush=True)
        try:
            regraph_fixture(export_mod, name, os.path.join(args.out, name), args.token_states)
        except export_mod.ExportError as e:
            print(f"make-fixtures: error: {name}: {e}", file=sys.stderr)
            return 1
    return check_total_size(args.out)


def make_fixtures(export_mod, args) -> int:
    """The ladder (tiny-a..tiny-d) and tiny-m, from a tokenizer trained on the corpus."""
    print(f"make-fixtures: training tokenizer on {os.path.relpath(CORPUS, REPO_ROOT)}", flush=True)
    backend = train_tokenizer(CORPUS)

    for index, (name, (layers, hidden, heads)) in enumerate(LADDER.items()):
        if args.only and name not in args.only:
            continue
        out_dir = os.path.join(args.out, name)
        print(f"make-fixtures: {name}: {layers} layers, hidden {hidden}, {heads} heads", flush=True)
        model = make_model(layers, hidden, heads, backend.get_vocab_size(), args.seed + 1000 * index)
        save_checkpoint(model, backend, out_dir)
        try:
            export_fixture(export_mod, name, out_dir, args.token_states)
        except export_mod.ExportError as e:
            print(f"make-fixtures: error: {name}: {e}", file=sys.stderr)
            return 1

    name, (layers, hidden, heads) = MASSIVE
    if not args.only or name in args.only:
        out_dir = os.path.join(args.out, name)
        print(f"make-fixtures: {name}: {layers} layers, hidden {hidden}, {heads} heads, massive activations "
              f"on dims {sorted(MASSIVE_DIMS)}, BOS-adding tokenizer", flush=True)
        bos_backend = train_tokenizer(CORPUS, bos=True)
        model = make_model(layers, hidden, heads, bos_backend.get_vocab_size(), args.seed + 1000 * len(LADDER))
        plant_massive_activations(model)
        save_checkpoint(model, bos_backend, out_dir, bos=True)
        try:
            export_fixture(export_mod, name, out_dir, args.token_states)
        except export_mod.ExportError as e:
            print(f"make-fixtures: error: {name}: {e}", file=sys.stderr)
            return 1

    name, (layers, hidden, heads) = ROUNDING
    if not args.only or name in args.only:
        print(f"make-fixtures: {name}: {layers} layers, hidden {hidden}, {heads} heads, {MASSIVE[0]}'s plant with "
              f"embeddings of std {INIT_STD}, seed {ROUNDING_SEED}", flush=True)
        try:
            make_rounding_fixture(export_mod, os.path.join(args.out, name), args.token_states)
        except export_mod.ExportError as e:
            print(f"make-fixtures: error: {name}: {e}", file=sys.stderr)
            return 1

    return check_total_size(args.out)


def make_rounding_fixture(export_mod, out_dir: str, token_states: bool) -> None:
    """tiny-r (see the docstring); refuses (ExportError) when the plant does not hold here:
    transformers' float32 within the bound of float64 on every probe, ONNX Runtime within it of
    transformers' values (the rule before float64 probes would accept it), or ONNX Runtime
    using more than ROUNDING_MARGIN of what the rule allows against float64."""
    name, (layers, hidden, heads) = ROUNDING
    backend = train_tokenizer(CORPUS, bos=True)
    model = make_model(layers, hidden, heads, backend.get_vocab_size(), ROUNDING_SEED)
    plant_massive_activations(model, embed_std=INIT_STD)
    save_checkpoint(model, backend, out_dir, bos=True)
    meta = export_mod.run(export_mod.parse_args(export_args(name, out_dir, out_dir, token_states)))
    probes = meta["probes"]
    input_ids, attention_mask, lengths = export_mod.right_padded_ids([p["input_ids"] for p in probes], "cpu")
    session = export_mod.ort_session(os.path.join(out_dir, "model.onnx"), "cpu")
    graph = export_mod.compare_with_probes(export_mod.run_ort(session, input_ids, attention_mask), lengths, probes,
                                           "float32")
    bound = export_mod.parity.bound("float32")
    own = graph["probe_own_float64_error"]
    print(f"make-fixtures: {name}: transformers' float32 vs float64 {own:.3g} ({own / bound:.2f} of the bound); "
          f"ONNX Runtime vs float64 {graph['probe_float64_error']:.3g}, vs transformers {graph['probe_pooled_error']:.3g} "
          f"({graph['probe_pooled_error'] / bound:.2f} of the bound); {graph['probe_of_allowed']:.3f} of what the "
          "rule allows", flush=True)
    if not (own > bound and graph["probe_pooled_error"] > bound and graph["probe_of_allowed"] <= ROUNDING_MARGIN):
        raise export_mod.ExportError(f"the plant does not hold on this machine (transformers beyond the bound from "
                                     f"float64, ONNX Runtime beyond it from transformers and within "
                                     f"{ROUNDING_MARGIN} of what the rule allows)")
    export_mod.write_json_atomic(os.path.join(out_dir, "export.json"), fixture_source(meta))


def check_total_size(out: str) -> int:
    names = list(LADDER) + [MASSIVE[0], ROUNDING[0]]
    total = sum(dir_bytes(os.path.join(out, n)) for n in names if os.path.isdir(os.path.join(out, n)))
    print(f"make-fixtures: fixtures total {total / 2**20:.2f} MiB", flush=True)
    if total > SIZE_LIMIT:
        print(f"make-fixtures: error: fixtures exceed {SIZE_LIMIT / 2**20:.0f} MiB", file=sys.stderr)
        return 1
    return 0
