"""scripts/pythia-suite's checkpoint-name rules equal schemas/src/checkpoint.rs's: both run the
cases of schemas/tests/checkpoint_names.json (the Rust side in its unit tests)."""
import json
import os

from uatools import REPO
from uatools.pythia_suite import series_and_size, step_of

with open(os.path.join(REPO, "schemas", "tests", "checkpoint_names.json")) as f:
    CASES = json.load(f)


def test_series_and_size_as_in_rust():
    assert len(CASES["series_and_size"]) > 10
    for model_id, expected in CASES["series_and_size"]:
        assert series_and_size(model_id) == (tuple(expected) if expected else None), model_id


def test_step_as_in_rust():
    assert len(CASES["step"]) > 10
    for revision, expected in CASES["step"]:
        assert step_of(revision) == expected, revision
