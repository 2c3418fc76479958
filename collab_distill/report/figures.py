"""The report's PNGs (matplotlib, Agg): per-condition bars, PCA-RGB feature maps, a PCA scatter of
clear vs adverse tokens, and ground-truth / prediction overlays.

Feature figures read the showcase files the probes write (same views in every run, matched by name).
PCA is fitted per method on that method's tokens (all shown views and their clear references), so
colours compare conditions within a row, not methods across rows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from collab_distill.data.taxonomy import IGNORE  # noqa: E402
from collab_distill.probe.showcase import Showcase, condition_key  # noqa: E402
from collab_distill.report.tables import SECTION_BY_KEY  # noqa: E402

DPI = 110
MAX_SCATTER_TOKENS = 1500
#: nuScenes-lidarseg colours of the 16 evaluation classes (RGB 0..255).
LIDARSEG_COLOURS = {
    "barrier": (112, 128, 144), "bicycle": (220, 20, 60), "bus": (255, 127, 80), "car": (255, 158, 0),
    "construction_vehicle": (233, 150, 70), "motorcycle": (255, 61, 99), "pedestrian": (0, 0, 230),
    "traffic_cone": (47, 79, 79), "trailer": (255, 140, 0), "truck": (255, 99, 71),
    "driveable_surface": (0, 207, 191), "other_flat": (175, 0, 75), "sidewalk": (75, 0, 75),
    "terrain": (112, 180, 60), "manmade": (222, 184, 135), "vegetation": (0, 175, 0)}


def class_palette(classes: list[str]) -> np.ndarray:
    """``(K, 3)`` float colours: the lidarseg colours where known, else tab20."""
    tab = plt.get_cmap("tab20")
    return np.array([np.array(LIDARSEG_COLOURS[c]) / 255 if c in LIDARSEG_COLOURS else tab(i % 20)[:3]
                     for i, c in enumerate(classes)])


def condition_bars(report: dict[str, Any], key: str, path: Path) -> Path:
    """Grouped bars (conditions on x, one bar per method), one panel per metric of section ``key``."""
    sec = report["sections"][key]
    metrics = SECTION_BY_KEY[key].metrics[:3]
    conditions, methods = report["conditions"], list(sec["values"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False,
                             layout="constrained")
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(conditions))
    for ax, metric in zip(axes[0], metrics):
        for j, method in enumerate(methods):
            vals = [sec["values"][method].get(g, {}).get(metric.key) for g in conditions]
            heights = [np.nan if v is None else v * metric.scale for v in vals]
            ax.bar(x + (j - (len(methods) - 1) / 2) * width, heights, width, label=method)
        ax.set_xticks(x, conditions)
        ax.set_title(f"{metric.label} ({metric.better})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside right upper", fontsize=7)
    fig.suptitle(sec["title"], fontsize=10)
    return _save(fig, path)


def pca_basis(tokens: Tensor, dims: int) -> tuple[Tensor, Tensor]:
    """Mean ``(D,)`` and the top ``dims`` principal axes ``(D, dims)`` of ``tokens (N, D)``; each
    axis signed so that its largest-magnitude loading is positive (deterministic colours)."""
    x = tokens.double()
    mean = x.mean(0)
    _, _, v = torch.linalg.svd(x - mean, full_matrices=False)
    axes = v[:dims].T
    signs = torch.sign(axes.gather(0, axes.abs().argmax(0, keepdim=True)))
    return mean, axes * signs


def _tokens(maps: Tensor) -> Tensor:
    """``(S, D, h, w)`` -> ``(S*h*w, D)``."""
    return maps.float().permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


def short_name(name: str) -> str:
    """``<token>/<CAMERA>`` -> ``<token[:6]> <CAMERA>``; other names unchanged."""
    token, _, camera = name.rpartition("/")
    return f"{token[:6]} {camera}" if token else name


def _views(show: Showcase) -> list[tuple[str, Tensor, Tensor, str]]:
    """(label, image (3,H,W) uint8, features (D,h,w), condition) for each view and each clear reference
    that is not the view itself."""
    out = []
    for i, name in enumerate(show.names):
        out.append((f"{short_name(name)}\n{condition_key(show.tags[i])}", show.image[i], show.features[i],
                    condition_key(show.tags[i])))
        if show.has_reference[i] and show.tags[i] != ("clear",):
            out.append((f"{short_name(name)}\nclear render", show.reference[i], show.reference_features[i],
                        "clear render"))
    return out


def pca_feature_maps(showcases: dict[str, Showcase], path: Path) -> Path:
    """Rows: the images, then one row per method; columns: the showcase views and their clear renders.
    Each method's first three principal components map to RGB (1st-99th percentile stretched)."""
    methods = list(showcases)
    columns = _views(showcases[methods[0]])
    size = (2.6 * len(columns), 1.5 * (1 + len(methods)))
    fig, axes = plt.subplots(1 + len(methods), len(columns), figsize=size, squeeze=False, layout="constrained")
    for c, (label, image, _, _) in enumerate(columns):
        axes[0][c].imshow(image.permute(1, 2, 0).numpy())
        axes[0][c].set_title(label, fontsize=7)
    for r, method in enumerate(methods, start=1):
        views = _views(showcases[method])
        feats = torch.stack([f for _, _, f, _ in views])
        mean, basis = pca_basis(_tokens(feats), 3)
        proj = ((_tokens(feats).double() - mean) @ basis).numpy()
        lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
        rgb = np.clip((proj - lo) / np.maximum(hi - lo, 1e-9), 0, 1).reshape(len(views), *feats.shape[2:], 3)
        for c in range(len(columns)):
            axes[r][c].imshow(rgb[c], interpolation="nearest")
        axes[r][0].set_ylabel(method, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("PCA of last-block patch tokens (RGB = first 3 components, per method)", fontsize=9)
    return _save(fig, path)


def clear_vs_adverse_scatter(showcases: dict[str, Showcase], path: Path, seed: int = 0) -> Path:
    """One panel per method: the 2D PCA of its tokens on clear renders / clear views and on adverse views."""
    methods = list(showcases)
    fig, axes = plt.subplots(1, len(methods), figsize=(3.4 * len(methods), 3.2), squeeze=False, layout="constrained")
    generator = torch.Generator().manual_seed(seed)
    for ax, method in zip(axes[0], methods):
        groups: dict[str, list[Tensor]] = {}
        for _, _, feats, group in _views(showcases[method]):
            groups.setdefault(group, []).append(_tokens(feats[None]))
        tokens = {g: torch.cat(t) for g, t in groups.items()}
        mean, basis = pca_basis(torch.cat(list(tokens.values())), 2)
        for g, t in sorted(tokens.items()):
            pick = torch.randperm(len(t), generator=generator)[:MAX_SCATTER_TOKENS]
            xy = ((t[pick].double() - mean) @ basis).numpy()
            ax.scatter(xy[:, 0], xy[:, 1], s=2, alpha=0.4, label=g)
        ax.set_title(method, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize=7, markerscale=4)
    fig.suptitle("Patch tokens, clear vs adverse (PCA, 2 components, per method)", fontsize=9)
    return _save(fig, path)


def overlays(showcases: dict[str, Showcase], path: Path, max_depth: float = 80.0) -> Path:
    """Rows: showcase views; columns: the ground truth over the image, then each method's prediction
    (class colours for seg, a depth colour map for depth)."""
    methods = list(showcases)
    first = showcases[methods[0]]
    seg = first.task == "seg"
    palette = class_palette(first.classes) if seg else None
    rows = len(first.names)
    size = (3.0 * (1 + len(methods)), 1.7 * rows)
    fig, axes = plt.subplots(rows, 1 + len(methods), figsize=size, squeeze=False, layout="constrained")
    for i, name in enumerate(first.names):
        image = first.image[i].permute(1, 2, 0).numpy() / 255.0
        axes[i][0].imshow(image)
        target = first.target[i].numpy()
        rr, cc = np.nonzero(target != IGNORE) if seg else np.nonzero(target > 0)
        colours = palette[target[rr, cc]] if seg else plt.get_cmap("turbo")(target[rr, cc] / max_depth)
        axes[i][0].scatter(cc, rr, c=colours, s=0.6, linewidths=0)
        axes[i][0].set_ylabel(f"{short_name(name)}\n{condition_key(first.tags[i])}", fontsize=7)
        for j, method in enumerate(methods, start=1):
            pred = showcases[method].prediction[i].numpy()
            shown = 0.45 * image + 0.55 * palette[pred] if seg else plt.get_cmap("turbo")(pred / max_depth)[..., :3]
            axes[i][j].imshow(shown)
    axes[0][0].set_title("ground truth (projected LiDAR)" if seg else "ground truth depth (projected LiDAR)",
                         fontsize=8)
    for j, method in enumerate(methods, start=1):
        axes[0][j].set_title(f"{method}: prediction", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if seg:
        present = sorted(set(np.unique(first.target.numpy())) - {IGNORE})
        handles = [plt.Rectangle((0, 0), 1, 1, color=palette[k]) for k in present]
        fig.legend(handles, [first.classes[k] for k in present], loc="outside lower center",
                   ncol=min(8, len(present)), fontsize=7)
    else:
        fig.colorbar(plt.cm.ScalarMappable(plt.Normalize(0, max_depth), "turbo"), ax=axes, shrink=0.6,
                     label="depth (m)")
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
