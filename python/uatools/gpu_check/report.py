"""report.json and report.md: the targets, the markdown tables, and the --deadline-s watchdog
that writes them before an outer time limit."""
import json
import os
import time

from uatools import parity
from uatools.gpu_check.plan import READ_TARGET, SPEED_TARGET
from uatools.gpu_check.runlog import CURRENT, LOG_LINES, elapsed, log
from uatools.gpu_check.steps import fmt, session_s


def cell(text) -> str:
    """Free text for a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def targets(report) -> dict:
    out = {}
    for r in report["shapes"]:
        e = r.get("extract")
        if r["shape"] == SPEED_TARGET["shape"] and e and "speed_ratio_wall" in e:
            out["speed"] = {"shape": r["shape"], "target_ratio": SPEED_TARGET["ratio"],
                            "ratio_own_rate": e.get("speed_ratio_own"), "ratio_wall": e["speed_ratio_wall"],
                            "met_own_rate": (e.get("speed_ratio_own") or 0) >= SPEED_TARGET["ratio"],
                            "met_wall": e["speed_ratio_wall"] >= SPEED_TARGET["ratio"]}
        sv = r.get("session_vs_read")
        if r["shape"] == READ_TARGET["shape"] and sv:
            out["session_vs_read"] = {"shape": r["shape"], "target_ratio": READ_TARGET["ratio"],
                                      "ratio_session_plus_extraction": sv["ratio_session_plus_extraction"],
                                      "ratio_wall": sv["ratio_wall"],
                                      "met": (sv["ratio_session_plus_extraction"] or 1e9) <= READ_TARGET["ratio"]}
    return out


def md_header(report) -> list:
    """The title, the run's versions and command, and the shapes that erred."""
    L = []
    L += [f"# gpu-check {report['date']}", "",
         (f"device: {report['device_name']}; torch {report['versions'].get('torch')}, transformers "
         f"{report['versions'].get('transformers')}; extract {report['extract_bin']}; ONNX Runtime "
         f"{report.get('onnxruntime_version') or 'n/a'}; dtype {report['dtype']}"), "",
         f"command: `{report['command']}`", ""]
    errs = [r for r in report["shapes"] if "error" in r]
    for r in errs:
        L.append(f"- **{r['shape']}**: {r['error']}")
    if errs:
        L.append("")
    return L


def md_speed(report) -> list:
    """extract's rates against the seed loop's, per extract run, and the speed target."""
    t = report.get("targets", {})
    L = []
    L += ["## speed: extract vs the seed's loop, same card", "",
          ("| shape | extract args | statements | session s | extraction s | extract wall s | extract st/s (own) | "
          "extract st/s (wall) | seed loop st/s (statements) | ratio own | ratio wall |"),
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["shapes"]:
        s = r.get("seed_loop") or {}
        for e in r.get("extract_runs", []):
            if "wall_s" not in e:
                L.append(f"| {r['shape']} | `{e['config']}` | {cell(e.get('skipped') or e.get('error'))} "
                         "| | | | | | | | |")
                continue
            L.append(f"| {r['shape']} | `{e['config']}` | {round(e['statements_per_s_wall'] * e['wall_s'])} | "
                     f"{fmt(session_s(e), '.2f')} | {fmt(e.get('extraction_s_reported'), '.2f')} | "
                     f"{fmt(e['wall_s'], '.2f')} | {fmt(e.get('statements_per_s_reported'), '.1f')} | "
                     f"{fmt(e['statements_per_s_wall'], '.1f')} | {fmt(s.get('statements_per_s'), '.2f')} "
                     f"({s.get('n_statements', 'n/a')}) | {fmt(e.get('speed_ratio_own'), '.1f')}x | "
                     f"{fmt(e.get('speed_ratio_wall'), '.1f')}x |")
    if "speed" in t:
        sp = t["speed"]
        L += ["", (f"Target >= {sp['target_ratio']:g}x at {sp['shape']}: own rate {fmt(sp['ratio_own_rate'], '.1f')}x "
                  f"({'met' if sp['met_own_rate'] else 'not met'}), whole wall clock {fmt(sp['ratio_wall'], '.1f')}x "
                  f"({'met' if sp['met_wall'] else 'not met'}).")]
    return L


def md_batching(report) -> list:
    """The batching configurations compared, on the shapes that ran more than one."""
    L = []
    for r in report["shapes"]:
        runs = r.get("extract_runs") or []
        if len(runs) < 2:
            continue
        base = runs[0].get("statements_per_s_reported")
        L += ["", f"### batching at {r['shape']} (extract's own rate; whole wall clock; GPU peak)", ""]
        for e in runs:
            if "wall_s" not in e:
                L.append(f"- `{e['config']}`: {e.get('skipped') or e.get('error')}")
                continue
            own = e.get("statements_per_s_reported")
            rel = f", {own / base:.2f}x the first" if own and base and e is not runs[0] else ""
            mem = (e.get("gpu_memory_nvidia_smi") or {}).get("peak_minus_baseline_mib")
            L.append(f"- `{e['config']}`: {fmt(own, '.1f')} st/s{rel}; {e['statements_per_s_wall']:.1f} st/s wall; "
                     f"GPU peak {fmt(mem, '.0f')} MiB; parity "
                     f"{'pass' if (e.get('parity') or {}).get('pass') else 'n/a or FAIL'}")
    return L


def md_session_vs_read(report) -> list:
    """Session creation + extraction against the weights' cold read, and the read target."""
    t = report.get("targets", {})
    L = []
    L += ["", "## session creation + extraction vs reading the weights from disk", "",
          ("| shape | weights GB | read s (cold) | session s | extraction s | session + extraction s | ratio | "
          "extract wall s | ratio wall |"), "|---|---|---|---|---|---|---|---|---|"]
    for r in report["shapes"]:
        sv, w = r.get("session_vs_read"), r.get("weights_read") or {}
        if not sv:
            continue
        L.append(f"| {r['shape']} | {w['bytes'] / 1e9:.2f} | {sv['read_s']:.2f} ({'yes' if sv['read_cold'] else 'NO: warm'}) | "
                 f"{fmt(sv['session_s'], '.2f')} | {fmt(sv['extraction_s'], '.2f')} | "
                 f"{fmt(sv['session_plus_extraction_s'], '.2f')} | {fmt(sv['ratio_session_plus_extraction'], '.2f')}x | "
                 f"{sv['extract_wall_s']:.2f} | {sv['ratio_wall']:.2f}x |")
    if "session_vs_read" in t:
        sr = t["session_vs_read"]
        L += ["", (f"Target <= {sr['target_ratio']:g}x at {sr['shape']}: "
                  f"{fmt(sr['ratio_session_plus_extraction'], '.2f')}x ({'met' if sr['met'] else 'not met'}).")]
    return L


def md_memory(report) -> list:
    """nvidia-smi's peak during extract against the weights' size."""
    L = []
    L += ["", "## GPU memory (nvidia-smi peak minus idle baseline)", "",
          "| shape | weights MiB | extract peak MiB | peak / weights | seed loop torch max allocated MiB |",
          "|---|---|---|---|---|"]
    for r in report["shapes"]:
        m = r.get("memory")
        if m:
            L.append(f"| {r['shape']} | {m['weights_mib']:.0f} | {fmt(m['extract_peak_mib'], '.0f')} | "
                     f"{fmt(m['extract_peak_over_weights'], '.2f')} | "
                     f"{fmt((r.get('seed_loop') or {}).get('torch_max_allocated_mib'), '.0f')} |")
    return L


def md_parity(report) -> list:
    """Parity of every extract run against transformers on the same card."""
    b = parity.bound(report["dtype"])
    L = []
    L += ["", (f"## parity against transformers {report['dtype']} on the same card (scripts/parity.py, bound "
              f"{b:.3g})"), "",
          ("| shape | extract args | statements | embeddings error | of bound | worst (layer, statement, dim: ours / "
          "ref, scale) | NLL error | of bound | pref max abs | pass |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["shapes"]:
        for e in r.get("extract_runs", []):
            p = e.get("parity")
            if not p:
                continue
            w = p["emb_worst"] or {}
            L.append(f"| {r['shape']} | `{e['config']}` | {p['n_statements']} | {p['emb_error']:.3g} | "
                     f"{p['emb_fraction_of_bound']:.3f} | {w.get('layer')}, {w.get('statement')}, {w.get('dim')}: "
                     f"{fmt(w.get('ours'), '.6g')} / {fmt(w.get('ref'), '.6g')}, {fmt(w.get('scale'), '.4g')} | "
                     f"{p['nll_error']:.3g} | {p['nll_fraction_of_bound']:.3f} | "
                     f"{fmt(p.get('preference_max_abs'))} | {'yes' if p['pass'] else 'NO'} |")
    return L


def md_spread(report) -> list:
    """float16 against float32 transformers, same weights (context for the bound)."""
    L = []
    spreads = [r for r in report["shapes"] if r.get("fp32_spread")]
    if spreads:
        L += ["", "float16 against float32 transformers, same weights (context for the bound):", "",
              "| shape | statements | transformers fp16: emb / NLL error | extract fp16: emb / NLL error |",
              "|---|---|---|---|"]
        for r in spreads:
            sp = r["fp32_spread"]
            if "error" in sp:
                L.append(f"| {r['shape']} | {cell(sp['error'])} | | |")
                continue
            tt, xx = sp["transformers_fp16_vs_fp32"], sp["extract_fp16_vs_fp32"]
            L.append(f"| {r['shape']} | {sp['n_statements']} | {tt['emb_error']:.3g} / {tt['nll_error']:.3g} | "
                     f"{xx['emb_error']:.3g} / {xx['nll_error']:.3g} |")
    return L


def md_overflow(report) -> list:
    """Activations and overflow: planted values, max |value|, inf/NaN, the verdict."""
    L = []
    L += ["", "## activations and overflow", "",
          ("| shape | planted | max abs hidden (torch, layer) | max abs pooled (cache) | no inf/NaN | extract probe | "
          "parity | verdict |"), "|---|---|---|---|---|---|---|---|"]
    for r in report["shapes"]:
        hp = (r.get("build") or {}).get("hidden_probe")
        if not hp:
            continue
        m, o = r.get("massive"), r.get("overflow") or {}
        planted = (f"layer {m['planted']['layer']} MLP bias, dims {m['planted']['dims']}: "
                   f"{' and '.join(format(v, 'g') for v in m['planted']['values'])}; in the parity layers "
                   f"{m.get('parity_layers_carrying_it', 'n/a')}") if m else "no"
        probe = cell((r.get("extract") or {}).get("probe_line") or
                     (f"extract failed: {r['error']}" if "error" in r else "n/a"))
        if "error" in r:
            verdict = "FAILED (see the error above)"
        elif m and "ok" in m:
            verdict = "ok" if m["ok"] else "FAILED: " + ", ".join(m["failed"])
        else:
            verdict = "ok" if o.get("ok") else ("FAILED" if o else "n/a")
        L.append(f"| {r['shape']} | {planted} | {hp['max_abs']:.4g} ({hp['max_abs_layer']}) | "
                 f"{fmt(o.get('cache_max_abs_pooled'), '.4g')} | {o.get('ok', 'n/a')} | {probe} | "
                 f"{'yes' if (r.get('parity') or {}).get('pass') else ('NO' if r.get('parity') else 'n/a')} | "
                 f"{verdict} |")
    return L


def md_tail(report) -> list:
    """r per sampled layer, extract --device auto, and the time per shape."""
    L = []
    rs = [r for r in report["shapes"] if (r.get("r") or {}).get("max_abs_delta_seed_formula") is not None]
    if rs:
        L += ["", "r per sampled layer (random weights: reported, not judged): max |delta r| seed formulas on "
                  "the cache / analyze: " + "; ".join(
                      f"{r['shape']} {fmt(r['r']['max_abs_delta_seed_formula'])} / "
                      f"{fmt(r['r'].get('max_abs_delta_analyze_vs_seed_loop'))}" for r in rs)]
    for r in report["shapes"]:
        if "auto" in r:
            a = r["auto"]
            L += ["", (f"extract --device auto ({r['shape']}): provider {a.get('execution_provider')}, "
                      f"ok: {a.get('ok')}; output: {a.get('lines') or a.get('error') or a.get('skipped')}")]

    L += ["", "time per shape: " + ", ".join(f"{r['shape']} {fmt(r.get('total_s'), '.0f')} s"
                                            for r in report["shapes"]) +
          f"; whole run {fmt(report.get('elapsed_s'), '.0f')} s", ""]
    return L


def markdown(report) -> str:
    L = []
    for section in (md_header, md_speed, md_batching, md_session_vs_read, md_memory, md_parity, md_spread,
                    md_overflow, md_tail):
        L += section(report)
    return "\n".join(L)


def write_report(report, out):
    report["elapsed_s"] = elapsed()
    report["targets"] = targets(report)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "report.json.tmp"), "w") as f:
        json.dump(report, f, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    os.replace(os.path.join(out, "report.json.tmp"), os.path.join(out, "report.json"))
    try:
        md = markdown(report)
    except Exception as e:  # noqa: BLE001 - a report half-filled by a cut-short step must still be written
        md = f"# gpu-check\n\nreport.md could not be rendered ({type(e).__name__}: {e}); see report.json\n"
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out, "log.txt"), "w") as f:
        f.write("\n".join(LOG_LINES) + "\n")
    return md


def watchdog(deadline_s: float) -> None:
    """--deadline-s: leave a complete report before an outer time limit kills the run."""
    time.sleep(max(0.0, deadline_s - elapsed()))
    log(f"deadline of {deadline_s:.0f} s reached during: {CURRENT.get('step')}; writing the report and exiting")
    res = CURRENT.get("res")
    proc = CURRENT.get("proc")
    if proc is not None and proc.poll() is None:
        proc.kill()
    if res is not None:
        res["error"] = f"cut off by --deadline-s {deadline_s:.0f} during: {CURRENT.get('step')}"
    for _ in range(3):  # the main thread may be mid-update of the report
        try:
            write_report(CURRENT["report"], CURRENT["out"])
            break
        except RuntimeError:
            time.sleep(0.2)
    os._exit(124)
