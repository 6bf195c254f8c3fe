"""The cache contract's names the Python side needs, as schemas/src/contract.rs has them
(tests/test_contract.py holds them equal): the poolings, in the order of `Pooling::ALL`."""

POOLINGS = ("mean", "mean_skip_first", "last")
