"""How long torch's idle OpenMP threads spin before they sleep, in TinySplat's processes.

libgomp (the OpenMP of torch's Linux wheels) lets a thread that finished its share of a parallel
region spin for GOMP_SPINCOUNT (300,000) rounds before it sleeps. Alone on the machine that saves a
wake-up per region; beside a second CPU-heavy process the spinning threads hold the cores that the
other's threads wait for, and both crawl. Measured with benchmarks/shared_cpu.py (2 cores,
tinysplat-cpu steps at 300x400; docs/benchmarks.md): two trainings at once were each 3.7x slower
than one alone with libgomp's default, 2.3x with GOMP_SPINCOUNT=3000 (a fair share is 2x) at the same
speed alone (60 ms a step), and 1.4x with OMP_WAIT_POLICY=PASSIVE, which costs 15-25% alone.

libgomp reads the variable once, when torch loads it: our console scripts set it before they import
torch; `ns-train` has imported torch before it loads any plugin, so `ns-train tinysplat...` starts
itself over once with the variable set (5-8 s on two cores; not for --help, which trains nothing).
A user's own GOMP_SPINCOUNT or OMP_WAIT_POLICY wins; TINYSPLAT_OMP=0 keeps libgomp's default.
"""

import os
import sys
from pathlib import Path

SPIN_COUNT = "3000"


def spin_briefly() -> bool:
    """Set GOMP_SPINCOUNT for this process (if torch is not loaded yet) and its children, unless the
    user chose the OpenMP wait behaviour; whether it was set now."""
    if os.environ.get("TINYSPLAT_OMP") == "0" or {"GOMP_SPINCOUNT", "OMP_WAIT_POLICY"} & set(os.environ):
        return False
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return True


def restart_ns_train_spinning_briefly() -> None:
    """Under `ns-train tinysplat...` with torch already loaded: run the same command again, in this
    process (exec: same PID, nothing started yet), with GOMP_SPINCOUNT set."""
    argv = sys.argv
    if Path(argv[0]).name != "ns-train" or len(argv) < 2 or not argv[1].startswith("tinysplat"):
        return
    if {"--help", "-h"} & set(argv):  # nothing to train: the restart would only add its 5-8 s
        return
    if not sys.platform.startswith("linux"):  # libgomp is torch's OpenMP on Linux; elsewhere another one
        return
    if "torch" not in sys.modules or not spin_briefly():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
