"""gpu-check's plan and budget arithmetic, and its measurements on small hand-made inputs."""
import argparse

import numpy as np
import pytest

from uatools.gpu_check import measure, plan, report


def test_shape_list():
    assert plan.shape_list("410m, 1.4b,") == ["410m", "1.4b"]
    assert plan.shape_list("none") == []
    assert plan.shape_list(" ") == []


def test_estimates_start_after_start_up_and_accumulate():
    assert plan.estimates(["410m", "1.4b", "6.9b"]) == [
        "410m ~120 s, through extract ~75 s (starts ~30 s)",
        "1.4b ~140 s, through extract ~95 s (starts ~150 s)",
        "6.9b ~300 s, through extract ~200 s (starts ~290 s)",
    ]


def test_planned_run_fits_as_the_design_says():
    # --budget-s 420: 6.9b (200 s through extract) starts only if the first two end by 220 s.
    assert plan.shape_fits("6.9b", 220.0, 420)
    assert not plan.shape_fits("6.9b", 220.5, 420)
    # By the estimates 410m and 1.4b end at 30 + 120 + 140 = 290 s: too late for 6.9b.
    assert not plan.shape_fits("6.9b", plan.STARTUP_EST_S + plan.EST_S["410m"] + plan.EST_S["1.4b"], 420)
    assert plan.shape_fits("12b", 1e9, None)  # no budget: every shape starts


def test_over_budget(monkeypatch):
    monkeypatch.setattr(plan, "elapsed", lambda: 100.0)
    assert plan.over_budget(argparse.Namespace(budget_s=99.0))
    assert not plan.over_budget(argparse.Namespace(budget_s=100.0))
    assert not plan.over_budget(argparse.Namespace(budget_s=None))


def test_extract_runs_for():
    args = argparse.Namespace(batching_shapes=["410m"], batching=["--batch-size 32", "--max-tokens 8192"],
                              batch_size=None)
    assert plan.extract_runs_for("410m", args) == [("--batch-size 32", ["--batch-size", "32"]),
                                                   ("--max-tokens 8192", ["--max-tokens", "8192"])]
    assert plan.extract_runs_for("1.4b", args) == [("extract's defaults", [])]
    args.batch_size = 8
    assert plan.extract_runs_for("1.4b", args) == [("--batch-size 8", ["--batch-size", "8"])]


def test_parse_extract_summary():
    text = ("probe: session created in 850 ms\n"
            "  parity: 3 probes agree (0.012 of the bound)\n"
            "extracted 460 statements x 25 layers (460 run now, 0 resumed) in 2.3 s: 200.0 statements/s\n")
    p = measure.parse_extract(text)
    assert p["statements_per_s_reported"] == 200.0
    assert p["extraction_s_reported"] == pytest.approx(460 / 200.0)  # finer than the printed 2.3 s
    assert p["session_s_reported"] == pytest.approx(0.85)
    assert p["probe_line"] == "parity: 3 probes agree (0.012 of the bound)"


def test_parity_eval_worst_and_rows():
    ref = {0: np.array([[1.0, 2.0], [4.0, 0.0]], dtype=np.float32)}
    ours = {0: np.array([[9.0, 9.0], [1.0, 2.0], [4.0, 1.0]], dtype=np.float32)}  # row 0 not compared
    rows = np.array([1, 2])
    r = measure.parity_eval(ours, np.array([0.0, 2.0, 3.0]), ref, np.array([2.0, 3.5]), [0], "float16", rows=rows)
    assert r["emb_error"] == pytest.approx(0.25)  # row 2: |1 - 0| / 4
    assert r["emb_worst"]["statement"] == 2 and r["emb_worst"]["dim"] == 1
    assert r["nll_error"] == pytest.approx(0.5 / 3.5)
    assert r["pass"] is False  # 0.25 > bound(float16) = 0.0313
    assert r["bound"] == pytest.approx(0.031261444091796875)


def test_targets_speed_and_read():
    rep = {"shapes": [
        {"shape": "410m", "extract": {"speed_ratio_wall": 120.0, "speed_ratio_own": 90.0}},
        {"shape": "6.9b", "session_vs_read": {"ratio_session_plus_extraction": 1.5, "ratio_wall": 3.0}},
    ]}
    t = report.targets(rep)
    assert t["speed"]["met_wall"] is True and t["speed"]["met_own_rate"] is False
    assert t["session_vs_read"]["met"] is True
