"""OpenMP defaults for the tools: a CPU training step that does not stall when other jobs run.

torch's CPU wheel runs its parallel regions and MKL's GEMMs on GNU OpenMP (``libgomp``). By default
a libgomp thread that reaches the end of a parallel region spins, burning its core, until the
slowest thread arrives. When other jobs share the cores, the thread being waited for is often the
one the scheduler took off its core to make room for the spinner, and spconv's CPU convolutions
issue ~1,600 small GEMMs per stage-1 step, each its own region: on 2 busy cores a step took 5-20x
its idle time. With ``OMP_WAIT_POLICY=PASSIVE`` a waiting thread sleeps and gives its core back
(``bench/stall.py`` measures both; numbers in docs/benchmarks.md).

libgomp reads its environment once, when it is loaded, i.e. at ``import torch``: every tool calls
:func:`set_thread_defaults` as its first statement. The variables go into ``os.environ``, so
DataLoader workers and subprocesses inherit them.

The thread count stays torch's default: one thread per physical core among the CPUs this process
may run on (it follows ``taskset``/the affinity mask). Fewer threads when the load average is high
was measured too and is not needed for the target; it would also make a run's floating-point
results depend on what else ran at its start. A user's own choice always wins: ``OMP_NUM_THREADS``
sets the count, ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` the waiting.
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Mapping

WAIT_POLICY = "PASSIVE"
# libgomp's own knobs for waiting at a barrier: if the user set either, the choice is theirs.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def thread_defaults(env: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to ``env``: ``OMP_WAIT_POLICY=PASSIVE`` unless ``env`` already sets a
    (non-empty) ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``; nothing else."""
    if any(env.get(name) for name in WAIT_VARIABLES):
        return {}
    return {"OMP_WAIT_POLICY": WAIT_POLICY}


def set_thread_defaults() -> dict[str, str]:
    """Add :func:`thread_defaults` to ``os.environ`` and return what was added. Call it before
    anything imports torch: OpenMP reads these variables when torch loads it."""
    added = thread_defaults(os.environ)
    if added and "torch" in sys.modules:
        warnings.warn("set_thread_defaults() called after torch was imported: OpenMP has read its settings "
                      "already, so only subprocesses get them; call it first thing in the tool", stacklevel=2)
    os.environ.update(added)
    return added
