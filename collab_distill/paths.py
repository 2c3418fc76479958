"""Paths built from data set strings (tokens, scene and channel names, file names in the tables).

Such strings are data, not trusted: a token ``../../x`` must not make a tool write outside its output
folder, and a table's ``filename`` must not make it read outside the dataroot. Every place that turns
a data set string into a path goes through :func:`safe_name` (one file-name component) or
:func:`join_inside` (a relative path that must stay under its root).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from collab_distill.errors import UserError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class UnsafePathError(UserError, ValueError):
    """A data set string that would name no file, or a file outside the folder it belongs to."""


class ExistingOutputError(UserError, FileExistsError):
    """A finished output (a result, a report) that a command would replace without being asked."""


def refuse_overwrite(path: str | Path, overwrite: bool) -> None:
    """Raise :class:`ExistingOutputError` when ``path`` exists and ``overwrite`` was not asked for.

    Called before the work that would replace it, so a refusal costs nothing."""
    if Path(path).exists() and not overwrite:
        raise ExistingOutputError(f"{path} exists (a finished output); pass --overwrite to replace it, or write "
                                  "to another place")


def safe_name(text: str) -> str:
    """``text`` as one file-name component: every character outside ``[A-Za-z0-9._-]`` becomes ``_``.

    Real nuScenes tokens (32 hex digits) and channel names come back unchanged.

    Raises:
        UnsafePathError: ``text`` is empty, ``.`` or ``..`` (after the replacement).
    """
    name = _UNSAFE.sub("_", str(text))
    if name in ("", ".", ".."):
        raise UnsafePathError(f"{text!r} cannot be used as a file name")
    return name


def join_inside(root: str | Path, relative: str | Path) -> Path:
    """``root / relative``, refused when it leads outside ``root``.

    The check is on the path as written (``..`` parts, an absolute ``relative``), not on resolved
    symlinks: a dataroot whose ``samples/`` is a link to another disk stays valid.

    Raises:
        UnsafePathError: ``relative`` is absolute or climbs above ``root``.
    """
    normal = os.path.normpath(relative)  # "a/../../x" -> "../x"
    if os.path.isabs(normal) or normal == os.pardir or normal.startswith(os.pardir + os.sep):
        raise UnsafePathError(f"{str(relative)!r} leads outside {root}")
    return Path(root) / normal


def replace_folder(new: str | Path, path: str | Path) -> None:
    """Move the finished folder ``new`` to ``path``, replacing what is there: the old folder is first
    renamed aside (``.<name>.<pid>.old``), so ``path`` always holds a complete folder, and removed last.
    ``new`` and ``path`` must be on one file system (build ``new`` beside ``path``)."""
    path = Path(path)
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(new, path)
    shutil.rmtree(old, ignore_errors=True)
