"""python/wheel_backend.py's pieces that need no cargo build: the metadata pip reads, the manylinux
tag, the wheel's files and RECORD (scripts/test-wheel builds, installs and runs the real wheel)."""
import base64
import hashlib
import stat
import zipfile

import wheel_backend as wb


def test_extras_keep_their_platform_markers():
    proj = {"name": "ua-scaling", "description": "d", "license": "MIT", "requires-python": ">=3.11",
            "dependencies": ["numpy", "onnxruntime-gpu>=1.31,<2; sys_platform == 'linux'"],
            "optional-dependencies": {"gpu": ["onnxruntime-gpu[cuda,cudnn]>=1.31,<2; sys_platform == 'linux'"],
                                      "export": ["torch"]}}
    lines = wb.metadata(proj, "1.2.3").split("\n\n")[0].split("\n")
    assert "Version: 1.2.3" in lines and "Requires-Python: >=3.11" in lines
    assert "Requires-Dist: onnxruntime-gpu>=1.31,<2; sys_platform == 'linux'" in lines
    assert ("Requires-Dist: onnxruntime-gpu[cuda,cudnn]>=1.31,<2; (sys_platform == 'linux') and extra == \"gpu\""
            in lines)
    assert 'Requires-Dist: torch; extra == "export"' in lines
    assert lines.index("Provides-Extra: gpu") < lines.index("Provides-Extra: export")


def test_the_manylinux_tag_is_the_newest_glibc_symbol():
    assert wb.glibc_minor(b"\0GLIBC_2.2.5\0GLIBC_2.34\0GLIBC_2.17\0GLIBC_PRIVATE\0") == 34
    assert wb.glibc_minor(b"no versions") == 0


def test_the_wheel_records_every_file_and_marks_scripts_executable(tmp_path):
    path = tmp_path / "x.whl"
    w = wb.WheelWriter(str(path), "x-1.dist-info")
    w.add("pkg/__init__.py", b"A = 1\n")
    w.add("x-1.data/scripts/tool", b"\x7fELF...", executable=True)
    w.close()
    with zipfile.ZipFile(path) as z:
        infos = {i.filename: i for i in z.infolist()}
        record = z.read("x-1.dist-info/RECORD").decode().splitlines()
        mode = infos["x-1.data/scripts/tool"].external_attr >> 16
        assert stat.S_ISREG(mode) and mode & 0o111
        assert not (infos["pkg/__init__.py"].external_attr >> 16) & 0o111
        for line in record[:-1]:
            name, digest, size = line.split(",")
            data = z.read(name)
            want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={want}" and int(size) == len(data)
    assert record[-1] == "x-1.dist-info/RECORD,,"
    assert wb.dist_name("ua-scaling") == "ua_scaling"


def test_the_package_is_packed_without_caches():
    files = [arc for arc, _ in wb.package_files()]
    assert "uatools/reader.py" in files and "uatools/extras.py" in files
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)
