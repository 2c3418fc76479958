"""Collect probe results of several runs into one report: JSON numbers and Markdown tables.

The report JSON holds the raw values (fractions, metres, cosines) that the tables print after
scaling by the metric's ``scale`` and rounding to its ``digits``; ``null`` prints as ``-``. Its
``conditions`` are the result groups with an image in some run (the condition tags first, then a folder
set's other tags sorted, then ``all``); ``corruptions`` holds, per task, the unseen-corruption rows
(``{"names", "severity", "values": {method: {"clean" or corruption: metrics over all views}}}``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from collab_distill.errors import UserError
from collab_distill.probe.data import ALL
from collab_distill.probe.lidar import RANDOM_INIT_NAME
from collab_distill.probe.results import CLEAN, load_result
from collab_distill.probe.train import evaluation_groups

REPORT_SCHEMA = "collab_distill.report/1"
#: Known methods, in the order rows appear; others follow alphabetically.
METHOD_ORDER = ("teacher", "teacher_plus", "asymmetric", "self_distill", "stage2", "stage1", RANDOM_INIT_NAME)
MISSING = "-"


@dataclass(frozen=True)
class Metric:
    """How a metric is printed: ``round(value * scale, digits)``."""

    key: str
    label: str
    scale: float = 1.0
    digits: int = 3
    higher_is_better: bool = True

    def format(self, value: float | None) -> str:
        return MISSING if value is None else f"{value * self.scale:.{self.digits}f}"

    @property
    def better(self) -> str:
        """``"higher is better"`` or ``"lower is better"``."""
        return f"{'higher' if self.higher_is_better else 'lower'} is better"

    @property
    def caption(self) -> str:
        """The line above a table of this metric, e.g. ``"mIoU (%), higher is better:"``."""
        return f"{self.label}, {self.better}:"


@dataclass(frozen=True)
class Section:
    """One block of the report: a task (or fidelity), its metrics, the first is the headline."""

    key: str
    title: str
    metrics: tuple[Metric, ...]


SECTIONS = (
    Section("seg", "Linear semantic segmentation", (
        Metric("miou", "mIoU (%)", 100, 1), Metric("accuracy", "pixel accuracy (%)", 100, 1))),
    Section("depth", "Linear depth", (
        Metric("rmse", "RMSE (m)", 1, 2, False), Metric("abs_rel", "AbsRel", 1, 3, False),
        Metric("delta1", "delta1 (%)", 100, 1), Metric("delta2", "delta2 (%)", 100, 1),
        Metric("delta3", "delta3 (%)", 100, 1))),
    Section("fidelity", "Feature fidelity (encoder on the adverse view vs teacher on its clear render)", (
        Metric("patch_cosine", "patch cosine", 1, 3), Metric("cls_cosine", "CLS cosine", 1, 3))),
    Section("lidar_seg", "3D linear probe of the LiDAR encoder (per-point lidarseg) and stage-1 agreement", (
        Metric("miou", "mIoU (%)", 100, 1),
        Metric("stage1_teacher_cosine", "cosine of 3D features to the teacher's at their pixels", 1, 3))),
)
SECTION_BY_KEY = {s.key: s for s in SECTIONS}
IOU = Metric("iou", "IoU (%)", 100, 1)


class ReportError(UserError, ValueError):
    """Inputs that cannot make one report (e.g. two results for the same method and task)."""


def method_order(names: list[str], order: list[str] | None = None) -> list[str]:
    """``names`` sorted by ``order`` (default :data:`METHOD_ORDER`), unknown names last, alphabetically."""
    rank = {name: i for i, name in enumerate(order or METHOD_ORDER)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(rank)), n))


def collect(paths: list[str], order: list[str] | None = None) -> dict[str, Any]:
    """The report JSON of result files ``paths`` (see the module docstring).

    Raises:
        ReportError: two results share a method name and task, or no result at all.
        ResultError: a file is not a probe result.
    """
    results = [load_result(p) for p in paths]
    if not results:
        raise ReportError("no probe result given")
    seen: dict[tuple[str, str], str] = {}
    for r in results:
        key = (r["name"], r["task"])
        if key in seen:
            raise ReportError(f"two '{r['task']}' results named '{r['name']}': {seen[key]} and {r['path']} "
                              f"(give one a different --name when probing)")
        seen[key] = r["path"]
    methods = method_order([r["name"] for r in results], order)
    per_section: dict[str, dict[str, dict[str, Any]]] = {}
    runs: dict[str, dict[str, Any]] = {}
    classes: dict[str, list[str]] = {}
    for r in results:
        per_section.setdefault(r["task"], {})[r["name"]] = r["results"]
        if r.get("fidelity") and r["name"] not in per_section.get("fidelity", {}):
            per_section.setdefault("fidelity", {})[r["name"]] = r["fidelity"]
        runs.setdefault(r["name"], {})[r["task"]] = {
            "path": r["path"], "protocol": r.get("protocol"), "encoder": r.get("encoder"),
            "recipe": r["recipe"], "showcase": r.get("showcase")}
        if r.get("classes"):
            classes[r["task"]] = r["classes"]
    present = {g for sec in per_section.values() for res in sec.values() for g, m in res.items()
               if m.get("images", m.get("samples", 0)) > 0}
    conditions = [g for g in evaluation_groups(present - {ALL}) if g in present]
    sections = {}
    for section in SECTIONS:
        if section.key not in per_section:
            continue
        values = {m: {g: per_section[section.key][m].get(g, {}) for g in conditions}
                  for m in methods if m in per_section[section.key]}
        sections[section.key] = {"title": section.title, "metrics": [asdict(x) for x in section.metrics],
                                 "values": values}
    return {"schema": REPORT_SCHEMA, "methods": methods, "conditions": conditions, "sections": sections,
            "corruptions": corruption_rows(results, methods), "classes": classes, "runs": runs}


def corruption_rows(results: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, Any]]:
    """Per task with unseen-corruption rows: ``names`` (in the order the runs list them), ``severity``
    and ``values`` ``{method: {corruption: metrics over all views}}``, with ``clean``: the same views
    uncorrupted.

    Raises:
        ReportError: two runs of one task at different corruption severities.
    """
    out: dict[str, dict[str, Any]] = {}
    first: dict[str, str] = {}  # task -> the run that set its severity
    for r in sorted((r for r in results if r.get("corruptions")), key=lambda r: methods.index(r["name"])):
        severity = r["recipe"]["corruption_severity"]
        task = out.setdefault(r["task"], {"names": [], "severity": severity, "values": {}})
        first.setdefault(r["task"], r["path"])
        if severity != task["severity"]:
            raise ReportError(f"{r['path']}: corruption severity {severity}, {first[r['task']]} has "
                              f"{task['severity']}; probe every run at one severity")
        task["names"] += [n for n in r["corruptions"] if n not in (CLEAN, *task["names"])]
        task["values"][r["name"]] = {n: groups.get(ALL, {}) for n, groups in r["corruptions"].items()}
    return out


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown lines of a table: the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _cell(values: dict[str, Any], group: str, metric: Metric) -> str:
    return metric.format(values.get(group, {}).get(metric.key))


def headline_table(report: dict[str, Any], key: str) -> list[str]:
    """Markdown lines of section ``key``'s first metric: methods x conditions."""
    head = SECTION_BY_KEY[key].metrics[0]
    conditions = report["conditions"]
    return [head.caption, "", *markdown_table(
        ["method", *conditions], [[m, *(_cell(v, g, head) for g in conditions)]
                                  for m, v in report["sections"][key]["values"].items()])]


def corruption_tables(report: dict[str, Any], key: str) -> list[str]:
    """Markdown lines of the unseen-corruption rows of task ``key`` (none without them): per metric a
    table methods x (``clean``, then each corruption)."""
    rows = report.get("corruptions", {}).get(key)
    if not rows:
        return []
    out = [f"### {key}: unseen corruptions (evaluation only, severity {rows['severity']}, all views)", "",
           "The same head on the evaluation views corrupted by each evaluation-only corruption "
           "(collab_distill/data/corruptions.py: none is used in training); `clean`: the same views uncorrupted."]
    for metric in SECTION_BY_KEY[key].metrics:
        out += ["", metric.caption, ""]
        out += markdown_table(["method", CLEAN, *rows["names"]],
                              [[m, *(_cell(v, n, metric) for n in (CLEAN, *rows["names"]))]
                               for m, v in rows["values"].items()])
    return out


def headlines(report: dict[str, Any]) -> str:
    """Every section's title and headline table (what the demo prints at the end)."""
    out = []
    for key, sec in report["sections"].items():
        out += [f"## {sec['title']}", "", *headline_table(report, key), ""]
    return "\n".join(out)


def markdown(report: dict[str, Any], figures: dict[str, str] | None = None) -> str:
    """The report as Markdown: per section a headline table (methods x conditions), then one table
    per condition (methods x metrics, with image counts), per-class IoU, the recipes, the figures."""
    conditions = report["conditions"]
    out = ["# Probe report", "",
           "Rows are methods, columns condition tags of the evaluation split (`all` = every view; a view "
           "with two tags counts for both). `-`: no value. Recipes at the end.", ""]
    for key, sec in report["sections"].items():
        section = SECTION_BY_KEY[key]
        out += [f"## {sec['title']}", "", *headline_table(report, key)]
        for group in conditions:
            out += ["", f"### {key}: {group}", ""]
            out += markdown_table(["method", *(x.label for x in section.metrics), "images"],
                                  [[m, *(_cell(v, group, x) for x in section.metrics),
                                    str(v.get(group, {}).get("images", 0))] for m, v in sec["values"].items()])
        corrupted = corruption_tables(report, key)
        out += ["", *corrupted] if corrupted else []
        if key == "seg" and report["classes"].get("seg"):
            out += ["", "### seg: per-class IoU (%), all", ""]
            names = report["classes"]["seg"]
            out += markdown_table(["method", *names], [[m, *(IOU.format(v.get("all", {}).get("iou", {}).get(c))
                                                             for c in names)] for m, v in sec["values"].items()])
        out.append("")
    out += ["## Recipes", ""]
    rows = []
    for method in report["methods"]:
        for task, run in report["runs"].get(method, {}).items():
            r = run["recipe"]
            rows.append([method, task, str(run["protocol"]), f"`{(run['encoder'] or {}).get('weights', '?')}`",
                         "x".join(map(str, r.get("image_size", []))), str(r.get("blocks")), str(r.get("iterations")),
                         str(r.get("batch_size")), str(r.get("lr")), str(r.get("seed")),
                         ",".join(r.get("train_conditions", [])), str(r.get("train_images")),
                         str(r.get("eval_images"))])
    out += markdown_table(["method", "task", "protocol", "encoder", "H x W", "blocks", "iterations", "batch", "lr",
                           "seed", "train conditions", "train images", "eval images"], rows)
    if figures:
        out += ["", "## Figures", ""]
        out += [f"![{caption}]({name})\n\n*{caption}*\n" for name, caption in figures.items()]
    return "\n".join(out) + "\n"
