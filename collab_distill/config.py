"""Typed run configuration: YAML files with inheritance, dotted command-line overrides, validation.

A run is described by a dataclass schema (:class:`RunConfig` or any dataclass a tool passes). A YAML
file may start with ``base: other.yaml`` (or a list of files, merged left to right; paths relative to
the file) and then overrides any subset of keys. Command-line overrides use dotted keys,
``optim.lr=1e-4 data.cameras=[CAM_FRONT]``; their values are parsed as YAML scalars/lists.

Every problem is reported as one :class:`ConfigError` line that names the key and where it came
from, e.g. ``configs/stage1/default.yaml: unknown key 'optim.lrr' (did you mean 'optim.lr'?)``.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import json
import os
import subprocess
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml

from collab_distill.errors import ConfigError
from collab_distill.models.config import ModelConfig
from collab_distill.ranges import (Momentum, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range,
                                   Severity, UnitInterval)

T = TypeVar("T")
BASE_KEY = "base"


# --------------------------------------------------------------------------------------------
# Schema shared by every run. Method-, model- and probe-specific sections are added by the
# modules that own them; keep defaults small enough for a CPU.
# --------------------------------------------------------------------------------------------
@dataclass
class ExperimentConfig:
    """Where and how reproducibly a run writes its outputs."""

    name: str = "default"
    output_dir: str = "runs/default"
    seed: NonNegativeInt = 0


@dataclass
class ImageAug:
    """Image augmentation (training only; evaluation resizes and centre-crops)."""

    scale_range: tuple[PositiveFloat, PositiveFloat] = (1.0, 1.0)  # extra zoom before the crop
    hflip_prob: UnitInterval = 0.0
    random_crop: bool = False                      # otherwise a centre crop


@dataclass
class PointAug:
    """3D augmentation, applied after pairing (training only)."""

    rotate_deg: NonNegativeFloat = 0.0             # uniform rotation about z in [-r, r] degrees
    flip_prob: UnitInterval = 0.0                  # mirror y -> -y
    scale_range: tuple[PositiveFloat, PositiveFloat] = (1.0, 1.0)


@dataclass
class DataConfig:
    """Which prepared nuScenes-format data a run reads and how point-pixel pairs are formed."""

    info_dir: str = "data/synthetic/infos"
    dataroot: str = ""                   # empty: the dataroot recorded in the info files
    split: str = "train"
    conditions: list[str] = field(default_factory=lambda: ["clear"])  # tags kept; [all] keeps every sample
    cameras: list[str] = field(default_factory=lambda: ["random"])    # [random], [all] or channel names
    image_size: tuple[PositiveInt, PositiveInt] = (224, 448)          # (H, W)
    min_depth: PositiveFloat = 1.0
    zbuffer_cell: NonNegativeInt = 0
    max_points: NonNegativeInt = 0       # >0: random subset of the points per sample
    voxel_size: PositiveFloat = 0.1      # metres
    num_workers: NonNegativeInt = 0
    augment: bool = False                # apply image_aug and point_aug
    image_aug: ImageAug = field(default_factory=ImageAug)
    point_aug: PointAug = field(default_factory=PointAug)


@dataclass
class OptimConfig:
    """Optimiser and schedule (AdamW with linear warm-up and cosine decay)."""

    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 1e-4
    betas: tuple[Momentum, Momentum] = (0.9, 0.999)
    warmup_steps: NonNegativeInt = 0
    min_lr_ratio: UnitInterval = 0.0     # cosine ends at lr * min_lr_ratio
    grad_clip: NonNegativeFloat = 0.0    # max global grad norm; 0 disables
    layer_decay: Annotated[float, Range(gt=0, le=1)] = 1.0  # <1: layer-wise lr decay for the ViT student's blocks
    vit_prefix: str = "student."         # parameter-name prefix of the ViT that layer_decay applies to


@dataclass
class TrainConfig:
    """Loop length and batching; ``batch_size`` is the total batch over all processes."""

    epochs: PositiveInt = 1
    max_steps: NonNegativeInt = 0        # >0 overrides epochs (optimiser steps)
    batch_size: PositiveInt = 2          # total over processes and accumulation steps
    grad_accum: PositiveInt = 1
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    log_every: PositiveInt = 10
    ckpt_every: NonNegativeInt = 0       # optimiser steps between checkpoints; 0: only at the end
    keep_last: NonNegativeInt = 2        # checkpoints kept; 0 keeps all
    max_nonfinite: NonNegativeInt = 5    # stop after this many skipped non-finite steps


@dataclass
class MethodConfig:
    """The training method (``name``) and its loss weights; docs/methods.md explains each choice."""

    name: Literal["teacher_pretrain", "stage1", "stage2", "asymmetric", "self_distill", "teacher_plus"] = "stage1"
    teacher_cache: bool = False          # stage1: cache teacher patch maps (fp16) per image; needs data.augment=false
    # stage1 loss: 1 - cos averaged per sample, then over samples; or ScaLR's exact form, ||k - q||_2 of the
    # normalised features averaged over all pairs of the (per-process) batch (docs/methods.md)
    stage1_loss: Literal["cosine_per_sample", "scalr_l2"] = "cosine_per_sample"
    point_weights: str = ""              # stage2: folder with the stage-1 point_encoder/head .safetensors
    anchor_weight: NonNegativeFloat = 1.0     # stage2: point -> pixel (student at projected pixels vs 3D features)
    patch_weight: NonNegativeFloat = 1.0      # stage2: pixel -> point (patch token vs mean 3D feature of its points);
                                              # image-only: patch-token cosine
    retention_weight: NonNegativeFloat = 1.0  # stage2: student vs frozen teacher on clear images
    cls_weight: NonNegativeFloat = 1.0        # image-only: CLS-token cosine
    attn_weight: NonNegativeFloat = 1.0       # image-only: KL of CLS->patch attention
    attn_blocks: PositiveInt = 1              # image-only: last k blocks whose attention is matched
    degradations: list[str] = field(default_factory=lambda: [
        "fog", "rain", "snow", "night", "gaussian_noise", "shot_noise", "motion_blur", "defocus_blur", "jpeg"])
    severities: list[Severity] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    ema_momentum: Momentum = 0.0              # self_distill/teacher_plus: >0 makes the teacher an EMA of the student
    depth_weight: NonNegativeFloat = 1.0      # teacher_pretrain: weight of the log-depth L1 next to the class CE


@dataclass
class RunConfig:
    """Top-level schema of a training or evaluation run."""

    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
                schema: type[T] = RunConfig) -> T:  # type: ignore[assignment]
    """Build a ``schema`` instance from a YAML file (with ``base:`` inheritance) and overrides.

    Args:
        path: YAML file, or None to start from the schema's defaults.
        overrides: ``["dotted.key=value", ...]`` applied after the file, in order.
        schema: the dataclass type to validate against.

    Raises:
        ConfigError: missing file, bad YAML, unknown key, wrong type (one line each).
    """
    raw: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if path is not None:
        raw = _load_yaml_tree(Path(path), origins, chain=())
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value)
        origins[key] = "command line"
    return _build(schema, raw, prefix="", origins=origins, default_origin=str(path or "defaults"))


def check_config(cfg: T, where: str) -> None:
    """Validate a schema instance built in code (types and ranges) as :func:`load_config` validates a file.

    Raises:
        ConfigError: one line naming the key, ``where`` (e.g. "synthetic config"), the rule and the value.
    """
    _build(type(cfg), config_to_dict(cfg), prefix="", origins={}, default_origin=where)


def _load_yaml_tree(path: Path, origins: dict[str, str], chain: tuple[Path, ...]) -> dict[str, Any]:
    """Read ``path`` and its ``base`` files, merged; record which file set each dotted key."""
    if not path.is_file():
        where = f" (base of {chain[-1]})" if chain else ""
        raise ConfigError(f"{path}: config file not found{where}")
    resolved = path.resolve()
    if resolved in chain:
        raise ConfigError(f"{path}: circular 'base' chain: {' -> '.join(map(str, chain + (resolved,)))}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{line} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    bases = data.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    merged: dict[str, Any] = {}
    for base in bases:
        merged = _deep_merge(merged, _load_yaml_tree(path.parent / base, origins, chain + (resolved,)))
    for key in _dotted_keys(data):
        origins[key] = str(path)
    return _deep_merge(merged, data)


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _dotted_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(value, dict):
            keys.extend(_dotted_keys(value, full + "."))
    return keys


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"command line: override '{item}' must look like key.sub=value")
    key, text = item.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise ConfigError(f"command line: override '{item}' has an empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key, value


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def _origin(key: str, origins: dict[str, str], default: str) -> str:
    """Where ``key`` was set: the key itself, else its nearest parent, else a child (override)."""
    probe = key.split("[")[0]
    while probe:
        if probe in origins:
            return origins[probe]
        probe = probe.rpartition(".")[0]
    child = next((src for k, src in origins.items() if k.startswith(key + ".")), None)
    return child or default


def _build(schema: type[T], raw: dict[str, Any], prefix: str, origins: dict[str, str],
           default_origin: str) -> T:
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(schema, include_extras=True)  # keeps Annotated[..., Range]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean '{prefix}{near[0]}'?)" if near else \
                f" (known keys: {', '.join(sorted(fields))})"
            raise ConfigError(f"{_origin(dotted, origins, default_origin)}: unknown key '{dotted}'{hint}")
        kwargs[key] = _coerce(hints[key], value, dotted, origins, default_origin)
    return schema(**kwargs)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str, origins: dict[str, str], default_origin: str) -> Any:
    """Check ``value`` against annotation ``tp`` and convert YAML forms (list -> tuple, int -> float).

    ``Annotated[T, Range(...)]`` is checked as ``T``, then against each of its ranges."""
    where = _origin(key, origins, default_origin)

    def fail() -> typing.NoReturn:
        raise ConfigError(f"{where}: key '{key}' expects {_type_name(tp)}, got {value!r} "
                          f"({type(value).__name__})")

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        value = _coerce(args[0], value, key, origins, default_origin)
        for bound in (meta for meta in args[1:] if isinstance(meta, Range)):
            if value not in bound:
                raise ConfigError(f"{where}: key '{key}' must be {bound}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fail()
        return _build(tp, value, key + ".", origins, default_origin)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key, origins, default_origin)
            except ConfigError:
                continue
        fail()
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: key '{key}' must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            fail()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: key '{key}' expects {len(args)} values, got {len(value)}")
            return tuple(_coerce(a, v, f"{key}[{i}]", origins, default_origin)
                         for i, (a, v) in enumerate(zip(args, value)))
        item_tp = args[0] if args else Any
        items = [_coerce(item_tp, v, f"{key}[{i}]", origins, default_origin) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            fail()
        val_tp = args[1] if args else Any
        return {str(k): _coerce(val_tp, v, f"{key}.{k}", origins, default_origin) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                fail()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is bool or tp is str:
        if not isinstance(value, tp):
            fail()
        return value
    raise ConfigError(f"{where}: key '{key}' has an unsupported schema type {tp!r}")


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------
def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a config dataclass (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(cfg))


def git_revision(repo: str | Path | None = None) -> str:
    """``<sha>`` of HEAD, with ``-dirty`` when tracked files changed; ``unknown`` outside git."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def save_run_config(cfg: Any, out_dir: str | Path) -> Path:
    """Write ``config.yaml`` (the resolved config) and ``run.json`` (git SHA, command, time) to ``out_dir``.

    Returns:
        The path of the written ``config.yaml``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    meta = {"git_sha": git_revision(), "command": sys.argv,
            "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "python": sys.version.split()[0],
            # results depend on the thread count (float reductions): record what OpenMP was given
            "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}}
    (out / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    return cfg_path
