"""Typed run configuration: YAML files with inheritance, dotted command-line overrides, validation.

A config is a dataclass schema (:class:`RunConfig`, ``ProbeConfig``, ...) registered under a name
(:func:`register_schema`); every YAML file names its own with ``schema: run`` (or inherits it), so
one loader reads any of them. A file may start with ``base: other.yaml`` (or a list of files, merged
left to right; paths relative to the file, else among the shipped configs) and then overrides any
subset of keys. Command-line overrides use dotted keys, ``optim.lr=1e-4 data.cameras=[CAM_FRONT]``;
their values are parsed as YAML scalars/lists. Config paths are found by :func:`resolve_config_path`:
as given, else among the configs shipped in the package (``configs/x.yaml`` = ``CONFIG_ROOT/x.yaml``).

``method:`` is the section of the method ``method.name`` names (:mod:`collab_distill.methods.registry`):
a key that method does not read is an error, and a file that switches to a method with another
section does not inherit the base file's method keys.

Every problem is reported as one :class:`ConfigError` line that names the key and where it came
from, e.g. ``configs/stage1/default.yaml: unknown key 'optim.lrr' (did you mean 'optim.lr'?)``.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import importlib
import json
import os
import subprocess
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Mapping, TypeVar, Union

import yaml

from collab_distill.errors import ConfigError
from collab_distill.methods.config import MethodSection, Stage1Config
from collab_distill.methods.registry import METHODS
from collab_distill.models.config import ModelConfig
from collab_distill.ranges import (
    Momentum,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
    UnitInterval,
)

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
    # LiDAR sweeps aggregated per sample: the keyframe and up to nsweeps - 1 previous ones (as many as
    # the info record has; at most data.infos.MAX_SWEEPS), with a time-lag column (collab_distill/data/sweeps.py)
    nsweeps: Annotated[int, Range(ge=1, le=10)] = 1
    voxel_size: PositiveFloat = 0.1      # metres
    num_workers: NonNegativeInt = 0
    # images leave the dataset (through the workers and to the device) as float32 in [0, 1] or as uint8,
    # 4x smaller; the trainer turns uint8 into the same floats on the training device (float_images)
    image_dtype: Literal["float32", "uint8"] = "float32"
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
    # <1: layer-wise lr decay for the blocks of the ViT the method trains (Method.layer_decay_vit)
    layer_decay: Annotated[float, Range(gt=0, le=1)] = 1.0


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


@dataclass(frozen=True)
class OneOf:
    """``Annotated`` marker of a section whose dataclass its ``key`` field picks: ``options()[value]``.

    ``default`` is the value when no file or override sets it. A file or override that picks another
    dataclass than the one inherited starts the section afresh (the inherited keys belong to the
    other dataclass); the same dataclass under another name (``asymmetric`` -> ``self_distill``) keeps them.
    """

    key: str
    options: Callable[[], Mapping[str, type]]
    default: str

    def switches(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
        """Whether section ``new`` (a file's or an override's) picks another dataclass than ``old``."""
        if self.key not in new:
            return False
        options = self.options()
        return options.get(old.get(self.key, self.default)) is not options.get(new[self.key])


def method_sections() -> dict[str, type]:
    """``method.name`` -> the dataclass of its section, from the method registry."""
    return {name: entry.config for name, entry in METHODS.items()}


#: ``RunConfig.method``: the section of the method that ``method.name`` names.
METHOD_SECTION = OneOf("name", method_sections, default="stage1")


@dataclass
class RunConfig:
    """Top-level schema of a training run (``schema: run``); ``method`` is the chosen method's section
    (:mod:`collab_distill.methods.config`)."""

    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: Annotated[MethodSection, METHOD_SECTION] = field(default_factory=Stage1Config)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------------------------
# Schemas by name: every YAML names its own (`schema: run`), so one loader reads any of them
# --------------------------------------------------------------------------------------------
#: Schema name -> dataclass, filled by :func:`register_schema` where each schema is defined.
SCHEMAS: dict[str, type] = {}
#: Schema name -> the module that registers it. The loader imports collab_distill's own modules when a
#: file names their schema; others (the synthetic world of ``data_prep``) must be imported by the caller.
SCHEMA_MODULES: dict[str, str] = {
    "run": "collab_distill.config",
    "probe": "collab_distill.probe.config",
    "lidar_probe": "collab_distill.probe.lidar",
    "asvp_study": "collab_distill.defense.study",
    "demo": "collab_distill.pipeline",
    "synthetic": "data_prep.synthetic.config",
}
SCHEMA_KEY = "schema"
CONFIG_ROOT = Path(__file__).resolve().parent / "configs"  # the shipped configs (package data)


def register_schema(name: str, cls: type[T]) -> type[T]:
    """Make ``schema: <name>`` in a YAML file mean dataclass ``cls``; returns ``cls``.

    Raises:
        ValueError: ``name`` is already registered for another class (a reloaded module may register
            its class again).
    """
    known = SCHEMAS.get(name)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"schema {name!r} is already registered for {known.__module__}.{known.__qualname__}")
    SCHEMAS[name] = cls
    return cls


register_schema("run", RunConfig)


def schema_name(cls: type) -> str | None:
    """The registered name of schema ``cls``, or None."""
    return next((name for name, registered in SCHEMAS.items() if registered is cls), None)


def schema_class(name: str, where: str) -> type:
    """The dataclass registered as ``name`` (importing collab_distill's own module that registers it).

    Raises:
        ConfigError: ``name`` is unknown, or registered by a module the caller has not imported.
    """
    home = SCHEMA_MODULES.get(name)
    if name not in SCHEMAS and home is not None and home.startswith("collab_distill."):
        importlib.import_module(home)
    if name in SCHEMAS:
        return SCHEMAS[name]
    if home is None:
        raise ConfigError(f"{where}: unknown schema {name!r} (known: {', '.join(sorted(SCHEMA_MODULES))})")
    raise ConfigError(f"{where}: schema {name!r} is registered by {home}: import it before loading this file")


def resolve_config_path(path: str | Path) -> Path:
    """The config file ``path`` names: ``path`` itself if it exists (from the working directory or
    absolute), else the shipped file: ``configs/x.yaml`` and ``x.yaml`` both mean ``<CONFIG_ROOT>/x.yaml``.

    So ``--config configs/stage1/synthetic.yaml`` works from any working directory and for an
    installed (non-editable) package.

    Raises:
        ConfigError: no such file.
    """
    found = _file_or_shipped(Path(path), path)
    if found is None:
        raise ConfigError(f"{path}: config file not found (nor among the shipped configs in {CONFIG_ROOT})")
    return found


def _file_or_shipped(first: Path, name: str | Path) -> Path | None:
    """``first`` if it is a file, else the shipped config a relative ``name`` names (``configs/x.yaml``
    or ``x.yaml``) if it exists, else None."""
    if first.is_file():
        return first
    given = Path(name)
    if given.is_absolute():
        return None
    shipped = CONFIG_ROOT / (given.relative_to("configs") if given.parts[:1] == ("configs",) else given)
    return shipped if shipped.is_file() else None


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
                schema: type[T] | None = None) -> T:
    """Build a schema instance from a YAML file (with ``base:`` inheritance) and overrides.

    Args:
        path: YAML file (found by :func:`resolve_config_path`), or None to start from the schema's defaults.
        overrides: ``["dotted.key=value", ...]`` applied after the file, in order.
        schema: the dataclass to validate against; None: the one the file names with ``schema:``
            (:data:`SCHEMAS`), else :class:`RunConfig`. A class that differs from the file's ``schema:``
            is an error: the file is meant for another tool.

    Raises:
        ConfigError: missing file, bad YAML, another schema than ``schema``, unknown key, wrong
            type (one line each).
    """
    layers = _read_chain(resolve_config_path(path), chain=()) if path is not None else []
    declared = _declared_schema(layers)
    cls = _pick_schema(schema, declared, path)
    variants = _variant_sections(cls)
    raw, origins = _merge_layers(layers, variants)
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value, variants)
        origins[key] = "command line"
    unnamed = " in a 'run' config (the file names no 'schema:')" if layers and not declared and not schema else ""
    return _build(cls, raw, prefix="", src=_Sources(origins, str(path or "defaults")), owner=unnamed)


def declared_schema(path: str | Path) -> str | None:
    """The ``schema:`` that config file ``path`` declares, itself or through its ``base:`` files."""
    declared = _declared_schema(_read_chain(resolve_config_path(path), chain=()))
    return declared[0] if declared else None


def check_config(cfg: T, where: str) -> None:
    """Validate a schema instance built in code (types and ranges) as :func:`load_config` validates a file.

    Raises:
        ConfigError: one line naming the key, ``where`` (e.g. "synthetic config"), the rule and the value.
    """
    _build(type(cfg), config_to_dict(cfg), prefix="", src=_Sources({}, where))


@dataclass
class _Layer:
    """One YAML file of a ``base:`` chain: its keys (without ``base``/``schema``) and its ``schema:``."""

    path: Path
    data: dict[str, Any]
    schema: str | None


def _read_chain(path: Path, chain: tuple[Path, ...]) -> list[_Layer]:
    """``path`` and its ``base`` files, in merge order (bases first, depth first).

    A base is a path relative to the file, or else one :func:`resolve_config_path` finds (a user's
    file may say ``base: configs/stage1/synthetic.yaml``)."""
    resolved = path.resolve()
    if resolved in chain:
        raise ConfigError(f"{path}: circular 'base' chain: {' -> '.join(map(str, chain + (resolved,)))}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    declared = data.pop(SCHEMA_KEY, None)
    layers = []
    for base in [bases] if isinstance(bases, str) else bases:
        layers += _read_chain(_base_path(str(base), path), chain + (resolved,))
    return [*layers, _Layer(path, data, declared)]


def _base_path(base: str, owner: Path) -> Path:
    """A ``base:`` entry of file ``owner``: relative to ``owner``, else a shipped config."""
    found = _file_or_shipped(owner.parent / base, base)
    if found is None:
        raise ConfigError(f"{owner.parent / base}: config file not found (base of {owner})")
    return found


def _read_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of one YAML file."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{line} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _declared_schema(layers: list[_Layer]) -> tuple[str, Path] | None:
    """The ``schema:`` a chain declares and the file that declares it last (files must agree)."""
    found: tuple[str, Path] | None = None
    for layer in layers:
        if layer.schema is None:
            continue
        if found is not None and layer.schema != found[0]:
            raise ConfigError(f"{layer.path}: schema {layer.schema!r} differs from {found[0]!r} of its base "
                              f"{found[1]}")
        found = (str(layer.schema), layer.path)
    return found


def _pick_schema(schema: type | None, declared: tuple[str, Path] | None, path: str | Path | None) -> type:
    """The schema to build: the caller's (checked against the file's ``schema:``), else the declared
    one, else :class:`RunConfig`."""
    if declared is None:
        return schema or RunConfig
    name, source = declared
    cls = schema_class(name, str(source))
    if schema is not None and schema is not cls:
        raise ConfigError(f"{path} is a {name!r} config; this tool reads "
                          f"{schema_name(schema) or schema.__name__!r} configs")
    return cls


def _variant_sections(schema: type, prefix: str = "") -> dict[str, OneOf]:
    """Dotted path -> :class:`OneOf` marker of every section of ``schema`` whose dataclass a key picks."""
    hints = typing.get_type_hints(schema, include_extras=True)
    found: dict[str, OneOf] = {}
    for f in dataclasses.fields(schema):
        marker = _one_of(hints[f.name])
        if marker is not None:
            found[prefix + f.name] = marker
        elif dataclasses.is_dataclass(hints[f.name]):
            found.update(_variant_sections(hints[f.name], f"{prefix}{f.name}."))
    return found


def _one_of(tp: Any) -> OneOf | None:
    """The :class:`OneOf` marker of an ``Annotated`` type, if any."""
    if typing.get_origin(tp) is not Annotated:
        return None
    return next((meta for meta in typing.get_args(tp)[1:] if isinstance(meta, OneOf)), None)


def _merge_layers(layers: list[_Layer], variants: dict[str, OneOf]) -> tuple[dict[str, Any], dict[str, str]]:
    """The merged tree of a chain and, per dotted key, the file that set it last."""
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for layer in layers:
        merged = _deep_merge(merged, layer.data, variants)
        for key in _dotted_keys(layer.data):
            origins[key] = str(layer.path)
    return merged, origins


def _deep_merge(a: dict[str, Any], b: dict[str, Any], variants: dict[str, OneOf], prefix: str = "") -> dict[str, Any]:
    """``b`` over ``a``, sections merged key by key; a variant section that switches dataclass is replaced."""
    out = dict(a)
    for key, value in b.items():
        marker = variants.get(prefix + key)
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not (marker and marker.switches(out[key],
                                                                                                          value)):
            out[key] = _deep_merge(out[key], value, variants, f"{prefix}{key}.")
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


def _set_dotted(tree: dict[str, Any], key: str, value: Any, variants: dict[str, OneOf]) -> None:
    """Set ``tree[a][b][c] = value`` for ``key`` ``a.b.c``; an override that switches a variant
    section's dataclass (``method.name=stage2`` over a stage-1 file) empties that section first."""
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    marker = variants.get(".".join(parts[:-1]))
    if marker is not None and marker.switches(node, {parts[-1]: value}):
        node.clear()
    node[parts[-1]] = value


@dataclass(frozen=True)
class _Sources:
    """Where each dotted key was set (a file or ``command line``), for the error messages."""

    origins: dict[str, str]
    default: str

    def of(self, key: str) -> str:
        """Where ``key`` was set: the key itself, else its nearest parent, else a child (override)."""
        probe = key.split("[")[0]
        while probe:
            if probe in self.origins:
                return self.origins[probe]
            probe = probe.rpartition(".")[0]
        child = next((src for k, src in self.origins.items() if k.startswith(key + ".")), None)
        return child or self.default

    def type_error(self, key: str, tp: Any, value: Any) -> ConfigError:
        """``<where>: key 'k' expects <type>, got <value> (<its type>)``."""
        return ConfigError(f"{self.of(key)}: key '{key}' expects {_type_name(tp)}, got {value!r} "
                           f"({type(value).__name__})")


def _build(schema: type[T], raw: dict[str, Any], prefix: str, src: _Sources, owner: str = "") -> T:
    """A ``schema`` instance from the mapping ``raw`` (keys under ``prefix``), every value coerced.

    ``owner`` completes the unknown-key message, e.g. `` for method 'stage2'``."""
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(schema, include_extras=True)  # keeps Annotated[..., Range]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean '{prefix}{near[0]}'?)" if near else \
                f" (known keys: {', '.join(sorted(fields))})"
            raise ConfigError(f"{src.of(dotted)}: unknown key '{dotted}'{owner}{hint}")
        kwargs[key] = _coerce(hints[key], value, dotted, src)
    return schema(**kwargs)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str, src: _Sources) -> Any:
    """Check ``value`` against annotation ``tp`` and convert YAML forms (list -> tuple, int -> float):
    dispatch to the piece for ``tp``'s kind."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _coerce_annotated(tp, value, key, src)
    if dataclasses.is_dataclass(tp):
        return _coerce_section(tp, value, key, src)
    if origin in (Union, types.UnionType):
        return _coerce_union(tp, value, key, src)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{src.of(key)}: key '{key}' must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin in (list, tuple):
        return _coerce_sequence(tp, value, key, src)
    if origin is dict:
        return _coerce_mapping(tp, value, key, src)
    return _coerce_scalar(tp, value, key, src)


def _coerce_annotated(tp: Any, value: Any, key: str, src: _Sources) -> Any:
    """``Annotated[T, OneOf(...)]``: the section of the picked dataclass; ``Annotated[T, Range(...)]``:
    checked as ``T``, then against each range."""
    inner, *metadata = typing.get_args(tp)
    marker = _one_of(tp)
    if marker is not None:
        return _coerce_variant(marker, value, key, src)
    value = _coerce(inner, value, key, src)
    for bound in (meta for meta in metadata if isinstance(meta, Range)):
        if value not in bound:
            raise ConfigError(f"{src.of(key)}: key '{key}' must be {bound}, got {value!r}")
    return value


def _coerce_variant(marker: OneOf, value: Any, key: str, src: _Sources) -> Any:
    """A section whose dataclass its ``marker.key`` value picks (``method.name`` -> the method's section)."""
    if not isinstance(value, dict):
        raise src.type_error(key, dict, value)
    options = marker.options()
    choice = value.get(marker.key, marker.default)
    if choice not in options:
        tag = f"{key}.{marker.key}"
        raise ConfigError(f"{src.of(tag)}: key '{tag}' must be one of {list(options)}, got {choice!r}")
    own = _field_names(options[choice])
    for name in value:
        others = [option for option, cls in options.items() if name not in own and name in _field_names(cls)]
        if others:  # say where the key belongs rather than guess a look-alike
            raise ConfigError(f"{src.of(f'{key}.{name}')}: unknown key '{key}.{name}' for {key} {choice!r} (a key of "
                              f"{', '.join(others)}; {choice} reads {', '.join(sorted(own))})")
    return _build(options[choice], value, key + ".", src, owner=f" for {key} {choice!r}")


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def _coerce_section(tp: type, value: Any, key: str, src: _Sources) -> Any:
    """A nested dataclass from a mapping."""
    if not isinstance(value, dict):
        raise src.type_error(key, tp, value)
    return _build(tp, value, key + ".", src)


def _coerce_union(tp: Any, value: Any, key: str, src: _Sources) -> Any:
    """``A | B | None``: the first member that accepts ``value``."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    for arg in (a for a in args if a is not type(None)):
        try:
            return _coerce(arg, value, key, src)
        except ConfigError:
            continue
    raise src.type_error(key, tp, value)


def _coerce_sequence(tp: Any, value: Any, key: str, src: _Sources) -> Any:
    """``list[T]``, ``tuple[T, ...]`` or a fixed-length ``tuple[A, B]`` from a YAML list."""
    if not isinstance(value, (list, tuple)):
        raise src.type_error(key, tp, value)
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ConfigError(f"{src.of(key)}: key '{key}' expects {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, f"{key}[{i}]", src) for i, (a, v) in enumerate(zip(args, value)))
    items = [_coerce(args[0] if args else Any, v, f"{key}[{i}]", src) for i, v in enumerate(value)]
    return tuple(items) if typing.get_origin(tp) is tuple else items


def _coerce_mapping(tp: Any, value: Any, key: str, src: _Sources) -> dict[str, Any]:
    """``dict[str, T]`` from a YAML mapping (keys become strings)."""
    if not isinstance(value, dict):
        raise src.type_error(key, tp, value)
    args = typing.get_args(tp)
    return {str(k): _coerce(args[1] if args else Any, v, f"{key}.{k}", src) for k, v in value.items()}


def _coerce_scalar(tp: Any, value: Any, key: str, src: _Sources) -> Any:
    """``Any``, ``float`` (an int or a YAML 1.1 string like ``1e-4`` is accepted), ``int``, ``bool``, ``str``."""
    if tp is Any:
        return value
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise src.type_error(key, tp, value) from None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is float and number:
        return float(value)
    if (tp is int and number and isinstance(value, int)) or (tp in (bool, str) and isinstance(value, tp)):
        return value
    if tp in (float, int, bool, str):
        raise src.type_error(key, tp, value)
    raise ConfigError(f"{src.of(key)}: key '{key}' has an unsupported schema type {tp!r}")


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
    """Write ``config.yaml`` (the resolved config, with its ``schema:``) and ``run.json`` (git SHA,
    command, time) to ``out_dir``.

    Returns:
        The path of the written ``config.yaml``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.yaml"
    name = schema_name(type(cfg))
    cfg_path.write_text(yaml.safe_dump({**({SCHEMA_KEY: name} if name else {}), **config_to_dict(cfg)},
                                       sort_keys=False))
    meta = {"git_sha": git_revision(), "command": sys.argv,
            "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "python": sys.version.split()[0],
            # results depend on the thread count (float reductions): record what OpenMP was given
            "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}}
    (out / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    return cfg_path
