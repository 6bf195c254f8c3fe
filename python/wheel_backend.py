"""The build backend of the wheel ua-scaling (PEP 517; the root pyproject.toml names it).

One wheel carries both release binaries (extract, analyze: two crates of the workspace) and the
Python package uatools. It runs the very command scripts/lib.sh's build_release runs,
`cargo build --release --workspace --locked`, in the same CARGO_TARGET_DIR, so that a wheel
built after the test build compiles nothing (maturin builds one crate's binaries through its own
`cargo rustc` call, with other features and flags: see docs/benchmarks.md, "The wheel"). The
binaries are stripped and packed as the wheel's scripts, so that pip puts them on PATH; the
platform tag is the manylinux tag their glibc symbol versions allow.

Only the standard library: pip's isolated build environment installs nothing for it.
"""
import base64
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - requires-python is >= 3.11; a clear line where it is not
    raise SystemExit("ua-scaling builds with Python >= 3.11 (tomllib); this is " + sys.version.split()[0])

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARIES = ("extract", "analyze")
PACKAGE = "uatools"
# Where the wheel's Python comes from, inside the repository.
PACKAGE_DIR = os.path.join(ROOT, "python", PACKAGE)


def project() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def cargo_version() -> str:
    """The workspace's version (Cargo.toml [workspace.package]): one version for crates and wheel."""
    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as f:
        return tomllib.load(f)["workspace"]["package"]["version"]


def dist_name(name: str) -> str:
    """The distribution name as wheel file and dist-info folder names write it (PEP 427/503)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def metadata(proj: dict, version: str) -> str:
    """METADATA (core metadata 2.1) from pyproject.toml's [project] table."""
    lines = ["Metadata-Version: 2.1", f"Name: {proj['name']}", f"Version: {version}",
             f"Summary: {proj['description']}", f"License: {proj['license']}",
             f"Requires-Python: {proj['requires-python']}"]
    lines += [f"Requires-Dist: {r}" for r in proj.get("dependencies", [])]
    for extra, reqs in proj.get("optional-dependencies", {}).items():
        lines.append(f"Provides-Extra: {extra}")
        for r in reqs:
            req, _, marker = r.partition(";")
            cond = f'({marker.strip()}) and extra == "{extra}"' if marker.strip() else f'extra == "{extra}"'
            lines.append(f"Requires-Dist: {req.strip()}; {cond}")
    readme = proj.get("readme")
    body = ""
    if readme:
        lines.append("Description-Content-Type: text/markdown")
        with open(os.path.join(ROOT, readme), encoding="utf-8") as f:
            body = f.read()
    return "\n".join(lines) + "\n\n" + body


def entry_points(proj: dict) -> str:
    scripts = proj.get("scripts", {})
    return "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in scripts.items())


GLIBC = re.compile(rb"GLIBC_2\.([0-9]+)")


def glibc_minor(data: bytes) -> int:
    """The newest glibc 2.x symbol version a binary asks for (0 when it names none)."""
    return max((int(m) for m in GLIBC.findall(data)), default=0)


def platform_tag(binaries) -> str:
    """manylinux_2_N_<arch> on Linux, N the newest glibc symbol version the binaries need
    (PEP 600: the binaries then run on any distribution with glibc >= 2.N); elsewhere the
    interpreter's platform (a wheel for this machine only)."""
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    if not plat.startswith("linux_"):
        return plat
    arch = plat[len("linux_"):]
    minor = 17  # manylinux2014's glibc, the oldest a Rust std binary runs on
    for b in binaries:
        with open(b, "rb") as f:
            minor = max(minor, glibc_minor(f.read()))
    return f"manylinux_2_{minor}_{arch}"


def target_dir() -> str:
    return os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")


def build_binaries() -> list:
    """The release build (a no-op when scripts/test or scripts/demo already ran it in the same
    CARGO_TARGET_DIR), then the binaries' paths."""
    cargo = shutil.which("cargo")
    if cargo is None:
        raise SystemExit("ua-scaling: building the wheel needs cargo (a Rust toolchain, https://rustup.rs); "
                         "pip installs a built wheel without one")
    print("ua-scaling: cargo build --release --workspace --locked "
          f"(CARGO_TARGET_DIR={target_dir()})", file=sys.stderr, flush=True)
    subprocess.run([cargo, "build", "--release", "--workspace", "--locked"], cwd=ROOT, check=True,
                   stdout=sys.stderr)
    return [os.path.join(target_dir(), "release", b) for b in BINARIES]


def stripped_copy(src: str, dst: str) -> None:
    """The binary without its symbol table (a fifth of its size); as it is where no
    `strip` (binutils) is installed."""
    shutil.copyfile(src, dst)
    strip = shutil.which("strip")
    if strip:
        subprocess.run([strip, "--strip-all", dst], check=True)
    else:
        print(f"ua-scaling: no strip found: {os.path.basename(src)} packed with its symbols",
              file=sys.stderr)


def record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


class WheelWriter:
    """A wheel zip: files added with their RECORD lines, RECORD written last."""

    def __init__(self, path: str, dist_info: str):
        self.zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
        self.dist_info, self.records = dist_info, []

    def add(self, arcname: str, data: bytes, executable: bool = False) -> None:
        info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        # The file type too: pip marks a script executable only where the mode says regular file.
        info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
        self.zip.writestr(info, data)
        self.records.append(record_line(arcname, data))

    def close(self) -> None:
        record = f"{self.dist_info}/RECORD"
        self.records.append(f"{record},,")
        info = zipfile.ZipInfo(record, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        self.zip.writestr(info, "\n".join(self.records) + "\n")
        self.zip.close()


def package_files():
    """(arcname, path) of every file of the package uatools, sorted (no caches)."""
    out = []
    for d, dirs, files in os.walk(PACKAGE_DIR):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for f in sorted(files):
            if f.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(d, f)
            out.append((os.path.relpath(path, os.path.dirname(PACKAGE_DIR)).replace(os.sep, "/"), path))
    return out


def write_wheel(wheel_directory: str, binaries: list) -> str:
    proj, version = project(), cargo_version()
    name = dist_name(proj["name"])
    tag = f"py3-none-{platform_tag(binaries)}"
    dist_info, data = f"{name}-{version}.dist-info", f"{name}-{version}.data"
    filename = f"{name}-{version}-{tag}.whl"
    final = os.path.join(wheel_directory, filename)
    with tempfile.TemporaryDirectory() as tmp:
        w = WheelWriter(os.path.join(tmp, filename), dist_info)
        for arc, path in package_files():
            with open(path, "rb") as f:
                w.add(arc, f.read())
        for b in binaries:
            small = os.path.join(tmp, os.path.basename(b))
            stripped_copy(b, small)
            with open(small, "rb") as f:
                w.add(f"{data}/scripts/{os.path.basename(b)}", f.read(), executable=True)
        w.add(f"{dist_info}/METADATA", metadata(proj, version).encode())
        w.add(f"{dist_info}/WHEEL", (f"Wheel-Version: 1.0\nGenerator: ua-scaling wheel_backend\n"
                                     f"Root-Is-Purelib: false\nTag: {tag}\n").encode())
        w.add(f"{dist_info}/entry_points.txt", entry_points(proj).encode())
        w.close()
        os.makedirs(wheel_directory, exist_ok=True)
        shutil.move(os.path.join(tmp, filename), final)
    return filename


# PEP 517 hooks: a wheel only (no sdist: the wheel is built from a clone; no editable install:
# a clone's .venv takes the package uatools alone, scripts/lib.sh).
def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return write_wheel(wheel_directory, build_binaries())
