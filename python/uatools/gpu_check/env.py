"""The children's environment (ONNX Runtime's CUDA build, torch's CUDA libraries), running
them under the watchdog, and GPU memory polling."""
import glob
import os
import shlex
import shutil
import subprocess
import threading
import time

from uatools import REPO
from uatools.binaries import find_bin as find_release_bin
from uatools.binaries import find_ort_lib, torch_nvidia_lib_dirs
from uatools.gpu_check.runlog import CURRENT, log


def find_bin(name: str, explicit):
    """--extract-bin/--analyze-bin, else $NAME_BIN, .dev/bin, the target dirs, else PATH."""
    if explicit:
        return explicit
    path, found = find_release_bin(name, dev_bin=True)
    return path if found else (shutil.which(name) or os.path.join(REPO, "target", "release", name))


def ort_env(args, dry: bool) -> dict:
    """Environment for children: ONNX Runtime's CUDA build (--ort-site, --ort-stage or .ort/lib),
    CUDA libraries from torch's nvidia packages."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    site = args.ort_site
    libs = find_ort_lib(site)
    parts = sorted((p for d in (args.ort_stage or "").split(":") if d
                    for p in glob.glob(os.path.join(d, "*part.*"))), key=os.path.basename)
    if not libs and parts:
        cmd = (f"cat {' '.join(shlex.quote(p) for p in parts)} | xz -dc | "
               f"(mkdir -p {shlex.quote(site)} && tar xf - -C {shlex.quote(site)})")
        log(f"$ {cmd}")
        if not dry:
            t0 = time.perf_counter()
            subprocess.run(cmd, shell=True, check=True)
            log(f"   unpacked {len(parts)} part(s) in {time.perf_counter() - t0:.1f} s")
            libs = find_ort_lib(site)
    if libs:
        if os.path.isdir(os.path.join(site, "onnxruntime")):
            env["PYTHONPATH"] = site + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    else:
        libs = find_ort_lib(REPO)  # .ort/lib from scripts/setup (--gpu on a GPU machine)
    if libs and not os.environ.get("ORT_DYLIB_PATH"):
        env["ORT_DYLIB_PATH"] = libs[0]
    if not libs and not os.environ.get("ORT_DYLIB_PATH"):
        log(f"note: no ONNX Runtime library in --ort-site {site}, --ort-stage {args.ort_stage} or .ort/lib: "
            "extract falls back to its own search (an importable Python onnxruntime)")
    nvlibs = torch_nvidia_lib_dirs()
    if nvlibs:
        env["LD_LIBRARY_PATH"] = ":".join(nvlibs[1] + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
    for k in ("ORT_DYLIB_PATH", "PYTHONPATH"):
        if k in env:
            log(f"env {k}={env[k]}")
    if "LD_LIBRARY_PATH" in env:
        log(f"env LD_LIBRARY_PATH=<{env['LD_LIBRARY_PATH'].count(':') + 1} dirs, torch's nvidia libs first>")
    return env


class GpuMemPoller:
    """Polls nvidia-smi memory.used (MiB) in a background thread; peak minus baseline."""

    def __init__(self, interval=0.1):
        self.interval, self.samples, self.ok = interval, [], shutil.which("nvidia-smi") is not None
        self._stop = threading.Event()
        self.baseline = self._read() if self.ok else None

    def _read(self):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                  "-i", "0"], check=False, capture_output=True, text=True, timeout=10).stdout
            return float(out.strip().splitlines()[0])
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None

    def __enter__(self):
        if self.ok:
            self._t = threading.Thread(target=self._run, daemon=True)
            self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            v = self._read()
            if v is not None:
                self.samples.append(v)
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        if self.ok:
            self._stop.set()
            self._t.join()

    def result(self) -> dict:
        if not self.ok or not self.samples:
            return {"peak_mib": None, "baseline_mib": self.baseline, "samples": 0}
        peak = max(self.samples)
        return {"peak_mib": peak, "baseline_mib": self.baseline, "samples": len(self.samples),
                "peak_minus_baseline_mib": peak - (self.baseline or 0.0)}


class StepError(RuntimeError):
    pass


def run_cmd(cmd, env, dry, timeout=None):
    log("$ " + " ".join(shlex.quote(c) for c in cmd))
    if dry:
        return None, 0.0
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    CURRENT["proc"] = proc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    finally:
        CURRENT["proc"] = None
    wall = time.perf_counter() - t0
    p = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    for line in (p.stdout + p.stderr).splitlines()[-40:]:
        log("  | " + line)
    if p.returncode != 0:
        last = next((l.strip() for l in reversed((p.stdout + p.stderr).splitlines()) if l.strip()), "")
        raise StepError(f"{os.path.basename(cmd[0])} exited with {p.returncode}: {last[:400]}")
    return p, wall
