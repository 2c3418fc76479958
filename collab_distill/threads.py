"""OpenMP defaults for the tools: CPU training that does not stall when other jobs run.

torch's CPU wheel runs its parallel regions and MKL's GEMMs on GNU OpenMP (``libgomp``). Every
region ends at a barrier, so a pool of threads runs at the speed of its slowest thread, and by
default a thread that arrives early spins there, burning its core. When other jobs share the cores,
the thread being waited for is often the one the scheduler took off its core, and spconv's CPU
convolutions issue ~1,600 small GEMMs per stage-1 step, each its own region: on 2 busy cores a step
took 5-20x its idle time. The defaults (measured by ``bench/stall.py``; numbers in docs/benchmarks.md):

* ``GOMP_SPINCOUNT=1000``: a thread waiting at a barrier spins ~1,000 times (tens of microseconds),
  then sleeps and gives its core back; libgomp's default is 300,000, and 1,000 is what libgomp itself
  uses once it knows it has more threads than CPUs. Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``)
  stalls no more, but made an idle step up to 1.5x slower: waking a sleeping thread costs more
  than the short wait it saves;
* ``OMP_NUM_THREADS``: the physical cores this process may run on (torch's own default) less the
  CPU-bound tasks running on the machine when the tool starts, at least 1. A pool wider than the
  CPUs left to it stalls even with short spinning; on an idle machine nothing is taken away.

The count is decided once, at start, and kept for the whole run (a run's floating-point results
depend on its thread count, so it must not change under a run's feet); load that arrives later is
met by the short spinning alone. ``OMP_NUM_THREADS`` pins it, e.g. to compare runs bit for bit.

libgomp reads its environment once, when it is loaded, i.e. at ``import torch``: every tool calls
:func:`set_thread_defaults` as its first statement. The variables go into ``os.environ``, so
DataLoader workers and subprocesses inherit them (and do not decide again). A user's own choice
always wins: ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``) sets the count, ``OMP_WAIT_POLICY`` or
``GOMP_SPINCOUNT`` the waiting; ``torchrun``/``accelerate launch`` set ``OMP_NUM_THREADS`` per process.
"""
from __future__ import annotations

import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Collection, Mapping

SPIN_COUNT = "1000"
# A user who set any of these chose the thread count (torch reads OMP_NUM_THREADS, then MKL_NUM_THREADS).
COUNT_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# libgomp's own knobs for waiting at a barrier.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
SYSFS_CPU = Path("/sys/devices/system/cpu")
LOADAVG = Path("/proc/loadavg")
SAMPLES, SAMPLE_INTERVAL_S = 7, 0.015  # ~0.1 s at start: a blip (a shell, a cron job) is outvoted


def physical_cores(cpus: Collection[int], sysfs: Path = SYSFS_CPU) -> int:
    """The physical cores among the logical CPUs ``cpus`` (hyperthreads of one core count once, as in
    torch's default thread count); ``len(cpus)`` where sysfs does not say."""
    cores = set()
    for cpu in cpus:
        try:  # the CPUs of a core share one sibling list, e.g. "0,8" or "0-1"
            cores.add((sysfs / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text().strip())
        except OSError:
            return len(cpus)
    return len(cores)


def running_elsewhere(loadavg: Path = LOADAVG, samples: int = SAMPLES, interval_s: float = SAMPLE_INTERVAL_S) -> int:
    """Tasks running or waiting for a CPU on the machine right now, besides the caller: the lower
    median over ``samples`` readings of the kernel's count (the ``R`` of ``R/T`` in ``/proc/loadavg``,
    which counts the reading thread too); 0 where it cannot be read. Unlike the load averages this
    does not remember a job that ended a minute ago."""
    counts = []
    for i in range(samples):
        if i:
            time.sleep(interval_s)
        try:
            counts.append(int(loadavg.read_text().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return 0
    return max(0, statistics.median_low(counts))


def thread_defaults(env: Mapping[str, str], cores: int, busy: int) -> dict[str, str]:
    """The variables to add to ``env`` on a process that may use ``cores`` physical cores while
    ``busy`` other tasks run: ``OMP_NUM_THREADS=max(1, cores - busy)`` unless ``env`` sets a
    (non-empty) thread count, and ``GOMP_SPINCOUNT=1000`` unless it sets ``OMP_WAIT_POLICY`` or
    ``GOMP_SPINCOUNT``."""
    added = {}
    if not any(env.get(name) for name in COUNT_VARIABLES):
        added["OMP_NUM_THREADS"] = str(max(1, cores - busy))
    if not any(env.get(name) for name in WAIT_VARIABLES):
        added["GOMP_SPINCOUNT"] = SPIN_COUNT
    return added


def set_thread_defaults() -> dict[str, str]:
    """Add :func:`thread_defaults` for this process (its affinity mask, the tasks running now) to
    ``os.environ`` and return what was added. Call it before anything imports torch: OpenMP reads
    these variables when torch loads it. Once torch is loaded (a tool run inside another program,
    e.g. the tests), it does nothing: OpenMP has read its settings, and changing the environment
    would only give subprocesses other settings than this process runs with."""
    if "torch" in sys.modules:
        logging.getLogger(__name__).debug("torch is loaded already: thread defaults left as they are")
        return {}
    added = thread_defaults(os.environ, physical_cores(os.sched_getaffinity(0)), running_elsewhere())
    os.environ.update(added)
    return added
