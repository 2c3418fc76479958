"""Lazy fix for PyPI's CUDA-built torchvision on a CPU-only torch (installed by scripts/setup.sh).

torchvision 0.28.0 is the only torchvision that accepts torch 2.13.0, and it is a CUDA build: its
``_C.so`` cannot load next to the CPU torch, and ``import torchvision`` (hence ``import timm`` and the
``accelerate`` CLI) then fails with ``operator torchvision::nms does not exist``. This module
registers a meta-path finder; the first time ``torchvision`` is imported it tries to load ``_C.so``
and, only if that fails, defines the ``nms``/``qnms`` schemas so torchvision's fake-kernel
registrations succeed. On a CUDA torch ``_C.so`` loads and nothing is changed.
Set ``TV_CPU_SHIM=0`` to disable. See docs/install.md.
"""
import importlib.abc
import importlib.machinery
import os
import sys

_LIBS = []


def _has_schema(torch, qualname):
    try:
        torch._C._dispatch_find_schema_or_throw(qualname, "")
        return True
    except RuntimeError:
        return False


def _define_missing_ops(torch):
    missing = [n for n in ("nms", "qnms") if not _has_schema(torch, "torchvision::" + n)]
    if missing:
        lib = torch.library.Library("torchvision", "FRAGMENT")
        for name in missing:
            lib.define(name + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIBS.append(lib)  # the Library object must stay alive


class _TVShimFinder(importlib.abc.MetaPathFinder):
    done = False

    def find_spec(self, name, path=None, target=None):
        if name != "torchvision" or _TVShimFinder.done:
            return None
        _TVShimFinder.done = True
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.origin is None:
            return None
        import torch

        try:
            torch.ops.load_library(os.path.join(os.path.dirname(spec.origin), "_C.so"))
        except (OSError, RuntimeError):
            _define_missing_ops(torch)
        return None  # the normal finders import torchvision


if os.environ.get("TV_CPU_SHIM", "1") != "0":
    sys.meta_path.insert(0, _TVShimFinder())
