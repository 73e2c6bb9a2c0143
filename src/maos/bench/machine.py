"""Facts about the machine a benchmark ran on, for its report: CPU model, load, versions,
a process's peak memory."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
from pathlib import Path


def load_average() -> float:
    """The one-minute load average; NaN where the system has none."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def dist_version(dist: str) -> str:
    """The installed version of distribution ``dist``, or ``not installed``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def memory_gb() -> float:
    """Physical memory, in GiB."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / (1 << 30)


def peak_rss(pid: int) -> int:
    """The process's peak resident set (``VmHWM``), in bytes; 0 if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def byte_compile_maos() -> bool:
    """Compile MAOS's modules whose bytecode is missing or stale, as ``pip install`` leaves an
    installed package; False if some could not be written (a read-only install).

    Benchmarks start ``maos`` processes. From an editable checkout where
    ``PYTHONDONTWRITEBYTECODE`` is set, each would compile every module it imports, which no
    installed MAOS does: ``maos run``'s imports took 1.4 s instead of 0.9 s on the 2-core VM."""
    import compileall
    import io

    import maos

    with contextlib.redirect_stdout(io.StringIO()):  # compileall reports each failure on stdout
        return bool(compileall.compile_dir(Path(maos.__file__).parent, quiet=1))
