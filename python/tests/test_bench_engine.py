"""bench-engine's batches must be extract's (extract/src/batch.rs, plan_sorts_by_length_and_fills_batches)."""
from uatools.bench import engine


def test_plan_is_extracts_longest_batch_first():
    lengths = [5, 2, 9, 2, 5, 7, 1]
    assert engine.plan(lengths, 3) == [[2], [0, 4, 5], [6, 1, 3]]


def test_pad_right_pads_with_a_mask():
    feed = engine.pad([[1, 2, 3], [4]])
    assert feed["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert feed["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
