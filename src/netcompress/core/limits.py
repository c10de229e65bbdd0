"""Memory limits checked before a large allocation, so a huge input shape or file is refused with one line
instead of an out-of-memory kill (or a tensor allocation that runs for a minute first)."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

# a size above this is refused without asking the OS: torch sizes are int64, and nothing here needs more
MAX_ELEMENTS = 1 << 40


def available_memory() -> int:
    """Bytes this process can still allocate: MemAvailable, capped by a cgroup (v2 or v1) memory limit."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            avail = 1 << 62  # unknown: do not refuse on a guess
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and int(limit) < 1 << 60:
                avail = min(avail, max(0, int(limit) - int(Path(usage_file).read_text().strip())))
            break
        except (OSError, ValueError):
            continue
    return avail


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} bytes"  # unreachable


def check_memory(nbytes: int, what: str, fix: str) -> None:
    """Raise ConfigError if ``nbytes`` would not fit in the memory available now: ``what`` needs about N, the
    machine has M available; ``fix``."""
    avail = available_memory()
    if nbytes > avail:
        raise ConfigError(f"{what} needs about {format_bytes(nbytes)} of memory, more than the "
                          f"{format_bytes(avail)} available; {fix}")
