"""pythia-suite stops a task before extract when its weights are another revision's
(EleutherAI/pythia issues 205, 206), unless --allow-duplicate-weights."""
import json
import os
import subprocess
import sys

import pytest

from uatools import REPO, pythia_suite

SHA_FINAL = "a" * 64
SHA_STEP = "b" * 64


def make_plan(tmp_path, *extra, models="EleutherAI/pythia-12b", revisions="step50000,step58000"):
    """A plan as `pythia-suite` builds it, whose extract is a stub that leaves a mark per task."""
    stub = tmp_path / "extract"
    stub.write_text('#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = --name ] && touch "$MARKS/$2"; shift; done\n')
    stub.chmod(0o755)
    (tmp_path / "marks").mkdir()
    args = pythia_suite.parser().parse_args(["--models", models, "--revisions", revisions, "--out", str(tmp_path / "run"),
                                             "--device", "cpu", "--dtype", "float32", "--skip-export", *extra])
    return pythia_suite.build_plan(args, str(stub), str(tmp_path / "analyze"))


def write_export(task, weights):
    os.makedirs(task["export_dir"], exist_ok=True)
    meta = {"format": "ua-export/1", "source": {"model": task["model"], "revision": task["revision"], "commit": None,
                                                "commit_reason": "test", "weights": weights}}
    with open(os.path.join(task["export_dir"], "export.json"), "w") as f:
        json.dump(meta, f)


def entry(sha):
    return {"sha256": sha, "bytes": 10}


def test_identical_weights_stop_before_extract(tmp_path, monkeypatch):
    monkeypatch.setenv("MARKS", str(tmp_path / "marks"))
    plan = make_plan(tmp_path)
    early, late = plan["tasks"]
    write_export(early, {"pytorch_model.bin": entry(SHA_FINAL)})
    write_export(late, {"pytorch_model.bin": entry(SHA_FINAL)})
    with pytest.raises(SystemExit) as e:
        pythia_suite.run_task(plan, 1)
    msg = str(e.value)
    assert msg == (f"pythia-suite: task 1 (pythia-12b-step58000): EleutherAI/pythia-12b step58000 has the same "
                   f"weights as step50000 (task 0, pythia-12b-step50000): pytorch_model.bin sha256 {SHA_FINAL}; "
                   "EleutherAI/pythia issue 205/206: some step branches serve another revision's weights. "
                   "Not extracted; --allow-duplicate-weights extracts anyway")
    assert "\n" not in msg
    assert not (tmp_path / "marks" / late["name"]).exists()  # extract never ran
    # The first of the pair is caught the same way, naming the other.
    with pytest.raises(SystemExit, match="step50000 has the same weights as step58000 .task 1"):
        pythia_suite.run_task(plan, 0)


def test_different_weights_extract(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MARKS", str(tmp_path / "marks"))
    plan = make_plan(tmp_path)
    early, late = plan["tasks"]
    write_export(early, {"pytorch_model.bin": entry(SHA_STEP)})
    write_export(late, {"pytorch_model.bin": entry(SHA_FINAL)})
    pythia_suite.run_task(plan, 1)
    pythia_suite.run_task(plan, 0)
    assert (tmp_path / "marks" / late["name"]).exists() and (tmp_path / "marks" / early["name"]).exists()
    assert "same weights" not in capsys.readouterr().out


def test_only_the_same_model_is_compared(tmp_path, monkeypatch):
    """Another size, or a revision not exported yet, is no duplicate."""
    monkeypatch.setenv("MARKS", str(tmp_path / "marks"))
    plan = make_plan(tmp_path, models="EleutherAI/pythia-410m,EleutherAI/pythia-12b", revisions="step1000")
    small, big = plan["tasks"]
    write_export(small, {"model.safetensors": entry(SHA_FINAL)})
    write_export(big, {"model.safetensors": entry(SHA_FINAL)})
    pythia_suite.run_task(plan, 1)
    assert (tmp_path / "marks" / big["name"]).exists()
    assert pythia_suite.duplicate_weights(plan, big) is None


def test_shards_compare_by_hash(tmp_path):
    plan = make_plan(tmp_path)
    early, late = plan["tasks"]
    write_export(early, {"pytorch_model-00001-of-00002.bin": entry(SHA_STEP),
                         "pytorch_model-00002-of-00002.bin": entry(SHA_FINAL)})
    write_export(late, {"pytorch_model-00001-of-00002.bin": entry("c" * 64),
                        "pytorch_model-00002-of-00002.bin": entry(SHA_FINAL)})
    other, name, sha = pythia_suite.duplicate_weights(plan, late)
    assert (other["name"], name, sha) == (early["name"], "pytorch_model-00002-of-00002.bin", SHA_FINAL)


def test_allow_duplicate_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MARKS", str(tmp_path / "marks"))
    plan = make_plan(tmp_path)
    assert "allow_duplicate_weights" not in plan  # the plan is as before unless the flag is given
    for t in plan["tasks"]:
        write_export(t, {"model.safetensors": entry(SHA_FINAL)})
    pythia_suite.run_task(plan, 1, allow_duplicates=True)  # `pythia-suite task PLAN 1 --allow-duplicate-weights`
    assert "extracting anyway (--allow-duplicate-weights)" in capsys.readouterr().out
    assert (tmp_path / "marks" / plan["tasks"][1]["name"]).exists()
    (tmp_path / "2").mkdir()
    plan = make_plan(tmp_path / "2", "--allow-duplicate-weights")  # or in the plan, for every task
    assert plan["allow_duplicate_weights"] is True
    for t in plan["tasks"]:
        write_export(t, {"model.safetensors": entry(SHA_FINAL)})
    monkeypatch.setenv("MARKS", str(tmp_path / "2" / "marks"))
    pythia_suite.run_task(plan, 0)
    assert (tmp_path / "2" / "marks" / plan["tasks"][0]["name"]).exists()


def test_exports_without_weight_hashes_are_not_checked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MARKS", str(tmp_path / "marks"))
    plan = make_plan(tmp_path)
    for t in plan["tasks"]:
        write_export(t, {})
    pythia_suite.run_task(plan, 1)
    assert "records no weight hashes" in capsys.readouterr().out
    assert (tmp_path / "marks" / plan["tasks"][1]["name"]).exists()


def test_free_disk_keeps_the_weights_record(tmp_path):
    plan = make_plan(tmp_path)
    early, late = plan["tasks"]
    write_export(early, {"model.safetensors": entry(SHA_FINAL)})
    write_export(late, {"model.safetensors": entry(SHA_FINAL)})
    pythia_suite.keep_weights_record(plan, early)
    os.unlink(os.path.join(early["export_dir"], "export.json"))
    assert pythia_suite.recorded_weights(plan, early) == {"model.safetensors": SHA_FINAL}
    assert pythia_suite.duplicate_weights(plan, late)[0]["name"] == early["name"]


def test_task_command_exits_nonzero_with_one_line(tmp_path):
    plan = make_plan(tmp_path)
    for t in plan["tasks"]:
        write_export(t, {"model.safetensors": entry(SHA_FINAL)})
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    env = {**os.environ, "MARKS": str(tmp_path / "marks")}
    cmd = [sys.executable, os.path.join(REPO, "scripts", "pythia-suite"), "task", str(plan_path), "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "EleutherAI/pythia issue 205/206" in r.stderr
    assert not (tmp_path / "marks" / plan["tasks"][1]["name"]).exists()
    r = subprocess.run(cmd + ["--allow-duplicate-weights"], capture_output=True, text=True, env=env, check=False)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "marks" / plan["tasks"][1]["name"]).exists()
