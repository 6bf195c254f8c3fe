"""Runs a command and prints the bytes it read through read(2) (`rchar` of
/proc/PID/io, page-cache hits included) and its wall time: the process is waited
for without being reaped (WNOWAIT), so its counters can still be read.
Memory-mapped reads (polars may map Parquet files) are not counted, so for a
command that maps files this is a lower bound."""
import os
import subprocess
import sys
import time


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    usage = "usage: bytes-read COMMAND [ARGS...]\n\n" + __doc__
    if not argv:
        sys.exit(usage)
    if argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    wall = time.monotonic() - t0
    with open(f"/proc/{proc.pid}/io") as f:
        io = dict(line.split(": ") for line in f.read().splitlines())
    code = proc.wait()
    print(f"rchar {int(io['rchar'])} bytes ({int(io['rchar']) / 1e6:.1f} MB), wall {wall:.2f} s, exit {code}")
    return code
