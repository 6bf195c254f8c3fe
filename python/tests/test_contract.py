"""uatools.contract against the Rust contract it repeats."""
import os
import re

from uatools import REPO
from uatools.contract import POOLINGS


def test_poolings_are_the_rust_contracts_list():
    with open(os.path.join(REPO, "schemas", "src", "contract.rs")) as f:
        text = f.read()
    listed = re.search(r'pub const LIST: &\'static str = "([^"]*)";', text)
    assert listed, "schemas/src/contract.rs: no Pooling::LIST"
    assert tuple(listed.group(1).split(",")) == POOLINGS
