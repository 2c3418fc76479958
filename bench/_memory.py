"""Memory of a process tree as the kernel accounts it (Linux ``/proc``), for ``bench/scale.py``.

RSS counts every resident page a process maps, shared or not; **PSS** divides each page by the number
of processes mapping it (the sum over processes is the memory they really take); **USS** counts the
pages only this process maps (``Private_Clean + Private_Dirty``: what ending it would free). Both are
read from ``/proc/<pid>/smaps_rollup`` (Linux >= 4.14), with the split of PSS into anonymous memory
(heap, Python objects, tensors) and file pages (libraries, any memory-mapped file: page cache). The
peak RSS is the kernel's own high-water mark (``VmHWM`` in ``/proc/<pid>/status``), exact. Reading
smaps_rollup walks the page tables (~7 ms for a 700 MB torch process), so it is read when the cheap
``/proc/<pid>/status`` shows a new RSS maximum (sampled every ``interval``) and at least every
``rollup_every`` seconds: peaks of PSS and USS are those of these reads.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

FIELDS = {"Pss": "pss", "Pss_Anon": "pss_anon", "Pss_File": "pss_file", "Private_Clean": "private_clean",
          "Private_Dirty": "private_dirty", "Rss": "rss"}


def resident(pid: int | str = "self") -> int | None:
    """``VmRSS`` of ``pid`` in bytes (cheap: ``/proc/<pid>/status``); None when gone or a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rss = [line for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(rss[0].split()[1]) * 1024 if rss else None


def read_memory(pid: int | str = "self") -> dict[str, int] | None:
    """Bytes of ``pid``: ``pss``, ``pss_anon``, ``pss_file``, ``uss``, ``rss`` (from smaps_rollup) and
    ``rss_peak`` (VmHWM); None when the process is gone (or not ours to read)."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    out = {}
    for line in rollup.splitlines()[1:]:
        key, _, value = line.partition(":")
        if key in FIELDS:
            out[FIELDS[key]] = int(value.split()[0]) * 1024
    if "pss" not in out:  # a zombie: nothing mapped any more
        return None
    out["uss"] = out.pop("private_clean") + out.pop("private_dirty")
    hwm = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    out["rss_peak"] = int(hwm[0].split()[1]) * 1024 if hwm else out["rss"]
    return out


def children(pid: int) -> list[int]:
    """Direct children of ``pid``, oldest first (``/proc/<pid>/task/*/children``)."""
    kids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(k) for k in (task / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return sorted(set(kids), key=start_time)


def start_time(pid: int) -> int:
    """Start time of ``pid`` in clock ticks since boot (0 when gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])


def command(pid: int) -> bytes:
    """The command line of ``pid`` (b"" when gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return b""


def local_rank(pid: int) -> str | None:
    """``LOCAL_RANK`` from the environment of ``pid`` (set by ``accelerate launch`` / torchrun), or None."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"LOCAL_RANK=")), None)


@dataclass
class Peak:
    """The largest value of each quantity seen for one process, and how often it was sampled."""

    parent: int
    values: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    last_read: float = 0.0   # time.monotonic() of the last smaps_rollup read
    pss: int = 0             # PSS at that read
    program: str = ""        # set once its command line differed from its parent's (it ran a program)

    def update(self, memory: dict[str, int]) -> None:
        self.samples += 1
        for key, value in memory.items():
            self.values[key] = max(self.values.get(key, 0), value)


class TreeMonitor:
    """Samples the memory of a process and all its descendants every ``interval`` seconds from a
    thread, until :meth:`stop`, which names each process by its role.

    Roles: the root is ``root_role``; a descendant whose environment has ``LOCAL_RANK`` (and whose
    parent's has not) is ``rank <r>``; a child that kept its parent's command line (forked: a
    DataLoader worker) is ``<parent's role> worker <i>`` (``worker <i>`` under the root), ``i``
    counting those children in the order they started; any other (a program it ran, e.g. ``git``) is
    ``<parent's role> helper <program>``. (Whether a child is a rank or ran a program is known only
    once it has exec'd, hence checks at every sample and naming at the end.)
    """

    def __init__(self, pid: int, root_role: str = "main", interval: float = 0.02, rollup_every: float = 1.0) -> None:
        self.pid, self.root_role, self.interval, self.rollup_every = pid, root_role, interval, rollup_every
        self.peaks: dict[int, Peak] = {pid: Peak(0)}
        self.ranks: dict[int, str] = {}
        self.total_pss_peak = 0   # the largest sum of PSS over the tree in one sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _walk(self) -> list[int]:
        """The tree's pids, parents before children; records new ones and what each runs."""
        order, stack = [], [self.pid]
        while stack:
            pid = stack.pop(0)
            order.append(pid)
            for kid in children(pid):
                peak = self.peaks.setdefault(kid, Peak(pid))
                if kid not in self.ranks and pid not in self.ranks:  # until it has exec'd with its environment
                    rank = local_rank(kid)
                    if rank is not None and local_rank(pid) is None:
                        self.ranks[kid] = rank
                program = command(kid)
                if not peak.program and kid not in self.ranks and program and program != command(pid):
                    peak.program = Path(program.split(b"\0")[0].decode(errors="replace")).name
                stack.append(kid)
        return order

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        """Read every process of the tree once (smaps_rollup only at a new RSS maximum or when due)."""
        total, now = 0, time.monotonic()
        for pid in self._walk():
            rss, peak = resident(pid), self.peaks[pid]
            if rss is None:
                continue
            if rss > peak.values.get("rss", 0) or now - peak.last_read >= self.rollup_every:
                memory = read_memory(pid)
                if memory is None:
                    continue
                peak.update(memory)
                peak.last_read, peak.pss = now, memory["pss"]
            total += peak.pss
        self.total_pss_peak = max(self.total_pss_peak, total)

    def _roles(self) -> dict[int, str]:
        """Every pid's role (see the class docstring); the pids are in the order they were first seen,
        parents before children, siblings oldest first."""
        roles, workers = {self.pid: self.root_role}, {}
        for pid, peak in self.peaks.items():
            if pid == self.pid:
                continue
            prefix = "" if peak.parent == self.pid else f"{roles[peak.parent]} "
            if pid in self.ranks:
                roles[pid] = f"rank {self.ranks[pid]}"
            elif peak.program:
                roles[pid] = f"{prefix}helper {peak.program}"
            else:
                workers[peak.parent] = workers.get(peak.parent, -1) + 1
                roles[pid] = f"{prefix}worker {workers[peak.parent]}"
        return roles

    def stop(self) -> dict[str, dict]:
        """Stop sampling; per role (processes in the order they were first seen): the peaks in bytes,
        the pid and the number of smaps_rollup reads."""
        self._stop.set()
        self._thread.join()
        roles = self._roles()
        return {roles[pid]: {**p.values, "pid": pid, "samples": p.samples} for pid, p in self.peaks.items()
                if p.samples}


def sample_until_exit(pid: int, wait: Callable[[], object], root_role: str = "main", interval: float = 0.02) -> dict:
    """Monitor ``pid``'s tree while ``wait()`` (which returns when the process has ended) runs; returns
    ``{"processes": per role, "total_pss_peak": bytes, "seconds": wall time}``."""
    start = time.perf_counter()
    monitor = TreeMonitor(pid, root_role, interval)
    try:
        wait()
    finally:
        processes = monitor.stop()
    return {"processes": processes, "total_pss_peak": monitor.total_pss_peak, "seconds": time.perf_counter() - start}
