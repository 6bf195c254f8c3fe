"""The seed's dataset: categories of (A, B) statement pairs, walked in the seed's order."""
import json
from collections.abc import Iterator
from typing import NamedTuple


class Statement(NamedTuple):
    category: str
    pair_index: int
    side: str  # "A" or "B"
    text: str


def load_dataset(path: str) -> dict:
    with open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def iter_statements(dataset: dict) -> Iterator[Statement]:
    """Statements in the seed's order: categories in JSON order, pair by pair, A then B."""
    for category, data in dataset.items():
        for pair_index, (text_a, text_b) in enumerate(data["pairs"]):
            yield Statement(category, pair_index, "A", text_a)
            yield Statement(category, pair_index, "B", text_b)


class DatasetError(ValueError):
    """A file that is not a dataset in the seed's schema."""


def statement_texts(path: str) -> list:
    """Statement texts in extract's order: categories in file order, pair by pair, A then B."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
        texts = []
        for category, spec in data.items():
            for pair in spec["pairs"]:
                a, b = pair
                if not isinstance(a, str) or not isinstance(b, str):
                    raise TypeError(f"category {category!r}: a pair holds a non-string")
                texts += [a, b]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DatasetError(f"{path}: not a dataset in the seed's schema ({type(e).__name__}: {e})") from e
    if not texts:
        raise DatasetError(f"{path}: no statements")
    return texts
