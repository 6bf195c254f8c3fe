"""The peer of extract: what a careful user writes with transformers instead, on the CPU.

Same work as `extract --batch-size 32 --device cpu` on a float32 Hugging Face checkpoint,
done the way a careful user would do it in Python:

  load        AutoTokenizer and AutoModelForCausalLM.from_pretrained(CHECKPOINT,
              dtype=float32), eval(); torch's default thread count.
  tokenize    every statement of the dataset (seed schema: categories in file order, pair
              by pair, A then B = statement_id 0, 1, ...) with tokenizer(text), as the seed
              does (Gemma's tokenizer prepends <bos>).
  batch       statements sorted by (token count, statement_id), cut into runs of
              --batch-size, right-padded with the tokenizer's pad id (0 when it has none),
              attention_mask 1 on real tokens.
  forward     one pass per batch under torch.inference_mode(), output_hidden_states=True.
  pool        in torch, every layer (0 = embeddings .. L = after the final norm), over each
              row's n real tokens: mean (tokens 0..n-1), mean_skip_first (1..n-1; zeros when
              n == 1), last (token n-1); float32.
  nll         per statement, transformers' loss with labels = input_ids: cross entropy of
              the float32 logits at t-1 against token t, mean over t = 1..n-1 (NaN when
              n == 1).
  save        OUT/pooled.npy float32 [n_statements, L+1, 3, hidden] (axis 2: mean,
              mean_skip_first, last), OUT/nll.npy float64 [n_statements], OUT/n_tokens.npy,
              in statement_id order; saving is part of the timed work.

Prints and writes to OUT/bench-transformers.json: the wall clock from process start
(interpreter start, imports and model load included) to the end of saving, its parts
(imports, load, tokenize, forward+pool+nll, save), statements/s and peak RSS
(getrusage ru_maxrss). For the exit-to-exit number run it under `/usr/bin/time -v`.

  scripts/bench-transformers --checkpoint out/real-model/hf --out /tmp/bt
  /usr/bin/time -v scripts/bench-transformers --checkpoint out/real-model/hf --out /tmp/bt
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

from uatools import REPO
from uatools.contract import POOLINGS
from uatools.seed.dataset import DatasetError, statement_texts

T_SCRIPT = time.perf_counter()
POOLED_ORDER = list(POOLINGS)


def seconds_since_process_start() -> float | None:
    """Seconds since this process was started by the kernel (Linux /proc), or None."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5); fields[0] is field 3
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def load_statements(path: str) -> list:
    try:
        return statement_texts(path)
    except DatasetError as e:
        sys.exit(f"bench-transformers: {e}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench-transformers", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="float32 Hugging Face checkpoint dir (config, weights, tokenizer)")
    p.add_argument("--dataset", default=os.path.join(REPO, "tests", "data", "seed-dataset.json"),
                   help="dataset in the seed's schema (default tests/data/seed-dataset.json, 460 statements)")
    p.add_argument("--batch-size", type=int, default=32, help="statements per batch (default 32)")
    p.add_argument("--out", required=True, help="output dir (pooled.npy, nll.npy, n_tokens.npy, bench-transformers.json)")
    a = p.parse_args(argv)
    if a.batch_size < 1:
        p.error("--batch-size must be at least 1")
    return a


def padded(ids: list, rows: list, pad_id: int):
    """(input_ids, attention_mask) int64 [B, T]: the rows' tokens right-padded to the longest."""
    import torch

    seq = max(len(ids[i]) for i in rows)
    input_ids = torch.full((len(rows), seq), pad_id, dtype=torch.int64)
    attention_mask = torch.zeros((len(rows), seq), dtype=torch.int64)
    for r, i in enumerate(rows):
        input_ids[r, :len(ids[i])] = torch.tensor(ids[i], dtype=torch.int64)
        attention_mask[r, :len(ids[i])] = 1
    return input_ids, attention_mask


def pool_and_nll(out, input_ids, attention_mask):
    """(pooled [B, L+1, 3, H] in POOLED_ORDER, nll float64 [B]) of one batch's forward pass."""
    import torch
    import torch.nn.functional as F

    mask = attention_mask.to(torch.float32)                       # [B, T]
    n = attention_mask.sum(dim=1)                                 # [B]
    skip = mask.clone()
    skip[:, 0] = 0.0
    weights = torch.stack([mask, skip], dim=1)                    # [B, 2, T]
    counts = torch.stack([n, n - 1], dim=1).clamp(min=1).to(torch.float32).unsqueeze(-1)
    last_at = (n - 1).clamp(min=0)
    rows_t = torch.arange(input_ids.shape[0])
    per_layer = []
    for h in out.hidden_states:                                   # L+1 x [B, T, H]
        h = h.float() * mask.unsqueeze(-1)
        means = torch.bmm(weights, h) / counts                    # [B, 2, H]
        last = h[rows_t, last_at].unsqueeze(1)                    # [B, 1, H]
        per_layer.append(torch.cat([means, last], dim=1))
    pooled = torch.stack(per_layer, dim=1)                        # [B, L+1, 3, H]
    # transformers' loss: logits at t-1 predict token t, padding ignored (-100).
    labels = input_ids.masked_fill(attention_mask == 0, -100)[:, 1:]
    logits = out.logits[:, :-1].float()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                         ignore_index=-100, reduction="none").view(labels.shape)
    predicted = (labels != -100).sum(dim=1)
    nll = ce.sum(dim=1).double() / predicted.clamp(min=1).double()
    nll = torch.where(predicted > 0, nll, torch.full_like(nll, float("nan")))
    return pooled, nll


def forward_all(model, ids: list, batches: list, pad_id: int):
    """Every batch through the model: (pooled float32 [n, L+1, 3, H], nll float64 [n])."""
    import numpy as np
    import torch

    n_layers = model.config.get_text_config().num_hidden_layers
    hidden = model.config.get_text_config().hidden_size
    pooled_all = np.zeros((len(ids), n_layers + 1, 3, hidden), dtype=np.float32)
    nll_all = np.full(len(ids), np.nan, dtype=np.float64)
    with torch.inference_mode():
        for rows in batches:
            input_ids, attention_mask = padded(ids, rows, pad_id)
            out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                        use_cache=False)
            pooled, nll = pool_and_nll(out, input_ids, attention_mask)
            idx = np.asarray(rows)
            pooled_all[idx] = pooled.numpy()
            nll_all[idx] = nll.numpy()
    return pooled_all, nll_all


def main(argv=None) -> int:
    a = parse_args(argv)
    since_start_at_main = seconds_since_process_start()

    t = time.perf_counter()
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    t_imports = time.perf_counter() - t

    t = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(a.checkpoint)
    model = AutoModelForCausalLM.from_pretrained(a.checkpoint, dtype=torch.float32).eval()
    t_load = time.perf_counter() - t

    t = time.perf_counter()
    texts = load_statements(a.dataset)
    ids = [tok(text)["input_ids"] for text in texts]
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    batches = [order[i:i + a.batch_size] for i in range(0, len(order), a.batch_size)]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    t_tokenize = time.perf_counter() - t

    n_layers = model.config.get_text_config().num_hidden_layers
    hidden = model.config.get_text_config().hidden_size
    n_tokens = np.asarray([len(x) for x in ids], dtype=np.int64)

    t = time.perf_counter()
    pooled_all, nll_all = forward_all(model, ids, batches, pad_id)
    t_forward = time.perf_counter() - t

    t = time.perf_counter()
    os.makedirs(a.out, exist_ok=True)
    np.save(os.path.join(a.out, "pooled.npy"), pooled_all)
    np.save(os.path.join(a.out, "nll.npy"), nll_all)
    np.save(os.path.join(a.out, "n_tokens.npy"), n_tokens)
    t_save = time.perf_counter() - t

    t_end = time.perf_counter()
    since_start = seconds_since_process_start()
    before_script = (since_start_at_main - (time.perf_counter() - T_SCRIPT)) if since_start_at_main else None
    peak_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    result = {
        "checkpoint": os.path.abspath(a.checkpoint),
        "dataset": os.path.abspath(a.dataset),
        "model": type(model).__name__,
        "n_statements": len(texts),
        "n_batches": len(batches),
        "batch_size": a.batch_size,
        "n_tokens": int(n_tokens.sum()),
        "n_tokens_padded": sum(len(b) * max(len(ids[i]) for i in b) for b in batches),
        "n_layers": n_layers,
        "hidden_size": hidden,
        "pooled_order": POOLED_ORDER,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "wall_s_from_process_start": since_start,
        "wall_s_from_script_start": t_end - T_SCRIPT,
        "interpreter_start_s": before_script if before_script is None or before_script >= 0 else None,
        "imports_s": t_imports,
        "load_s": t_load,
        "tokenize_s": t_tokenize,
        "forward_pool_nll_s": t_forward,
        "save_s": t_save,
        "statements_per_s_forward": len(texts) / t_forward,
        "peak_rss_mib": peak_rss_kb / 1024,
    }
    with open(os.path.join(a.out, "bench-transformers.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    wall = since_start if since_start is not None else t_end - T_SCRIPT
    print(f"bench-transformers: {len(texts)} statements x {n_layers + 1} layers x 3 poolings "
          f"({len(batches)} batches of <= {a.batch_size}, {torch.get_num_threads()} torch threads)")
    print(f"time (s): imports {t_imports:.2f}, load {t_load:.2f}, tokenize {t_tokenize:.2f}, "
          f"forward+pool+nll {t_forward:.2f}, save {t_save:.2f}; from process start {wall:.2f} "
          f"({len(texts) / wall:.1f} statements/s end to end, {len(texts) / t_forward:.1f}/s forward)")
    print(f"peak RSS {peak_rss_kb / 1024:.0f} MiB; wrote {a.out}")
    return 0
