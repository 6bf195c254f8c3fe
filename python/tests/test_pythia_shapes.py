"""The one Pythia shape table (python/uatools/pythia_shapes.json): each size's numbers hold together,
and no other source writes a Pythia vocabulary size of its own."""
import os
import re

from uatools import REPO, pythia


def test_each_vocabulary_gives_the_published_parameter_count():
    # The vocabularies (6.9b 50432, 12b 50688) are what the published counts need.
    for size, d in pythia.SIZES.items():
        assert d["intermediate_size"] == 4 * d["hidden_size"], size
        assert d["hidden_size"] % d["num_attention_heads"] == 0, size
        assert pythia.n_params(d["num_hidden_layers"], d["hidden_size"], d["vocab_size"]) == d["n_params"], size


def test_sizes_are_listed_smallest_first_and_the_study_sizes_are_among_them():
    counts = [d["n_params"] for d in pythia.SIZES.values()]
    assert counts == sorted(counts)
    assert set(pythia.STUDY_SIZES) <= set(pythia.SIZES)
    assert pythia.STUDY_SIZES == ["410m", "1.4b", "6.9b", "12b"]


def test_no_other_code_writes_a_pythia_vocabulary():
    vocabularies = {str(d["vocab_size"]) for d in pythia.SIZES.values()}
    pattern = re.compile(r"\b(" + "|".join(sorted(vocabularies)) + r")\b")
    found = []
    for top in ("python", "scripts", "tools"):
        for d, dirs, names in os.walk(os.path.join(REPO, top)):
            dirs[:] = [x for x in dirs if x not in ("__pycache__", "target") and not x.startswith(".")]
            for name in names:
                if name in ("pythia_shapes.json", "test_pythia_shapes.py") or name.endswith(".pyc"):
                    continue
                path = os.path.join(d, name)
                with open(path, errors="replace") as f:
                    found += [f"{os.path.relpath(path, REPO)}:{i}" for i, line in enumerate(f, 1) if pattern.search(line)]
    assert found == [], f"Pythia vocabulary sizes outside the table: {found}"
