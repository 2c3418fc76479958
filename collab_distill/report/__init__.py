"""The evaluation report: several runs' probe results -> ``report.md``, ``report.json`` and PNGs.

``tables`` builds the numbers and the Markdown, ``figures`` the PNGs; :func:`build_report` is what
``tools/report.py`` calls.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from collab_distill.paths import refuse_overwrite
from collab_distill.probe.results import RESULT_SCHEMA, TASKS
from collab_distill.probe.showcase import Showcase
from collab_distill.report import figures
from collab_distill.report.tables import ReportError, collect, markdown

__all__ = ["ReportError", "build_report", "find_results"]

log = logging.getLogger(__name__)
RESULT_NAMES = frozenset(f"{task}.json" for task in TASKS)  # what the probe tools write
_RESULT_START = re.compile(r'\s*\{\s*"schema":\s*"' + re.escape(RESULT_SCHEMA.split("/")[0]) + "/")


def find_results(inputs: list[str | Path]) -> list[Path]:
    """Result files among ``inputs``: files as given, folders searched recursively for ``*.json``
    files that are probe results (:func:`_is_result`). Sorted, without duplicates.

    A damaged result is never dropped silently: named or found, it is returned, and :func:`collect`
    fails on it by name (a half-written ``seg.json`` would otherwise just remove its method's row).
    """
    found: set[Path] = set()
    for item in map(Path, inputs):
        if item.is_file():
            found.add(item.resolve())
        elif item.is_dir():
            found.update(p.resolve() for p in item.rglob("*.json") if _is_result(p))
        else:
            raise ReportError(f"{item}: no such file or folder")
    return sorted(found)


def _is_result(path: Path) -> bool:
    """Whether a ``*.json`` met in a folder search is meant to be a probe result: named like one
    (``seg.json``, ``depth.json``, ``lidar_seg.json``) or starting with the result schema, as
    :func:`~collab_distill.probe.results.write_result` writes it (true of a truncated one too). Other
    JSON files (``run.json``, ``report.json``, checkpoints' ``state.json``) are not results: skipped,
    with a warning naming those that cannot even be parsed."""
    if path.name in RESULT_NAMES:
        return True
    try:
        text = path.read_text()
    except (OSError, ValueError) as exc:
        log.warning("skipped %s: not a probe result, cannot be read (%s)", path, exc)
        return False
    if _RESULT_START.match(text):
        return True
    try:
        json.loads(text)
    except ValueError as exc:
        log.warning("skipped %s: not a probe result, not valid JSON (%s)", path, exc)
    return False


def load_showcases(report: dict[str, Any], task: str) -> dict[str, Showcase]:
    """The ``task`` showcases of the report's methods (in report order), restricted to the views
    every one of them has, in the first one's order."""
    shows = {}
    for method in report["methods"]:
        run = report["runs"].get(method, {}).get(task)
        if run and run.get("showcase"):
            shows[method] = Showcase.load(Path(run["path"]).parent / run["showcase"])
    if not shows:
        return {}
    common = [n for n in next(iter(shows.values())).names if all(n in s.names for s in shows.values())]
    return {m: _subset(s, common) for m, s in shows.items()} if common else {}


def _subset(show: Showcase, names: list[str]) -> Showcase:
    index = torch.tensor([show.names.index(n) for n in names])
    tensors = {k: getattr(show, k)[index] for k in Showcase.TENSORS}
    return dataclasses.replace(show, names=names, tags=[show.tags[i] for i in index.tolist()], **tensors)


def build_report(inputs: list[str | Path], out_dir: str | Path, order: list[str] | None = None,
                 overwrite: bool = False) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and the PNGs to ``out_dir``; returns their paths by name.
    A report already in ``out_dir`` is refused (:class:`~collab_distill.paths.ExistingOutputError`)
    unless ``overwrite``."""
    out = Path(out_dir)
    refuse_overwrite(out / "report.md", overwrite)
    report = collect([str(p) for p in find_results(inputs)], order)
    out.mkdir(parents=True, exist_ok=True)  # only once the inputs are read: a bad input leaves no folder
    made: dict[str, Path] = {}
    captions: dict[str, str] = {}
    for key in report["sections"]:
        made[f"bars_{key}"] = figures.condition_bars(report, key, out / f"bars_{key}.png")
        captions[made[f"bars_{key}"].name] = f"{report['sections'][key]['title']}, per condition"
    for task in ("seg", "depth"):
        shows = load_showcases(report, task)
        if not shows:
            continue
        max_depth = report["runs"][next(iter(shows))][task]["recipe"].get("max_depth", 80.0)
        made[f"overlay_{task}"] = figures.overlays(shows, out / f"overlay_{task}.png", max_depth)
        captions[made[f"overlay_{task}"].name] = f"{task}: projected ground truth and each method's prediction"
        if "pca" not in made:
            made["pca"] = figures.pca_feature_maps(shows, out / "pca_features.png")
            made["scatter"] = figures.clear_vs_adverse_scatter(shows, out / "scatter_clear_adverse.png")
            captions[made["pca"].name] = "PCA-RGB of the last-block patch tokens, per method and condition"
            captions[made["scatter"].name] = "Patch tokens on clear renders vs adverse views, per method"
    made["json"] = out / "report.json"
    made["json"].write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    made["markdown"] = out / "report.md"
    made["markdown"].write_text(markdown(report, captions))
    return made
