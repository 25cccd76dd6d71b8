"""How long a Nerfstudio command takes to start with TinySplat installed: the import every verb runs
(`nerfstudio.configs.method_configs`, which loads TinySplat through its method discovery), with
TinySplat's start-up fix (tinysplat_ns/nerfstudio_startup.py) and with Nerfstudio's own
`inspect.stack()` check left in place; then `ns-train tinysplat-cpu --help`; then `ns-train
tinysplat-cpu` up to its one-line error for a missing --data, which starts itself over once to set
GOMP_SPINCOUNT (tinysplat_ns/openmp.py; --help does not), and the same without that restart
(TINYSPLAT_OMP=0). Fresh interpreters, alternated, the median of --rounds each.

    .venv/bin/python benchmarks/startup.py [--rounds 3]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

IMPORT = "import nerfstudio.configs.method_configs"
# TinySplat's module, imported first with its fix turned into a no-op: Nerfstudio's check runs
WITHOUT_FIX = "import tinysplat_ns.nerfstudio_startup as s; s.skip_stack_inspection = lambda: None; " + IMPORT
NS_TRAIN = [str(Path(sys.executable).parent / "ns-train"), "tinysplat-cpu"]
NO_DATA = NS_TRAIN + ["--data", "/no/such/scene"]

# name: (command, environment changes, the exit status it ends with)
CASES = {
    "import, TinySplat's start-up": ([sys.executable, "-c", IMPORT], {}, 0),
    "import, Nerfstudio's stack check": ([sys.executable, "-c", WITHOUT_FIX], {}, 0),
    "ns-train tinysplat-cpu --help": (NS_TRAIN + ["--help"], {}, 0),
    "ns-train tinysplat-cpu, no --data": (NO_DATA, {}, 1),
    "  the same, no OpenMP restart": (NO_DATA, {"TINYSPLAT_OMP": "0"}, 1),
}


def seconds(command: list, env: dict, status: int) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != status:
        sys.exit(f"error: {' '.join(command)} ended with {done.returncode}: {done.stderr[-500:]}")
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times = {name: [] for name in CASES}
    for _ in range(args.rounds):
        for name, case in CASES.items():
            times[name].append(seconds(*case))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        print(f"{name:34s} {median:6.2f} s   ({', '.join(f'{t:.2f}' for t in times[name])})")
    fixed, unfixed = medians["import, TinySplat's start-up"], medians["import, Nerfstudio's stack check"]
    print(f"the fix saves {unfixed - fixed:.2f} s of each command's start ({unfixed / fixed:.2f}x faster import)")


if __name__ == "__main__":
    main()
