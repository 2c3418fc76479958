"""Training: every method's loss falls with frozen parts bit-identical; resume equals a straight run."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from collab_distill.config import RunConfig, load_config
from collab_distill.data.collate import Collate
from collab_distill.data.dataset import PairedDataset
from collab_distill.engine.checkpoint import list_checkpoints
from collab_distill.engine.trainer import train
from collab_distill.methods.registry import build_method

SMALL = ["model.image.name=vit_pico_patch14_cpu", "data.image_size=[56,112]", "data.max_points=1500",
         "data.cameras=[random]", "model.point.stem_width=8", "model.point.enc_widths=[8,16]",
         "model.point.enc_depths=[1,1]", "model.point.dec_widths=[16,16]", "model.point.dec_depths=[1,1]",
         "data.voxel_size=0.5", "train.batch_size=2", "train.log_every=1", "optim.warmup_steps=0"]


def _cfg(config: str, infos_dir, out, *extra: str) -> RunConfig:
    return load_config(config, [f"data.info_dir={infos_dir}", f"experiment.output_dir={out}", *SMALL, *extra])


def _losses(out) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _frozen_state(method) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.clone() for n, m in method.frozen_modules().items() for k, v in m.state_dict().items()}


def _train(cfg: RunConfig, resume: str = ""):
    """Train; check the frozen modules did not change; return the method, the result and the loss on a
    fixed batch (samples 0 and 1, epoch 0) before and after training."""
    torch.manual_seed(cfg.experiment.seed)
    method = build_method(cfg)
    before = _frozen_state(method)
    dataset = PairedDataset(cfg.data, seed=cfg.experiment.seed, teacher_store=getattr(cfg.method, "teacher_store", ""))
    collate = Collate(cfg.data.voxel_size)
    probe = collate([dataset[(0, 0)], dataset[(1, 0)]])
    with torch.no_grad():
        loss_before = float(method.train(False)(probe).loss)
    result = train(method, dataset, collate, cfg, resume, progress=False)
    after = _frozen_state(method)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before), \
        "a frozen module changed during training"
    with torch.no_grad():
        loss_after = float(method.train(False)(probe).loss)
    return method, result, (loss_before, loss_after)


@pytest.fixture(scope="module")
def stage1_run(textured_infos_dir, tmp_path_factory):
    """Stage 1 as shipped: teacher maps from a teacher-feature store, 3D augmentation on."""
    from collab_distill.engine.teacher_store import build_teacher_store

    out, store = tmp_path_factory.mktemp("stage1"), tmp_path_factory.mktemp("teacher_store") / "store"
    cfg = _cfg("configs/stage1/synthetic.yaml", textured_infos_dir, out, "train.max_steps=8", "optim.lr=3e-3",
               "data.cameras=[CAM_FRONT]")
    build_teacher_store(cfg, store, progress=False)
    cfg = dataclasses.replace(cfg, method=dataclasses.replace(cfg.method, teacher_store=str(store)))
    method, result, probe = _train(cfg)
    return cfg, method, result, out, probe


def test_stage1_learns_and_writes_outputs(stage1_run):
    cfg, method, result, out, (before, after) = stage1_run
    assert len(_losses(out)) == 8
    assert after < before - 0.05, (before, after)
    assert (out / "config.yaml").is_file() and json.loads((out / "run.json").read_text())["git_sha"]
    assert {p.name for p in (out / "weights").iterdir()} == {"point_encoder.safetensors", "head.safetensors"}
    assert [p.name for p in list_checkpoints(out)] == ["step_00000008"]
    assert method.teacher is None and cfg.data.augment  # the maps came from the store
    assert any((out / "tb").iterdir())


def test_stage2_learns_with_frozen_anchor(stage1_run, textured_infos_dir, tmp_path):
    s1_out = stage1_run[3]
    cfg = _cfg("configs/stage2/synthetic.yaml", textured_infos_dir, tmp_path, "train.max_steps=6", "optim.lr=2e-3",
               f"method.point_weights={s1_out / 'weights'}", "data.cameras=[CAM_FRONT]")
    _, result, (before, after) = _train(cfg)
    assert after < before - 0.01, (before, after)
    assert {"anchor", "patch", "retention"} <= set(result.last_logs)


@pytest.mark.parametrize("name, lr, factor", [("asymmetric", 5e-4, 0.9), ("self_distill", 5e-4, 0.9),
                                              ("teacher_plus", 2e-5, 1.0)])  # starts near 0: Adam needs a small step
def test_image_only_baselines_learn(name, lr, factor, textured_infos_dir, tmp_path):
    cfg = _cfg(f"configs/baselines/{name}.yaml", textured_infos_dir, tmp_path, "train.max_steps=6", f"optim.lr={lr}",
               "method.degradations=[fog,night]", "method.severities=[3]", "data.cameras=[CAM_FRONT]",
               "data.conditions=[all]")
    _, _, (before, after) = _train(cfg)
    assert after < factor * before, (before, after)


def test_resume_equals_straight_run(textured_infos_dir, tmp_path):
    """N steps straight == k steps, the process gone, a resume from the checkpoint to N."""
    common = ("train.max_steps=4", "train.ckpt_every=2", "train.keep_last=3", "optim.lr=3e-3",
              "optim.warmup_steps=2", "data.augment=true",
              "data.image_aug.random_crop=true", "data.image_aug.hflip_prob=0.5", "data.point_aug.rotate_deg=180")
    straight, _, _ = _train(_cfg("configs/stage1/synthetic.yaml", textured_infos_dir, tmp_path / "a", *common))
    # The "killed" run: only its step-2 checkpoint survives.
    killed = tmp_path / "b" / "checkpoints"
    killed.mkdir(parents=True)
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_00000002", killed / "step_00000002")
    (killed / ".tmp_step_00000004_999").mkdir()  # a half-written checkpoint must be ignored
    resumed, result, _ = _train(_cfg("configs/stage1/synthetic.yaml", textured_infos_dir, tmp_path / "b", *common),
                             resume="auto")
    assert result.steps == 4
    a, b = straight.checkpoint_state(), resumed.checkpoint_state()
    # Bit for bit: the same code on the same data in the same process (same kernels, same thread count);
    # only a run compared with a different process count or BLAS kernel needs a tolerance.
    assert [key for key in a if not torch.equal(a[key], b[key])] == []
    assert _losses(tmp_path / "a")[2:] == _losses(tmp_path / "b")


def test_teacher_pretraining_learns_and_exports_a_timm_vit(synthetic_infos, tmp_path):
    from collab_distill.models import ImageEncoder

    cfg = _cfg("configs/teacher/synthetic.yaml", synthetic_infos, tmp_path, "train.max_steps=6", "optim.lr=2e-3",
               "data.cameras=[all]")
    method, _, (before, after) = _train(cfg)
    assert after < before - 0.05, (before, after)
    weights = tmp_path / "weights" / "teacher_vit.safetensors"
    teacher = ImageEncoder(dataclasses.replace(cfg.model.image, weights=str(weights)), cfg.data.image_size).freeze()
    images = torch.rand(1, 3, *cfg.data.image_size)
    torch.testing.assert_close(teacher(images).patch[-1], method.encoder.eval()(images).patch[-1])


def test_layer_decay_follows_the_method_hook_whatever_the_vit_is_called():
    """The ViT is found by parameter identity (Method.layer_decay_vit), not by an attribute-name prefix."""
    from collab_distill.config import OptimConfig
    from collab_distill.engine.optim import build_optimizer
    from collab_distill.methods.base import Method
    from collab_distill.models import ImageEncoder
    from collab_distill.models.config import ImageEncoderConfig

    class Backboned(Method):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = ImageEncoder(ImageEncoderConfig(name="vit_pico_patch14_cpu", weights="random"), (56, 112))
            self.head = torch.nn.Linear(self.backbone.embed_dim, 2)

        def trainable_names(self) -> tuple[str, ...]:
            return ("backbone", "head")

        def layer_decay_vit(self) -> ImageEncoder:
            return self.backbone

    method, cfg = Backboned(), OptimConfig(lr=1.0, layer_decay=0.5)
    lrs = {id(p): group["lr"] for group in build_optimizer(method, cfg, method.layer_decay_vit()).param_groups
           for p in group["params"]}
    depth, vit = method.backbone.depth, method.backbone.vit
    assert lrs[id(vit.patch_embed.proj.weight)] == 0.5 ** (depth + 1)    # embeddings: layer 0
    assert lrs[id(vit.blocks[0].mlp.fc1.weight)] == 0.5 ** depth
    assert lrs[id(vit.blocks[-1].mlp.fc1.weight)] == 0.5                 # last block: layer depth
    assert lrs[id(method.head.weight)] == 1.0                            # not the ViT's
    assert {group["lr"] for group in build_optimizer(method, cfg).param_groups} == {1.0}  # no ViT named: no decay
    assert Method.layer_decay_vit(method) is None                         # the default hook
