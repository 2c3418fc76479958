"""bench/_memory.py (the memory reader of bench/scale.py): plausible numbers for this process, and a process
tree's roles."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from _memory import read_memory, sample_until_exit  # noqa: E402

MIB = 2**20


def test_this_process_reads_plausibly_and_a_private_block_is_uss():
    before = read_memory()
    assert 0 < before["uss"] <= before["pss"] <= before["rss"] <= before["rss_peak"] + MIB
    assert before["pss_anon"] + before["pss_file"] <= before["pss"] + MIB
    block = np.ones(64 * MIB, np.uint8)   # 64 MiB written: private anonymous pages
    after = read_memory()
    assert 60 * MIB < after["uss"] - before["uss"] < 72 * MIB
    assert 60 * MIB < after["pss_anon"] - before["pss_anon"] < 72 * MIB
    assert block.sum() == 64 * MIB
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert read_memory(int(gone.stdout)) is None   # an ended process: None, no error


def test_tree_roles_forked_worker_and_helper_program():
    child = ("import os, subprocess, time\n"
             "if os.fork() == 0:\n    time.sleep(0.6)\n    os._exit(0)\n"
             "subprocess.run(['sleep', '0.6'])\nos.wait()\n")
    proc = subprocess.Popen([sys.executable, "-c", child])
    measured = sample_until_exit(proc.pid, proc.wait)
    assert proc.returncode == 0
    assert set(measured["processes"]) == {"main", "worker 0", "helper sleep"}
    main = measured["processes"]["main"]
    assert main["pss"] > 0 and main["samples"] >= 1 and measured["total_pss_peak"] >= main["pss"]
