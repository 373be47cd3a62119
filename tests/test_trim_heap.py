"""actors.backend.trim_heap: under the actors' allocator settings (cluster.config.MALLOC_ENV, which
never trim by themselves) freed heap memory stays resident until trim_heap hands it back. Run in a
child process started with those settings, as an actor is."""

import os
import subprocess
import sys
from pathlib import Path

from cluster.config import MALLOC_ENV

CHILD = """
from actors.backend import trim_heap

def rss_mb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024

base = rss_mb()
blocks = [bytearray(b"x" * 65536) for _ in range(4096)]  # 256 MiB in 64 KiB heap blocks
held = rss_mb()
del blocks
freed = rss_mb()
released = trim_heap()
print(base, held, freed, rss_mb(), released)
"""


def test_trim_heap_returns_what_the_settings_keep():
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=root, env={**os.environ, **MALLOC_ENV,
                         "PYTHONPATH": str(root)}, capture_output=True, text=True, check=True).stdout.split()
    base, held, freed, trimmed = map(float, out[:4])
    assert held - base > 200  # the 256 MiB are resident
    assert freed - base > 200  # freeing keeps them (the trim threshold is 4 GiB)
    assert freed - trimmed > 200 and out[4] == "True"  # trim_heap gives them back
