"""Mean and standard deviation of several seeds' reports (``report.json`` of :mod:`collab_distill.report`).

For each section, method, condition and metric: the values of every seed, their mean and their
sample standard deviation (``ddof = 1``; 0 for one seed). A value missing in any seed is missing.
The unseen-corruption rows (``corruptions``: per task, method and corruption) are summarised alike.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from collab_distill.probe.results import CLEAN
from collab_distill.report.tables import MISSING, SECTION_BY_KEY, Metric, ReportError, markdown_table

SEEDS_SCHEMA = "collab_distill.seeds/1"


def aggregate(reports: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    """The seed summary of ``reports`` (one per seed, named by ``labels``).

    Raises:
        ReportError: no report, or the reports disagree on their methods or sections.
    """
    if not reports:
        raise ReportError("no report to aggregate")
    first = reports[0]
    for label, report in zip(labels, reports):
        if report["methods"] != first["methods"] or set(report["sections"]) != set(first["sections"]):
            raise ReportError(f"report {label} has other methods or sections than {labels[0]}")
    conditions = [c for c in first["conditions"] if all(c in r["conditions"] for r in reports)]
    sections: dict[str, Any] = {}
    for key, sec in first["sections"].items():
        values = {method: {group: _cell([r["sections"][key]["values"].get(method, {}).get(group, {}) for r in reports],
                                        key) for group in conditions} for method in sec["values"]}
        sections[key] = {"title": sec["title"], "values": values}
    corruptions: dict[str, Any] = {}
    for key, rows in first.get("corruptions", {}).items():
        per_seed = [r.get("corruptions", {}).get(key, {"names": [], "values": {}}) for r in reports]
        names = [n for n in rows["names"] if all(n in seed["names"] for seed in per_seed)]
        values = {method: {name: _cell([seed["values"].get(method, {}).get(name, {}) for seed in per_seed], key)
                           for name in (CLEAN, *names)} for method in rows["values"]}
        corruptions[key] = {"names": names, "severity": rows["severity"], "values": values}
    return {"schema": SEEDS_SCHEMA, "seeds": labels, "methods": first["methods"], "conditions": conditions,
            "sections": sections, "corruptions": corruptions}


def _cell(seeds: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """``{metric: stats}`` of section ``key``'s metrics over one cell's metrics in every seed."""
    return {metric.key: _stats([seed.get(metric.key) for seed in seeds]) for metric in SECTION_BY_KEY[key].metrics}


def _stats(values: list[float | None]) -> dict[str, Any]:
    if any(v is None for v in values):
        return {"values": values, "mean": None, "std": None}
    return {"values": values, "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def _format(stats: dict[str, Any], metric: Metric) -> str:
    if stats["mean"] is None:
        return MISSING
    return f"{metric.format(stats['mean'])} ± {metric.format(stats['std'])}"


def markdown(summary: dict[str, Any]) -> str:
    """Per section and metric a table of methods x conditions, mean ± std; the headline metric first."""
    out = ["# Mean ± std over seeds", "",
           f"Seeds: {', '.join(summary['seeds'])} (std: sample standard deviation over seeds).", ""]
    conditions = summary["conditions"]
    for key, sec in summary["sections"].items():
        out += [f"## {sec['title']}", ""]
        for metric in SECTION_BY_KEY[key].metrics:
            out += [metric.caption, ""]
            out += markdown_table(["method", *conditions],
                                  [[m, *(_format(v[g][metric.key], metric) for g in conditions)]
                                   for m, v in sec["values"].items()])
            out.append("")
        out += _corruption_tables(summary, key)
    return "\n".join(out)


def _corruption_tables(summary: dict[str, Any], key: str) -> list[str]:
    """Per metric of section ``key``: methods x (``clean``, each corruption), mean ± std."""
    rows = summary.get("corruptions", {}).get(key)
    if not rows or not rows["names"]:
        return []
    out = [f"### Unseen corruptions (evaluation only, severity {rows['severity']}, all views)", ""]
    for metric in SECTION_BY_KEY[key].metrics:
        out += [metric.caption, ""]
        out += markdown_table(["method", CLEAN, *rows["names"]],
                              [[m, *(_format(v[n][metric.key], metric) for n in (CLEAN, *rows["names"]))]
                               for m, v in rows["values"].items()])
        out.append("")
    return out


def write_seed_summary(report_files: list[Path], out_stem: Path) -> dict[str, Path]:
    """Read one ``report.json`` per seed; write ``<out_stem>.json`` and ``<out_stem>.md``."""
    missing = [str(p) for p in report_files if not Path(p).is_file()]
    if missing:
        raise ReportError(f"missing report(s): {', '.join(missing)} (run those seeds first)")
    reports = [json.loads(Path(p).read_text()) for p in report_files]
    labels = [Path(p).parent.parent.name for p in report_files]
    summary = aggregate(reports, labels)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_stem.with_suffix(".json"), "markdown": out_stem.with_suffix(".md")}
    paths["json"].write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    paths["markdown"].write_text(markdown(summary))
    return paths
