"""The output folder of a training run: two runs never mix in one folder, and a finished run is never
lost to a re-run.

* An absent or empty folder is used as it is.
* A folder holding anything is refused (:class:`OutputDirError`) unless the caller says what to do
  with it: ``resume`` continues the run in it, ``overwrite`` replaces it.
* ``overwrite`` trains into the sibling ``.<name>.overwrite`` and swaps it in only once the new run
  has finished: ``<name>`` is renamed to ``.<name>.replaced-<pid>``, the new run renamed to ``<name>``,
  and only then is the old run deleted.

Why a new sibling swapped in at the end rather than the old run moved aside at the start: until the
new run has finished, ``<name>`` is still the old run, complete and untouched, so a crash, a kill or
an error (a diverged run) at any point of training leaves the user the old run where it was, and
``<name>`` never holds half of one run. The only moment ``<name>`` is absent lies between two renames,
and even then both runs exist, as its siblings. The price: while it trains, the new run is in the
sibling, so after a crash ``--resume auto`` on ``<name>`` would continue the old run; run
``--overwrite`` again instead (it first deletes the unfinished ``.<name>.overwrite``).
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from collab_distill.errors import UserError
from collab_distill.paths import replace_folder

log = logging.getLogger(__name__)


class OutputDirError(UserError):
    """The output folder already holds a run and the caller did not say whether to resume or replace it."""


@dataclass(frozen=True)
class RunFolder:
    """``final``: the folder the user named; ``work``: where this run writes (``final``, or the sibling
    that replaces it when the run has finished)."""

    final: Path
    work: Path

    @property
    def replaces(self) -> bool:
        """True when the run is written next to ``final`` and swapped in at the end."""
        return self.work != self.final

    def begin(self) -> None:
        """Delete what an interrupted replacement left in ``work`` (main process, before any write)."""
        if self.replaces:
            shutil.rmtree(self.work, ignore_errors=True)
            log.info("training into %s; it replaces %s when the run has finished", self.work, self.final)

    def finish(self) -> None:
        """Swap the finished run into ``final`` (main process, after the last write)."""
        if not self.replaces:
            return
        replace_folder(self.work, self.final)
        log.info("replaced the previous run in %s", self.final)


def run_folder(out_dir: str | Path, resume: str = "", overwrite: bool = False) -> RunFolder:
    """Where a run writes, given whether it resumes (``"auto"`` or a checkpoint) or overwrites.

    Has no side effect, so every process of a distributed run can call it and get the same answer.

    Raises:
        OutputDirError: ``out_dir`` holds something and neither ``resume`` nor ``overwrite`` is given,
            both are given, or ``out_dir`` is a file.
    """
    final = Path(out_dir)
    if resume and overwrite:
        raise OutputDirError(f"{final}: --overwrite starts a new run and --resume continues one; pass only one")
    if final.exists() and not final.is_dir():
        raise OutputDirError(f"experiment.output_dir={final} is a file, not a folder; choose another "
                             "experiment.output_dir")
    entries = sorted(p.name for p in final.iterdir()) if final.is_dir() else []
    if not entries or resume:
        return RunFolder(final, final)
    if overwrite:
        return RunFolder(final, final.with_name(f".{final.name}.overwrite"))
    shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
    raise OutputDirError(f"{final} is not empty (holds {shown}); pass --resume auto to continue its run, "
                         "--overwrite to replace it, or choose another experiment.output_dir")
