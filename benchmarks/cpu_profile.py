"""Run ``python -m pyserf ...`` under cProfile timed by the process's CPU clock.

cluster_bench's ``--profile`` uses this: in a 200-agent storm an agent waits for a CPU most of
the time, and a wall-clock profile charges that wait to whatever line was running when the
scheduler took the CPU away. Usage: ``python cpu_profile.py OUT.prof agent -node=...``.
"""

from __future__ import annotations

import cProfile
import os
import runpy
import sys
import time

if __name__ == "__main__":
    out = sys.argv[1]
    sys.path[0] = os.getcwd()  # import pyserf as ``-m pyserf`` would: from the working directory
    sys.argv = ["pyserf", *sys.argv[2:]]
    profiler = cProfile.Profile(time.process_time)
    try:
        profiler.runcall(runpy.run_module, "pyserf", run_name="__main__", alter_sys=True)
    finally:
        profiler.dump_stats(out)
