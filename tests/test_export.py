"""Exports for the ecosystem: a timm folder that plain timm loads with the project's features, and the
original DINOv2 layout that timm's converter maps back exactly."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_models import REG4, randomize
from timm.layers import SwiGLUPacked, resample_abs_pos_embed
from timm.models.vision_transformer import checkpoint_filter_fn
from torch import nn

from collab_distill.config import load_config, save_run_config
from collab_distill.models import ImageEncoder, ImageEncoderConfig
from collab_distill.models.export import (
    ExportError,
    dinov2_mismatch,
    dinov2_state_dict,
    export_dinov2,
    export_timm,
    export_vit,
)
from collab_distill.models.weights import NonFiniteWeightsError

ROOT = Path(__file__).resolve().parents[1]
SIZE = (28, 42)                        # 2 x 3 patches: non-square, so a lost grid would show
TINY = "vit_tiny_patch14_cpu"
PICO = "vit_pico_patch14_cpu"
SWIGLU = {"mlp_layer": SwiGLUPacked, "act_layer": nn.SiLU}          # as vit_giant_patch14_dinov2

# Runs in a fresh interpreter: only timm, and the one module that registers the CPU presets.
LOAD_IN_PLAIN_TIMM = """
import json, sys
from pathlib import Path
import timm, torch
from safetensors.torch import load_file, save_file
import collab_distill.models.vit_presets  # registers vit_tiny_patch14_cpu in timm

inputs, out = Path(sys.argv[1]), Path(sys.argv[2])
x = load_file(inputs)["x"]
tokens = {}
for folder in map(Path, sys.argv[3:]):
    config = json.loads((folder / "config.json").read_text())
    models = {
        "local": timm.create_model(f"local-dir:{folder}", pretrained=True),
        "overlay": timm.create_model(config["architecture"], pretrained=True,
                                     pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")),
                                     **config["model_args"]),
    }
    for form, model in models.items():
        data = timm.data.resolve_model_data_config(model)
        mean, std = (torch.tensor(data[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
        with torch.no_grad():
            tokens[f"{folder.name}/{form}"] = model.eval().forward_features((x - mean) / std).contiguous()
save_file(tokens, str(out / "tokens.safetensors"))
(out / "modules.json").write_text(json.dumps(sorted(m for m in sys.modules if m.startswith("collab_distill"))))
"""


def make_encoder(name: str = TINY, size: tuple[int, int] = SIZE, **model_kwargs) -> ImageEncoder:
    """A randomly initialised encoder whose every weight matters (LayerScale 1e-5 would hide the blocks)."""
    enc = ImageEncoder(ImageEncoderConfig(name=name, weights="random", model_kwargs=model_kwargs), size)
    randomize(enc)
    return enc.eval()


# ----------------------------------------------------------------------------- timm folder
def test_timm_export_gives_the_same_features_in_plain_timm(tmp_path):
    encoders = {"plain": make_encoder(), "reg4": make_encoder(**REG4)}
    recipe = {"method": "stage2", "output_dir": "runs/stage2", "seed": 3, "git_sha": "abc"}
    folders = [export_timm(enc.vit, tmp_path / f"{name}_timm", recipe) for name, enc in encoders.items()]
    x = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    save_file({"x": x}, str(tmp_path / "input.safetensors"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", LOAD_IN_PLAIN_TIMM, str(tmp_path / "input.safetensors"), str(tmp_path),
                    *map(str, folders)], check=True, cwd=ROOT, env=env, capture_output=True, text=True)

    modules = json.loads((tmp_path / "modules.json").read_text())
    assert set(modules) <= {"collab_distill", "collab_distill.models", "collab_distill.models.vit_presets"}, modules
    tokens = load_file(tmp_path / "tokens.safetensors")
    for (name, enc), folder in zip(encoders.items(), folders):
        with torch.no_grad():
            ours = enc(x)
        h, w = enc.grid_size
        for form in ("local", "overlay"):
            theirs = tokens[f"{folder.name}/{form}"]                    # (B, prefix + h*w, D), final norm
            patch = theirs[:, enc.num_prefix_tokens:].reshape(2, h, w, -1).permute(0, 3, 1, 2)
            torch.testing.assert_close(theirs[:, 0], ours.cls, atol=1e-5, rtol=1e-5, msg=f"{name} {form} cls")
            torch.testing.assert_close(patch, ours.patch[0], atol=1e-5, rtol=1e-5, msg=f"{name} {form} patch")


def test_timm_config_records_input_normalisation_recipe_and_sha256(tmp_path):
    enc = make_encoder()
    folder = export_timm(enc.vit, tmp_path / "student_timm", {"method": "self_distill", "seed": 0})
    config = json.loads((folder / "config.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student_timm"]      # no temporary folder left
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert config["architecture"] == TINY and config["num_classes"] == 0
    assert config["model_args"]["img_size"] == list(SIZE)
    assert config["pretrained_cfg"]["input_size"] == [3, *SIZE]
    assert config["pretrained_cfg"]["mean"] == pytest.approx(enc.mean.flatten().tolist())
    assert config["pretrained_cfg"]["std"] == pytest.approx(enc.std.flatten().tolist())
    extras = config["collab_distill"]
    assert extras["recipe"] == {"method": "self_distill", "seed": 0}
    written = (folder / "model.safetensors").read_bytes()
    assert extras["sha256"]["model.safetensors"] == hashlib.sha256(written).hexdigest()
    assert set(load_file(folder / "model.safetensors")) == set(enc.vit.state_dict())     # timm's keys, no "vit."


# ----------------------------------------------------------------------------- DINOv2 layout
def _dinov2_keys(depth: int, registers: bool, swiglu: bool) -> set[str]:
    """The keys of facebookresearch/dinov2's DinoVisionTransformer (block_chunks=0, no head)."""
    fc1, fc2 = ("w12", "w3") if swiglu else ("fc1", "fc2")
    block = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
             "ls1.gamma", "norm2.weight", "norm2.bias", f"mlp.{fc1}.weight", f"mlp.{fc1}.bias", f"mlp.{fc2}.weight",
             f"mlp.{fc2}.bias", "ls2.gamma"]
    return ({"cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight",
             "norm.bias"} | ({"register_tokens"} if registers else set())
            | {f"blocks.{i}.{key}" for i in range(depth) for key in block})


@pytest.mark.parametrize("kwargs", [{}, REG4, SWIGLU], ids=["plain", "reg4", "swiglu"])
def test_dinov2_layout_converts_back_exactly_at_the_reference_size(kwargs):
    vit = timm.create_model(PICO, num_classes=0, **kwargs)         # 518 px: DINOv2's 37 x 37 grid
    randomize(vit)
    dino = dinov2_state_dict(vit)
    assert set(dino) == _dinov2_keys(3, "reg_tokens" in kwargs, "mlp_layer" in kwargs)
    assert dino["pos_embed"].shape == (1, 1 + 37 * 37, 64) and dino["mask_token"].shape == (1, 64)
    assert not dino["mask_token"].any()
    back = checkpoint_filter_fn(dict(dino), timm.create_model(PICO, num_classes=0, **kwargs))
    ours = vit.state_dict()
    assert back.keys() == ours.keys()
    assert all(torch.equal(back[k], ours[k]) for k in ours)


def test_dinov2_export_puts_the_trained_grid_on_the_reference_grid(tmp_path):
    enc = make_encoder(PICO, **REG4)
    path = export_dinov2(enc.vit, tmp_path / "student_dinov2.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["layout"] == "dinov2" and f.metadata()["trained_img_size"] == "28,42"
    back = checkpoint_filter_fn(load_file(path), timm.create_model(PICO, num_classes=0, **REG4))
    ours = enc.vit.state_dict()
    assert back.keys() == ours.keys()
    assert all(torch.equal(back[k], ours[k]) for k in ours if k != "pos_embed")
    expected = resample_abs_pos_embed(ours["pos_embed"], new_size=[37, 37], old_size=[2, 3], num_prefix_tokens=0)
    assert torch.equal(back["pos_embed"], expected)


def test_a_vit_without_dinov2_structure_gets_only_the_timm_folder(tmp_path):
    vit = timm.create_model("vit_small_patch16_224", num_classes=0, img_size=(32, 48), depth=2, embed_dim=64,
                            num_heads=2)                                           # the original ViT
    assert dinov2_mismatch(vit) == "no LayerScale"
    with pytest.raises(ExportError, match="no DINOv2 architecture"):
        dinov2_state_dict(vit)
    assert [p.name for p in export_vit(vit, tmp_path, "student", {})] == ["student_timm"]
    assert dinov2_mismatch(timm.create_model(PICO, num_classes=5)).startswith("keys outside DINOv2's layout ['head")


# ----------------------------------------------------------------------------- refusals and Method.export
def test_a_non_finite_weight_refuses_the_export_and_writes_nothing(tmp_path):
    enc = make_encoder(PICO)
    with torch.no_grad():
        enc.vit.blocks[1].attn.qkv.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match="blocks.1.attn.qkv.weight"):
        export_vit(enc.vit, tmp_path / "weights", "student", {})
    with pytest.raises(NonFiniteWeightsError):
        export_dinov2(enc.vit, tmp_path / "student_dinov2.safetensors")
    assert not any(tmp_path.rglob("*"))


SMALL = ["model.image.name=vit_pico_patch14_cpu", "model.image.weights=random", "data.image_size=[28,42]",
         "model.point.stem_width=8", "model.point.enc_widths=[8,16]", "model.point.enc_depths=[1,1]",
         "model.point.dec_widths=[16,16]", "model.point.dec_depths=[1,1]"]


@pytest.mark.parametrize("config, expected", [
    ("configs/baselines/self_distill.yaml",
     ["student.safetensors", "student_dinov2.safetensors", "student_timm"]),
    ("configs/stage1/synthetic.yaml", ["head.safetensors", "point_encoder.safetensors"]),   # the ViT is frozen
])
def test_method_export_adds_the_ecosystem_files_for_a_trained_vit(tmp_path, config, expected):
    from collab_distill.methods.registry import build_method

    cfg = load_config(config, [f"experiment.output_dir={tmp_path}", "experiment.seed=7", *SMALL])
    save_run_config(cfg, tmp_path)                                   # config.yaml + run.json, as the trainer does
    method = build_method(cfg)
    for _ in range(2):                                               # a second export replaces the first
        paths = method.export(tmp_path / "weights")
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == expected == sorted(p.name for p in paths)
    if "student_timm" in expected:
        assert all(k.startswith("vit.") for k in load_file(tmp_path / "weights" / "student.safetensors"))
        config = json.loads((tmp_path / "weights" / "student_timm" / "config.json").read_text())
        recipe = config["collab_distill"]["recipe"]
        assert recipe["method"] == "self_distill" and recipe["seed"] == 7 and recipe["module"] == "student"
        assert recipe["output_dir"] == str(tmp_path) and recipe["git_sha"]
