"""The machine a benchmark or check ran on, for its report."""
import platform
import subprocess


def cpu_model(default=None) -> str:
    """lscpu's model name; else `default`, else platform.processor()."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default if default is not None else platform.processor()
