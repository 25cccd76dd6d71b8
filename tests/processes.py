"""Processes that outlive the command that started them (Linux; standard library only, so CI's
system Python runs it too).

A process marked as a child subreaper (prctl PR_SET_CHILD_SUBREAPER) adopts the orphans of its
descendants instead of letting init take them, so the whole tree its commands start stays below it,
even a worker whose parent has exited. The tests' process (conftest.py) and `.ci/run` are made
subreapers; what is still below them once a command has returned is a survivor.

    python3 tests/processes.py COMMAND [ARG ...]

runs COMMAND as a subreaper's child; after it exits, names every process still left below it (pid
and command line), stops them, and exits 1 if there were any (else with COMMAND's status)."""

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

PR_SET_CHILD_SUBREAPER = 36


def adopt_orphans() -> None:
    """Make this process the one that orphans of its descendants are re-parented to."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _process_table() -> Dict[int, Tuple[int, str]]:
    """{pid: (parent pid, state letter)} of every process there is."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # gone meanwhile
            fields = text[text.rindex(")") + 2 :].split()  # the name in brackets may hold spaces
            table[int(entry)] = int(fields[1]), fields[0]
    return table


def described(pid: int) -> str:
    """A process's command line and working folder."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        folder = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return "(gone)"
    return f"{command or '?'} (in {folder})"


def descendants(root: int, table: Dict[int, Tuple[int, str]] = None) -> Dict[int, int]:
    """{pid: parent pid} of every living process below `root` (zombies left out)."""
    parents = {pid: parent for pid, (parent, state) in (table or _process_table()).items() if state != "Z"}
    below, frontier = {}, {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier and pid not in below}
        below.update({pid: parents[pid] for pid in frontier})
    return below


def reap_adopted_zombies(table: Dict[int, Tuple[int, str]]) -> None:
    """Collect the exit status of this process's dead children (adopted orphans that ended), so
    they do not linger as zombies."""
    for pid, (parent, state) in table.items():
        if parent == os.getpid() and state == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def survivors(root: int, grace: float) -> List[str]:
    """The processes still below `root` after waiting up to `grace` seconds for them to end, each
    as 'pid N (parent M): command line (in folder)'; they are then killed."""
    deadline = time.time() + grace
    while True:
        table = _process_table()
        reap_adopted_zombies(table)
        alive = descendants(root, table)
        if not alive or time.time() >= deadline:
            break
        time.sleep(0.2)
    named = [f"pid {pid} (parent {parent}): {described(pid)}" for pid, parent in sorted(alive.items())]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.2)
    reap_adopted_zombies(_process_table())
    return named


def main(command: List[str]) -> int:
    adopt_orphans()
    status = subprocess.call(command)
    left = survivors(os.getpid(), grace=10)
    if left:
        print(f"\n{len(left)} processes started by `{' '.join(command)}` were still running after it ended:", flush=True)
        for line in left:
            print(f"  {line}", flush=True)
        return status or 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
