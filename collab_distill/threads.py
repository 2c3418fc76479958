"""OpenMP defaults for the tools: a CPU training step that does not stall when other jobs run.

torch's CPU wheel runs its parallel regions and MKL's GEMMs on GNU OpenMP (``libgomp``). Every
region ends at a barrier, so a pool of threads runs at the speed of its slowest thread, and by
default a thread that arrives early spins there, burning its core. When other jobs share the cores,
the thread being waited for is often the one the scheduler took off its core, and spconv's CPU
convolutions issue ~1,600 small GEMMs per stage-1 step, each its own region: on 2 busy cores a step
took 5-20x its idle time. Two defaults remove the stall (``bench/stall.py`` measures them; numbers
in docs/benchmarks.md):

* one thread per physical core this process may run on, less one (at least one): one other job
  then has a core of its own instead of sharing one with a thread of the pool. On 2 cores this is
  1 thread, which measured as fast idle as 2 and far faster under load;
* ``OMP_WAIT_POLICY=PASSIVE``: a thread waiting at a barrier sleeps and gives its core back.

The count is fixed per machine, not taken from the current load: a run's floating-point results
depend on its thread count, so the same command should get the same count whatever else runs.

libgomp reads its environment once, when it is loaded, i.e. at ``import torch``: every tool calls
:func:`set_thread_defaults` as its first statement. The variables go into ``os.environ``, so
DataLoader workers and subprocesses inherit them. A user's own choice always wins:
``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``) sets the count, ``OMP_WAIT_POLICY`` or
``GOMP_SPINCOUNT`` the waiting; ``torchrun``/``accelerate launch`` set ``OMP_NUM_THREADS=1`` per
process themselves.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Collection, Mapping

WAIT_POLICY = "PASSIVE"
# A user who set any of these chose the thread count (torch reads OMP_NUM_THREADS, then MKL_NUM_THREADS).
COUNT_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# libgomp's own knobs for waiting at a barrier.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
SYSFS_CPU = Path("/sys/devices/system/cpu")


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


def thread_defaults(env: Mapping[str, str], cores: int) -> dict[str, str]:
    """The variables to add to ``env`` on a process that may use ``cores`` physical cores:
    ``OMP_NUM_THREADS=max(1, cores - 1)`` unless ``env`` sets a (non-empty) thread count, and
    ``OMP_WAIT_POLICY=PASSIVE`` unless it sets ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``."""
    added = {}
    if not any(env.get(name) for name in COUNT_VARIABLES):
        added["OMP_NUM_THREADS"] = str(max(1, cores - 1))
    if not any(env.get(name) for name in WAIT_VARIABLES):
        added["OMP_WAIT_POLICY"] = WAIT_POLICY
    return added


def set_thread_defaults() -> dict[str, str]:
    """Add :func:`thread_defaults` for the cores this process may use (its affinity mask) to
    ``os.environ`` and return what was added. Call it before anything imports torch: OpenMP reads
    these variables when torch loads it."""
    added = thread_defaults(os.environ, physical_cores(os.sched_getaffinity(0)))
    if added and "torch" in sys.modules:
        warnings.warn("set_thread_defaults() called after torch was imported: OpenMP has read its settings "
                      "already, so only subprocesses get them; call it first thing in the tool", stacklevel=2)
    os.environ.update(added)
    return added
