"""What every part of the export shares: the format's constants, its error and its log."""
from uatools import parity  # noqa: F401  (the ONNX Runtime vs torch check uses the one parity rule)
from uatools.contract import POOLINGS

FORMAT = "ua-export/1"
DEFAULT_OPSET = 18
# Weights over this go to model.onnx.data. ONNX protobuf files cannot exceed 2 GiB, and
# below that ONNX Runtime still creates a session faster from external data: on
# Gemma-3-270M (1.07 GB) 2.4-3.1 s against 4.3-5.1 s from one file (docs/benchmarks.md).
# Test fixtures (a few MB) stay one file.
EXTERNAL_DATA_THRESHOLD = 64 * 2**20
EXTERNAL_DATA_NAME = "model.onnx.data"
# The two graph layouts (see the contract above), by their output names.
INPUTS = ["input_ids", "attention_mask"]
REDUCED_OUTPUTS = ["pooled", "nll_sum", "n_predicted"]
TOKEN_STATES_OUTPUTS = ["hidden_states", "token_logprobs"]
# The reduced graph's pooling axis (pooled[:, l, k, :]), recorded in export.json.
POOLED_ORDER = list(POOLINGS)

# Original probe statements of clearly different lengths (short, medium, long) so the
# right-padded verification batch really contains padding.
DEFAULT_PROBES = [
    "The river was cold this morning.",
    "Most birds build their nests in spring, when food is easy to find.",
    ("A lighthouse keeper once wrote that the sea never looks the same twice, "
    "not even on the calmest summer mornings."),
]


class ExportError(Exception):
    """A problem the user can fix; printed as one line without a traceback."""


def log(msg: str) -> None:
    print(f"export: {msg}", flush=True)


def first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
