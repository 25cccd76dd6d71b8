"""The survivor check itself (tests/processes.py): it finds a process a command left behind, even
one whose parent has exited, names it, and stops it."""

import os
import subprocess
import sys
import time

from processes import descendants, survivors


def test_an_orphaned_worker_is_found_named_and_stopped(tmp_path):
    # the shell starts a sleeper in the background and exits at once: the sleeper is orphaned
    subprocess.run(["sh", "-c", "sleep 300 &"], cwd=tmp_path, check=True, stdout=subprocess.DEVNULL)
    left = survivors(os.getpid(), grace=1)
    assert len(left) == 1 and left[0].endswith(f"sleep 300 (in {tmp_path})"), left
    assert not descendants(os.getpid())


def test_a_process_that_ends_within_the_grace_is_no_survivor():
    subprocess.Popen(["sleep", "1"])
    start = time.time()
    assert survivors(os.getpid(), grace=10) == []
    assert time.time() - start < 5


def test_the_ci_wrapper_fails_naming_what_a_command_left(tmp_path):
    helper = os.path.join(os.path.dirname(__file__), "processes.py")
    clean = subprocess.run([sys.executable, helper, "true"], capture_output=True, text=True, cwd=tmp_path)
    assert clean.returncode == 0 and clean.stdout == ""
    leaky = subprocess.run(
        [sys.executable, helper, "sh", "-c", "sleep 301 & sleep 302 &"], capture_output=True, text=True, cwd=tmp_path
    )
    assert leaky.returncode == 1, leaky.stdout
    assert "2 processes started by `sh -c sleep 301 & sleep 302 &` were still running" in leaky.stdout
    assert f"sleep 301 (in {tmp_path})" in leaky.stdout and f"sleep 302 (in {tmp_path})" in leaky.stdout
    failing = subprocess.run([sys.executable, helper, "sh", "-c", "exit 3"], capture_output=True, text=True)
    assert failing.returncode == 3
