"""No process outlives the command that started it. What TinySplat's commands load may start
processes of its own and leave their end to the interpreter's exit handlers: nerfacto's
`ParallelDataManager` starts daemonic `multiprocess` workers that block for ever on their full
queue once nobody reads it, torch.compile starts compile workers. An exit that skips those handlers
(`os._exit`, a signal's default action) leaves such workers running, orphaned. Each command calls
`stop_children_at_exit()` as it starts."""

import atexit
import ctypes
import signal
import sys
import threading

import psutil

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
STOP_WAIT_S = 5.0


def stop_children_at_exit(sigterm_exits: bool = False) -> None:
    """Stop this process's descendants whenever it exits. On Linux it also becomes their
    subreaper: a worker whose own parent ended first is handed to this process, not to init, so it
    is still found. `sigterm_exits`: SIGTERM raises SystemExit(143) instead of killing the process
    on the spot, so that the exit handlers (this one included) run."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    atexit.unregister(stop_children)  # once, however many trainers one process builds
    atexit.register(stop_children)
    if sigterm_exits and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


def stop_children() -> None:
    """SIGTERM to every descendant, SIGKILL to those still there after STOP_WAIT_S; all reaped."""
    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=STOP_WAIT_S)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=STOP_WAIT_S)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)
