"""The run's log and clock, and what the --deadline-s watchdog needs to write the report."""
import sys
import time

CURRENT: dict = {}  # what the --deadline-s watchdog writes out: report, out dir, shape result, step
LOG_LINES: list = []
T_START = time.perf_counter()


def log(msg: str) -> None:
    line = f"[gpu-check {time.strftime('%H:%M:%S')} +{time.perf_counter() - T_START:.0f}s] {msg}"
    LOG_LINES.append(line)
    print(line, file=sys.stderr, flush=True)
    if msg.startswith("== "):
        CURRENT["step"] = msg[3:]


def elapsed() -> float:
    return time.perf_counter() - T_START
