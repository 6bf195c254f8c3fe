"""Where the Rust binaries (extract, analyze) and the ONNX Runtime library are found."""
import glob
import os
import subprocess
import sys
import time

from uatools import REPO

# Where an ONNX Runtime shared library sits under a root: an unpacked onnxruntime(-gpu) wheel,
# a folder holding .ort/ (scripts/setup), or a plain lib/.
ORT_LIB_GLOBS = ("onnxruntime/capi/libonnxruntime.so.*", ".ort/lib/libonnxruntime.so.*", "lib/libonnxruntime.so.*")


def bin_candidates(name: str, dirs=(), use_env: bool = True, dev_bin: bool = False) -> list:
    """Candidate paths of a release binary, in the order they are tried.

    dirs (named folders) first, then $NAME_BIN (use_env), .dev/bin (dev_bin),
    $CARGO_TARGET_DIR/release, and the repository's target/release.
    """
    cands = [os.path.join(d, name) for d in dirs if d]
    if use_env and os.environ.get(f"{name.upper()}_BIN"):
        cands.append(os.environ[f"{name.upper()}_BIN"])
    if dev_bin:
        cands.append(os.path.join(REPO, ".dev", "bin", name))
    if os.environ.get("CARGO_TARGET_DIR"):
        cands.append(os.path.join(os.environ["CARGO_TARGET_DIR"], "release", name))
    cands.append(os.path.join(REPO, "target", "release", name))
    return cands


def find_bin(name: str, dirs=(), use_env: bool = True, dev_bin: bool = False):
    """(path, found): the first executable candidate, else the first candidate and False."""
    cands = bin_candidates(name, dirs, use_env, dev_bin)
    for c in cands:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c, True
    return cands[0], False


def default_extract_bin() -> str:
    """extract: $EXTRACT_BIN, $CARGO_TARGET_DIR/release, target/release (the first if none exists)."""
    return find_bin("extract")[0]


def find_ort_lib(root: str, globs=ORT_LIB_GLOBS) -> list:
    """ONNX Runtime libraries under root, pattern by pattern, each pattern's matches sorted."""
    libs = []
    for g in globs:
        libs += sorted(glob.glob(os.path.join(root, g)))
    return libs


def ort_env(env: dict) -> dict:
    """extract finds ONNX Runtime from ORT_DYLIB_PATH; point it at .ort/ when that is what setup made."""
    if not env.get("ORT_DYLIB_PATH"):
        libs = sorted(glob.glob(os.path.join(REPO, ".ort", "lib", "libonnxruntime.so.*"))
                      + glob.glob(os.path.join(REPO, ".ort", "lib", "libonnxruntime.*.dylib")))
        if libs:
            env["ORT_DYLIB_PATH"] = libs[0]
    return env


def torch_nvidia_lib_dirs():
    """(nvidia folder, [lib dirs]) of the CUDA/cuDNN libraries pip's torch carries
    (site-packages/nvidia/*/lib), or None when torch is not importable."""
    try:
        import torch
    except ImportError:
        return None
    nv = os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), "nvidia")
    return nv, sorted(set(glob.glob(os.path.join(nv, "*", "lib")) + glob.glob(os.path.join(nv, "*", "*", "lib"))))


def run_timed(cmd: list, log, tail: int = 4000):
    """Runs cmd (logged first), echoes the last `tail` characters of its stdout and
    stderr; returns (the finished process, its wall clock in seconds)."""
    log("$ " + " ".join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    sys.stdout.write(proc.stdout[-tail:])
    sys.stderr.write(proc.stderr[-tail:])
    return proc, seconds
