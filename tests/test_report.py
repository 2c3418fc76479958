"""The report: tables that match the JSON, method order, PNGs, errors (damaged results fail by name),
from fake probe results."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from collab_distill.paths import ExistingOutputError
from collab_distill.probe.results import ResultError, write_result
from collab_distill.probe.showcase import Showcase
from collab_distill.report import ReportError, build_report, find_results
from collab_distill.report.tables import SECTION_BY_KEY, collect

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["car", "driveable_surface", "vegetation"]
GROUPS = ("clear", "night", "rain", "fog", "snow", "all")
METHODS = ("stage2", "teacher", "asymmetric")     # written out of order on purpose


def _metrics(task: str, rng: np.random.Generator, group: str) -> dict:
    if group == "snow":  # absent from the evaluation split
        empty = {"miou": None, "accuracy": None, "iou": dict.fromkeys(CLASSES)} if task == "seg" else \
            dict.fromkeys(("rmse", "abs_rel", "delta1", "delta2", "delta3"))
        return {"images": 0, "pixels": 0, **empty}
    if task == "seg":
        iou = {c: float(rng.uniform(0.1, 0.9)) for c in CLASSES}
        iou["car"] = None if group == "fog" else iou["car"]
        return {"images": 4, "pixels": 900, "miou": float(rng.uniform(0.2, 0.7)),
                "accuracy": float(rng.uniform(0.5, 0.9)), "iou": iou}
    return {"images": 4, "pixels": 900, "rmse": float(rng.uniform(2, 9)), "abs_rel": float(rng.uniform(0.05, 0.4)),
            **{f"delta{k}": float(rng.uniform(0.5, 1.0)) for k in (1, 2, 3)}}


def _showcase(task: str, seed: int) -> Showcase:
    g = torch.Generator().manual_seed(seed)
    names = ["tok0/CAM_FRONT", "tok1/CAM_FRONT"]
    image = torch.randint(0, 256, (2, 3, 28, 56), generator=g).to(torch.uint8)
    target = torch.full((2, 28, 56), 255, dtype=torch.uint8)
    target[:, ::3, ::4] = torch.randint(0, 3, target[:, ::3, ::4].shape, generator=g).to(torch.uint8)
    if task == "depth":
        target = torch.where(target == 255, 0.0, target.float() * 10 + 5)
        prediction = torch.rand(2, 28, 56, generator=g) * 80
    else:
        prediction = torch.randint(0, 3, (2, 28, 56), generator=g).to(torch.uint8)
    return Showcase(task, names, [("night", "rain"), ("clear",)], CLASSES if task == "seg" else [], image,
                    image.flip(-1), torch.tensor([True, True]), torch.randn(2, 16, 2, 4, generator=g).half(),
                    torch.randn(2, 16, 2, 4, generator=g).half(), prediction, target)


def _write_runs(root: Path) -> dict:
    rng = np.random.default_rng(0)
    written = {}
    for i, method in enumerate(METHODS):
        for task in ("seg", "depth"):
            folder = root / method
            _showcase(task, i).save(folder / f"{task}_showcase.safetensors")
            result = {"name": method, "task": task, "protocol": "linear" if task == "seg" else "lin.1",
                      "encoder": {"weights": f"runs/{method}/weights/student.safetensors"},
                      "recipe": {"image_size": [28, 56], "iterations": 10, "batch_size": 2, "lr": 1e-3, "seed": 0,
                                 "blocks": [-1], "train_conditions": ["all"], "train_images": 8, "eval_images": 4,
                                 "max_depth": 80.0},
                      "classes": CLASSES if task == "seg" else [],
                      "results": {g: _metrics(task, rng, g) for g in GROUPS},
                      "showcase": f"{task}_showcase.safetensors"}
            if task == "seg":
                result["fidelity"] = {g: {"images": 0 if g == "snow" else 4,
                                          "patch_cosine": None if g == "snow" else float(rng.uniform(0.5, 1)),
                                          "cls_cosine": None if g == "snow" else float(rng.uniform(0.5, 1))}
                                      for g in GROUPS}
            write_result(result, folder / f"{task}.json")
            written[(method, task)] = result
    return written


def _markdown_tables(text: str) -> dict[str, list[list[str]]]:
    """Tables keyed by the heading above them (the headline table of a section by its ## title)."""
    tables, heading, rows = {}, None, None
    for line in text.splitlines():
        if line.startswith("#"):
            heading, rows = line.lstrip("# ").strip(), None
        elif line.startswith("|") and not line.startswith("|---"):
            if rows is None:
                rows = tables.setdefault(heading, [])
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return tables


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    written = _write_runs(root)
    out = root / "report"
    return written, build_report([root], out), out


def test_tables_match_the_json_and_the_inputs(built):
    written, made, _ = built
    report = json.loads(made["json"].read_text())
    assert report["methods"] == ["teacher", "asymmetric", "stage2"]        # known order, not file order
    assert report["conditions"] == ["clear", "night", "rain", "fog", "all"]  # snow has no image anywhere
    tables = _markdown_tables(made["markdown"].read_text())
    checked = 0
    for key, sec in report["sections"].items():
        section = SECTION_BY_KEY[key]
        headline = tables[sec["title"]]
        assert headline[0] == ["method", *report["conditions"]]
        for row in headline[1:]:
            method = row[0]
            source = written[(method, "seg" if key == "fidelity" else key)][
                "fidelity" if key == "fidelity" else "results"]
            for group, cell in zip(report["conditions"], row[1:]):
                assert sec["values"][method][group] == source[group]               # JSON = the runs' numbers
                assert cell == section.metrics[0].format(source[group][section.metrics[0].key])  # table = JSON
                checked += 1
        for group in report["conditions"]:
            detail = tables[f"{key}: {group}"]
            for row in detail[1:]:
                values = sec["values"][row[0]][group]
                assert row[1:-1] == [m.format(values.get(m.key)) for m in section.metrics]
                assert row[-1] == str(values["images"])
    assert checked == 3 * 3 * 5
    iou = tables["seg: per-class IoU (%), all"]
    assert iou[0] == ["method", *CLASSES]
    teacher = written[("teacher", "seg")]["results"]["all"]["iou"]
    assert iou[1] == ["teacher", *(f"{teacher[c] * 100:.1f}" for c in CLASSES)]
    assert len(tables["Recipes"]) == 1 + 6


def test_figures_are_written_and_not_blank(built):
    _, made, out = built
    for name in ("bars_seg", "bars_depth", "bars_fidelity", "overlay_seg", "overlay_depth", "pca", "scatter"):
        path = made[name]
        assert path.is_file() and path.parent == out
        pixels = np.asarray(Image.open(path).convert("RGB"))
        assert pixels.shape[0] > 150 and pixels.shape[1] > 300
        assert pixels.reshape(-1, 3).std(0).max() > 20              # something is drawn
        assert f"]({path.name})" in made["markdown"].read_text()   # and linked from the Markdown


def test_duplicate_method_and_task_is_an_error(tmp_path):
    _write_runs(tmp_path / "a")
    _write_runs(tmp_path / "b")
    with pytest.raises(ReportError, match="two '(seg|depth)' results named 'asymmetric'"):
        build_report([tmp_path], tmp_path / "out")


def _run_tool(monkeypatch, capsys, *argv: str) -> tuple[int, list[str]]:
    """``tools/report.py argv``: its exit code and its non-empty stderr lines."""
    spec = importlib.util.spec_from_file_location("report_tool", REPO / "tools" / "report.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(sys, "argv", ["report.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        tool.main()
    return exit_info.value.code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_cli_reports_a_missing_input_in_one_line(tmp_path, monkeypatch, capsys):
    code, lines = _run_tool(monkeypatch, capsys, str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert code == 2 and len(lines) == 1 and "no such file or folder" in lines[0]


@pytest.mark.parametrize("damaged, keep_bytes", [("stage2/seg.json", 200), ("stage2/seg.json", 0),
                                                 ("teacher/custom_name.json", 60)])
def test_a_damaged_result_fails_by_name_named_or_found_in_a_folder(tmp_path, monkeypatch, capsys, damaged,
                                                                   keep_bytes):
    """A half-written result used to drop its method's row silently when the folder was searched."""
    _write_runs(tmp_path / "runs")
    path = tmp_path / "runs" / damaged
    if not path.exists():  # a result under a name of the user's choosing (tools/probe_lidar.py --out)
        (tmp_path / "runs" / "teacher" / "seg.json").rename(path)
    path.write_bytes(path.read_bytes()[:keep_bytes])
    for inputs in ([tmp_path / "runs"], [path]):
        with pytest.raises(ResultError, match=f"{path}: cannot read a probe result .*run the probe"):
            build_report(inputs, tmp_path / "out")
    code, lines = _run_tool(monkeypatch, capsys, str(tmp_path / "runs"), "--out", str(tmp_path / "out"))
    assert code == 2 and len(lines) == 1 and str(path) in lines[0]


def test_other_json_files_in_a_folder_are_skipped_unreadable_ones_with_a_warning(tmp_path, caplog):
    written = _write_runs(tmp_path / "runs")
    (tmp_path / "runs" / "stage2" / "run.json").write_text('{"git_sha": "abc"}')
    broken = tmp_path / "runs" / "stage2" / "checkpoints" / "step_4" / "state.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"step": 4, "comp')
    with caplog.at_level("WARNING", logger="collab_distill.report"):
        found = find_results([tmp_path / "runs"])
    assert len(found) == len(written)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith(f"skipped {broken}: not a probe result, not valid JSON (")


def test_seed_summary_is_mean_and_sample_std_of_the_reports(tmp_path):
    from collab_distill.report.seeds import write_seed_summary

    reports = []
    for seed in range(3):
        runs = tmp_path / f"seed{seed}"
        _write_runs(runs)
        rng = np.random.default_rng(seed)  # other numbers per seed
        for method in METHODS:
            path = runs / method / "seg.json"
            result = json.loads(path.read_text())
            result["results"]["clear"]["miou"] = float(rng.uniform(0.2, 0.7))
            if seed == 2 and method == "teacher":
                result["results"]["clear"]["accuracy"] = None
            write_result(result, path)
        report = runs / "report" / "report.json"  # what build_report writes, without the figures
        report.parent.mkdir()
        report.write_text(json.dumps(collect([str(p) for p in find_results([runs])])))
        reports.append(report)
    paths = write_seed_summary(reports, tmp_path / "seeds")
    summary = json.loads(paths["json"].read_text())
    assert summary["seeds"] == ["seed0", "seed1", "seed2"]
    per_seed = [json.loads(p.read_text()) for p in reports]
    values = [r["sections"]["seg"]["values"]["stage2"]["clear"]["miou"] for r in per_seed]
    cell = summary["sections"]["seg"]["values"]["stage2"]["clear"]["miou"]
    assert cell["values"] == values and len(set(values)) == 3
    assert cell["mean"] == pytest.approx(np.mean(values)) and cell["std"] == pytest.approx(np.std(values, ddof=1))
    assert summary["sections"]["seg"]["values"]["teacher"]["clear"]["accuracy"]["mean"] is None  # seed 2 lacks it
    assert summary["sections"]["seg"]["values"]["teacher"]["fog"]["accuracy"]["mean"] is not None
    assert "snow" not in summary["conditions"]  # no image in any seed
    text = paths["markdown"].read_text()
    assert f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}" in text


def test_seed_summary_names_a_missing_report(tmp_path):
    from collab_distill.report.seeds import write_seed_summary

    with pytest.raises(ReportError, match="seed1"):
        write_seed_summary([tmp_path / "seed1" / "report" / "report.json"], tmp_path / "seeds")


def test_an_existing_report_is_replaced_only_when_asked(built):
    _, made, out = built
    before = made["markdown"].read_bytes()
    with pytest.raises(ExistingOutputError, match="report.md exists.*--overwrite"):
        build_report([out.parent], out)
    assert made["markdown"].read_bytes() == before
    assert build_report([out.parent], out, overwrite=True)["markdown"] == made["markdown"]


def _add_corruptions(root: Path, seed: int, severity: int = 3) -> None:
    """Give every result of ``root`` two unseen-corruption rows (numbers drawn from ``seed``)."""
    rng = np.random.default_rng(100 + seed)
    for path in sorted(root.glob("*/*.json")):
        result = json.loads(path.read_text())
        result["recipe"].update(corruptions=["pixelate", "zoom_blur"], corruption_severity=severity)
        result["corruptions"] = {n: {g: _metrics(result["task"], rng, g) for g in GROUPS}
                                 for n in ("clean", "pixelate", "zoom_blur")}
        write_result(result, path)


def test_corruption_rows_in_the_report_and_the_seed_summary(tmp_path):
    from collab_distill.report.seeds import write_seed_summary

    reports = []
    for seed in range(2):
        runs = tmp_path / f"seed{seed}"
        _write_runs(runs)
        _add_corruptions(runs, seed)
        made = build_report([runs], runs / "report")
        reports.append(made["json"])
    report = json.loads(reports[0].read_text())
    rows = report["corruptions"]["depth"]
    assert rows["names"] == ["pixelate", "zoom_blur"] and rows["severity"] == 3
    assert list(rows["values"]) == report["methods"] == ["teacher", "asymmetric", "stage2"]
    source = json.loads((tmp_path / "seed0" / "stage2" / "depth.json").read_text())
    assert rows["values"]["stage2"]["zoom_blur"] == source["corruptions"]["zoom_blur"]["all"]
    tables = _markdown_tables((tmp_path / "seed0" / "report" / "report.md").read_text())
    rmse = tables["depth: unseen corruptions (evaluation only, severity 3, all views)"]
    assert rmse[0] == ["method", "clean", "pixelate", "zoom_blur"] and len(rmse) == 5 * (1 + 3)  # a table per metric
    assert rmse[3] == ["stage2", f"{source['corruptions']['clean']['all']['rmse']:.2f}",
                       f"{source['corruptions']['pixelate']['all']['rmse']:.2f}",
                       f"{source['corruptions']['zoom_blur']['all']['rmse']:.2f}"]
    assert "corruptions" not in json.dumps(report["sections"])  # the condition tables are untouched
    summary = json.loads(write_seed_summary(reports, tmp_path / "seeds")["json"].read_text())
    cell = summary["corruptions"]["seg"]["values"]["teacher"]["pixelate"]["miou"]
    per_seed = [json.loads(p.read_text())["corruptions"]["seg"]["values"]["teacher"]["pixelate"]["miou"]
                for p in reports]
    assert cell["values"] == per_seed and cell["mean"] == pytest.approx(np.mean(per_seed))
    assert cell["std"] == pytest.approx(np.std(per_seed, ddof=1))
    text = (tmp_path / "seeds.md").read_text()
    assert "| method | clean | pixelate | zoom_blur |" in text
    assert f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}" in text


def test_runs_at_two_corruption_severities_are_refused_naming_both(tmp_path):
    _write_runs(tmp_path)
    _add_corruptions(tmp_path, 0)
    path = tmp_path / "stage2" / "seg.json"
    result = json.loads(path.read_text())
    result["recipe"]["corruption_severity"] = 5
    write_result(result, path)
    with pytest.raises(ReportError, match=r"stage2/seg.json: corruption severity 5, .*teacher/seg.json has 3"):
        collect([str(p) for p in find_results([tmp_path])])
