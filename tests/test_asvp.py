"""ASVP (collab_distill.defense): identity at h = 1, the spectrum it produces, shapes/dtypes, gradients,
the adaptive rank rule, both placements on a CNN and on the ViT encoder; plus the study's metrics,
UNet, crops and one lockstep distillation step, the encoder study end to end at a tiny size, and the
study folder (a failed part keeps the finished ones, resume, refusals, the tool's one-line errors)."""
from __future__ import annotations

import dataclasses
import json
import math
import re
import runpy
from pathlib import Path

import kornia
import pytest
import torch
from torch import nn

from collab_distill.defense import ASVPConfig, ASVPDefense, adaptive_rank, as_matrices, perturb, spectrum, study
from collab_distill.defense.restoration.data import PairedImages, random_crops
from collab_distill.defense.restoration.distill import (
    Attacker,
    TrainSettings,
    distill_lockstep,
    plain_source,
    record_outputs,
)
from collab_distill.defense.restoration.metrics import psnr, ssim
from collab_distill.defense.restoration.unet import UNet
from collab_distill.defense.study import StudyError, load_study_config, prepare_data, run_study
from data_prep.world import SyntheticWorldBuilder

SOLVERS = ["svd", "gram", "lowrank"]
#: (B, C, H, W) maps in both orientations (C < H*W and C > H*W) and (B, N, D) tokens (N > D and N < D).
SHAPES = [(3, 8, 5, 7), (2, 40, 3, 4), (3, 21, 16), (2, 6, 30)]


def _randn(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _decaying(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Random features whose singular values halve one after the other (well separated, so even
    the randomised solver finds the top ones)."""
    u, _, vh = torch.linalg.svd(as_matrices(_randn(shape, seed)), full_matrices=False)
    sigma = 2.0 ** -torch.arange(u.shape[-1], dtype=torch.float32)
    return ((u * sigma) @ vh).reshape(shape)


def _svdvals(x: torch.Tensor, view: str = "channels") -> torch.Tensor:
    return torch.linalg.svdvals(as_matrices(x, view).double())


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_h_one_is_bitwise_identity(solver: str, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    # The output is x + (h - 1) * U_k U_k^T x computed in fp32: with h = 1 the correction is exactly
    # (+-)0, and x + 0 == x; fp16/bf16 -> fp32 -> fp16/bf16 is exact. Only the sign of an exact zero
    # could change (-0 + 0 = +0), so inputs without exact zeros come back bit for bit.
    x = _randn(shape).to(dtype)
    y = perturb(x, ASVPConfig(h=1.0, k=2 if solver == "lowrank" else 0, solver=solver))
    assert y.dtype == dtype and y.shape == x.shape
    assert torch.equal(y.view(torch.uint8), x.view(torch.uint8))


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("shape", SHAPES)
def test_top_k_scaled_by_h_rest_unchanged(solver: str, shape: tuple[int, ...]) -> None:
    x, h, k = _decaying(shape, 1), 3.0, 2
    before, after = _svdvals(x), _svdvals(perturb(x, ASVPConfig(h=h, k=k, solver=solver)))
    tol = 1e-4 if solver != "lowrank" else 1e-3      # randomised subspace: approximate
    torch.testing.assert_close(after[:, :k], h * before[:, :k], rtol=tol, atol=tol * before.max().item())
    torch.testing.assert_close(after[:, k:], before[:, k:], rtol=tol, atol=tol * before.max().item())


def test_spatial_view_scales_each_channel_slice() -> None:
    x, h = _randn((2, 3, 6, 9), 2), 2.5
    before, after = _svdvals(x, "spatial"), _svdvals(perturb(x, ASVPConfig(h=h, k=1, view="spatial")), "spatial")
    torch.testing.assert_close(after[:, 0], h * before[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after[:, 1:], before[:, 1:], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="spatial view"):
        perturb(_randn((2, 5, 4)), ASVPConfig(view="spatial"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_shape_and_dtype_preserved(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    x = _randn(shape).to(dtype)
    y = perturb(x, ASVPConfig(h=2.0))
    assert y.shape == x.shape and y.dtype == dtype and not torch.equal(y, x)
    with pytest.raises(ValueError, match="expects"):
        perturb(_randn((4, 5)), ASVPConfig())


def test_gradient_is_the_fixed_subspace_map() -> None:
    # d/dx of x + (h-1) P x with P = U_k U_k^T held fixed: g + (h-1) P g (P symmetric).
    x, h = _randn((2, 6, 20), 3).requires_grad_(), 4.0
    g = _randn((2, 6, 20), 4)
    perturb(x, ASVPConfig(h=h, k=1)).backward(g)
    spec = spectrum(x.detach(), ASVPConfig(k=1))
    u = spec.basis[..., :1]
    torch.testing.assert_close(x.grad, g + (h - 1) * u @ (u.mT @ g), rtol=1e-5, atol=1e-5)


def test_gradients_finite_for_repeated_singular_values() -> None:
    # dead channels (all zero) give repeated zero singular values, where the SVD's own derivative is undefined
    x = _randn((2, 8, 4, 4), 5)
    x[:, 3:] = 0
    x.requires_grad_()
    perturb(x, ASVPConfig(h=3.0)).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_adaptive_rank_rule() -> None:
    dominated = torch.tensor([10.0, 1.0, 1.0, 1.0])                   # 100 / 103 of the energy in sigma_1
    flat = torch.ones(4)                                              # 25 % each
    sigma = torch.stack([dominated, flat])
    total = sigma.square().sum(-1)
    assert adaptive_rank(sigma, total, 0.9, 0).tolist() == [1, 4]     # flat needs ceil(0.9 * 4) = 4
    assert adaptive_rank(sigma, total, 0.5, 0).tolist() == [1, 2]
    assert adaptive_rank(sigma, total, 0.9, 3).tolist() == [1, 3]     # max_k caps
    assert adaptive_rank(sigma, total, 1.0, 0).tolist() == [4, 4]
    # end to end: per-sample k inside one batch; the chosen k singular values are amplified
    u, _ = torch.linalg.qr(_randn((2, 6, 6), 6))
    v, _ = torch.linalg.qr(_randn((2, 9, 6), 7))
    spectra = torch.tensor([[10.0, 1, 1, 1, 1, 1], [3, 3, 3, 1, 0.5, 0.1]])
    x = u @ torch.diag_embed(spectra) @ v.mT
    cfg = ASVPConfig(h=2.0, k=0, energy=0.9)
    assert spectrum(x, cfg).rank.tolist() == [1, 3]
    after = _svdvals(perturb(x, cfg))
    expected = spectra.double().clone()
    expected[0, :1] *= 2
    expected[1, :3] *= 2
    torch.testing.assert_close(after, expected.sort(-1, descending=True).values, rtol=1e-4, atol=1e-4)


def test_config_checks() -> None:
    for bad in (dict(h=0.0), dict(k=-1), dict(energy=0.0), dict(energy=1.5), dict(solver="lowrank")):
        with pytest.raises(ValueError):
            ASVPConfig(**bad)


def test_lowrank_is_deterministic_and_leaves_the_rng_alone() -> None:
    x = _randn((2, 30, 40), 8)
    cfg = ASVPConfig(h=2.0, k=2, solver="lowrank")
    torch.manual_seed(123)
    first = perturb(x, cfg)
    after = torch.rand(3)
    torch.manual_seed(123)
    torch.testing.assert_close(perturb(x, cfg), first, rtol=0, atol=0)
    torch.testing.assert_close(torch.rand(3), after, rtol=0, atol=0)


class _Tiny(nn.Module):
    """conv -> GELU -> conv: enough to tell placements apart."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU())
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_exposed_placement_leaves_the_output_unchanged() -> None:
    teacher, x = _Tiny(), _randn((2, 3, 12, 10), 9)
    clean = teacher(x)
    cfg = ASVPConfig(layers=["body"], placement="exposed", h=3.0)
    defended = ASVPDefense(teacher, cfg)
    assert torch.equal(defended(x), clean)
    out = defended.forward_exposed(x)
    assert torch.equal(out.output, clean)
    torch.testing.assert_close(out.features["body"], perturb(teacher.body(x), cfg), rtol=0, atol=0)
    assert not teacher.body._forward_hooks                       # hooks only live during a call


def test_inline_placement_propagates_and_carries_gradients() -> None:
    teacher, x = _Tiny(), _randn((2, 3, 12, 10), 9)
    cfg = ASVPConfig(layers=["body"], placement="inline", h=3.0)
    out = ASVPDefense(teacher, cfg).forward_exposed(x)
    expected = teacher.head(perturb(teacher.body(x), cfg))
    torch.testing.assert_close(out.output, expected, rtol=1e-6, atol=1e-6)
    out.output.sum().backward()                                  # gradients reach the teacher's first layer
    assert teacher.body[0].weight.grad is not None and torch.isfinite(teacher.body[0].weight.grad).all()
    identity = ASVPDefense(teacher, dataclasses.replace(cfg, h=1.0))
    assert torch.equal(identity(x), teacher(x))


def test_wrapper_errors() -> None:
    with pytest.raises(KeyError, match="did you mean"):
        ASVPDefense(_Tiny(), ASVPConfig(layers=["bodi"]))

    class TwoOutputs(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    wrapper = nn.Sequential(TwoOutputs())
    with pytest.raises(TypeError, match="not a tensor"):
        ASVPDefense(wrapper, ASVPConfig(layers=["0"])).forward_exposed(torch.ones(1, 2, 3))


def test_vit_encoder_token_layer() -> None:
    from collab_distill.models import ImageEncoder, ImageEncoderConfig

    torch.manual_seed(0)
    encoder = ImageEncoder(ImageEncoderConfig(name="vit_pico_patch14_cpu", weights="random"), (28, 42)).eval()
    images = torch.rand(2, 3, 28, 42, generator=torch.Generator().manual_seed(1))
    clean = encoder(images)
    cfg = ASVPConfig(layers=["vit.blocks.1"], placement="exposed", h=2.0)
    exposed = ASVPDefense(encoder, cfg).forward_exposed(images)
    assert torch.equal(exposed.output.patch[0], clean.patch[0]) and torch.equal(exposed.output.cls, clean.cls)
    assert exposed.features["vit.blocks.1"].shape == (2, 1 + 2 * 3, 64)
    inline = ASVPDefense(encoder, dataclasses.replace(cfg, placement="inline"))(images)
    assert inline.patch[0].shape == clean.patch[0].shape and not torch.allclose(inline.patch[0], clean.patch[0])


def test_ssim_and_psnr_match_kornia() -> None:
    a = torch.rand(2, 3, 24, 30, generator=torch.Generator().manual_seed(2))
    b = (a + 0.1 * _randn(a.shape, 3)).clamp(0, 1)
    reference = kornia.metrics.ssim(a, b, 11, padding="valid").flatten(1).mean(1)
    torch.testing.assert_close(ssim(a, b), reference, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ssim(a, a), torch.ones(2))
    mse = (a - b).square().flatten(1).mean(1)
    torch.testing.assert_close(psnr(a, b), -10 * torch.log10(mse))


def test_unet_crops_and_one_lockstep_step() -> None:
    torch.manual_seed(0)
    teacher = UNet((8, 12, 16)).requires_grad_(False)
    assert teacher(torch.rand(2, 3, 30, 37)).shape == (2, 3, 30, 37)   # padded to a multiple of 4 and cropped
    clean = torch.rand(3, 3, 20, 24)
    pairs = PairedImages(clean * 0.5, clean)
    crops = random_crops(pairs, 16, 4, torch.Generator().manual_seed(0))
    torch.testing.assert_close(crops.degraded, crops.clean * 0.5)       # the same crop and flip on both sides
    layers = ["mid", "dec1"]
    cfg = ASVPConfig(layers=layers, h=2.0)
    sources = {"undefended": plain_source(teacher, layers),
               "exposed": ASVPDefense(teacher, cfg).forward_exposed}
    with torch.no_grad():
        a, b = sources["undefended"](crops.degraded), sources["exposed"](crops.degraded)
    assert torch.equal(a.output, b.output) and not torch.allclose(a.features["mid"], b.features["mid"])
    attackers = {name: Attacker(UNet((4, 6, 8)), layers, [8, 6], [16, 12]) for name in sources}
    losses = distill_lockstep(attackers, sources, pairs, TrainSettings(steps=2, batch=2, crop=16), 1.0, True, 0)
    assert set(losses) == set(sources) and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    with record_outputs(teacher, ["mid"]) as feats:
        teacher(crops.degraded)
    assert feats["mid"].shape == (4, 16, 4, 4)


# ---------------------------------------------------------------------------------------------
# The study: the encoder part end to end, and what a study folder keeps, resumes and refuses
# ---------------------------------------------------------------------------------------------
STUDY_YAML = "configs/asvp/study.yaml"
WORLD = SyntheticWorldBuilder()   # what tools/asvp_study.py passes in
#: the encoder part at a tiny size: pico teacher and student at 56x112, a few steps (seconds on a CPU)
TINY_ENCODER = ["parts=[encoder]", "encoder.image_size=[56,112]", "encoder.teacher=vit_pico_patch14_cpu",
                "encoder.student=vit_pico_patch14_cpu", "encoder.asvp.layers=[vit.blocks.2]",
                "encoder.distill_steps=4", "encoder.distill_batch=4", "encoder.probe_iterations=10"]


def test_encoder_study_end_to_end_at_a_tiny_size(synthetic_infos, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(study, "prepare_data", lambda cfg, world: (synthetic_infos, 0.0))   # the session's tiny set
    cfg = load_study_config(STUDY_YAML, [f"experiment.output_dir={tmp_path}", *TINY_ENCODER])
    result = run_study(cfg, ["test"], WORLD)
    saved = json.loads((tmp_path / "asvp_study.json").read_text())
    assert saved["pending"] == [] and saved["encoder"] == json.loads(json.dumps(result["encoder"]))
    encoder = saved["encoder"]
    assert encoder["train_images"] == 12 and encoder["test_images"] == 12      # 2 keyframes x 6 cameras each
    rows = encoder["rows"]
    assert set(rows) == {f"{who}_{source}" for who in ("teacher", "student")
                         for source in ("undefended", "inline", "exposed")}
    for row in rows.values():
        assert 0 <= row["miou"]["all"] <= 1
        assert all(math.isfinite(v) for v in row["miou"].values() if v is not None)
    for name in ("undefended", "inline", "exposed"):
        assert math.isfinite(rows[f"student_{name}"]["distill_loss"]) and rows[f"student_{name}"]["distill_loss"] > 0
    # exposed: the teacher's own features are untouched (same probe score, cosine 1); inline changes them
    assert rows["teacher_exposed"]["miou"] == rows["teacher_undefended"]["miou"]
    assert rows["teacher_exposed"]["patch_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert rows["teacher_inline"]["patch_cosine"] < 0.9999
    # the defended block is the one the attacker matches: both placements hand out the same tokens
    assert rows["student_inline"] == rows["student_exposed"]
    assert rows["student_inline"]["distill_loss"] != rows["student_undefended"]["distill_loss"]
    markdown = (tmp_path / "asvp_study.md").read_text()
    assert "## Encoder" in markdown and "| teacher inline |" in markdown and "| student undefended |" in markdown


def _fake_parts(monkeypatch, info_dir: Path, fail: set[str]) -> list[str]:
    """Instant stand-ins for both parts (a part in ``fail`` raises); returns the list of parts called."""
    calls: list[str] = []

    def part(name: str):
        def run(_cfg, _info_dir, _seed):
            calls.append(name)
            if name in fail:
                raise RuntimeError(f"{name} broke")
            return {"value": len(calls)}
        return run

    monkeypatch.setattr(study, "prepare_data", lambda cfg, world: (info_dir, 0.0))
    monkeypatch.setattr(study, "run_restoration_study", part("restoration"))
    monkeypatch.setattr(study, "run_encoder_study", part("encoder"))
    monkeypatch.setattr(study, "restoration_markdown", lambda record: "RESTORATION TABLE")
    monkeypatch.setattr(study, "encoder_markdown", lambda record: "ENCODER TABLE")
    return calls


def test_a_failed_part_keeps_the_finished_one_and_a_rerun_resumes(tmp_path, monkeypatch) -> None:
    fail = {"encoder"}
    calls = _fake_parts(monkeypatch, tmp_path, fail)
    out = tmp_path / "study"
    cfg = load_study_config(STUDY_YAML, [f"experiment.output_dir={out}"])
    with pytest.raises(RuntimeError, match="encoder broke"):
        run_study(cfg, ["first"], WORLD)
    saved = json.loads((out / "asvp_study.json").read_text())
    assert saved["restoration"] == {"value": 1} and "encoder" not in saved and saved["pending"] == ["encoder"]
    assert "RESTORATION TABLE" in (out / "asvp_study.md").read_text()

    fail.clear()
    run_study(cfg, ["second"], WORLD)
    assert calls == ["restoration", "encoder", "encoder"]            # the finished part was not run again
    saved = json.loads((out / "asvp_study.json").read_text())
    assert saved["restoration"] == {"value": 1} and saved["encoder"] == {"value": 3} and saved["pending"] == []
    assert saved["command"] == ["second"] and list(saved["earlier"]) == ["restoration"]
    markdown = (out / "asvp_study.md").read_text()
    assert "ENCODER TABLE" in markdown and "The restoration part" in markdown and "earlier run" in markdown
    assert not list(out.glob(".*"))                                  # no temporary file left behind

    with pytest.raises(StudyError, match="finished .*--overwrite"):
        run_study(cfg, ["third"], WORLD)
    other = load_study_config(STUDY_YAML, [f"experiment.output_dir={out}", "restoration.asvp.h=4"])
    with pytest.raises(StudyError, match=r"restoration part ran with other settings \(restoration\.asvp\.h: 2\.0 -> 4\.0"):
        run_study(other, ["fourth"], WORLD)
    assert len(calls) == 3                                           # refused before any work
    run_study(other, ["fifth"], WORLD, overwrite=True)
    saved = json.loads((out / "asvp_study.json").read_text())
    assert calls[3:] == ["restoration", "encoder"] and saved["earlier"] == {}
    assert saved["config"]["restoration"]["asvp"]["h"] == 4.0


def test_a_part_run_alone_is_kept_when_the_other_is_added(tmp_path, monkeypatch) -> None:
    calls = _fake_parts(monkeypatch, tmp_path, set())
    out = tmp_path / "study"
    run_study(load_study_config(STUDY_YAML, [f"experiment.output_dir={out}", "parts=[encoder]"]), ["enc"], WORLD)
    run_study(load_study_config(STUDY_YAML, [f"experiment.output_dir={out}", "parts=[restoration]"]), ["res"], WORLD)
    saved = json.loads((out / "asvp_study.json").read_text())
    assert calls == ["encoder", "restoration"] and saved["encoder"] == {"value": 1}
    assert saved["restoration"] == {"value": 2}


def test_a_part_run_on_another_world_is_not_kept(tmp_path, monkeypatch) -> None:
    calls = _fake_parts(monkeypatch, tmp_path, set())
    out = tmp_path / "study"
    run_study(load_study_config(STUDY_YAML, [f"experiment.output_dir={out}", "parts=[encoder]"]), ["enc"], WORLD)
    saved = json.loads((out / "asvp_study.json").read_text())
    assert saved["world"] == WORLD.settings("configs/synthetic/asvp.yaml")     # the resolved settings, recorded
    world = tmp_path / "bigger.yaml"
    world.write_text("base: configs/synthetic/asvp.yaml\nscenes: 12\n")
    bigger = load_study_config(STUDY_YAML, [f"experiment.output_dir={out}", f"world={world}"])
    with pytest.raises(StudyError, match=r"encoder part ran with other settings \(world\.scenes: 9 -> 12\)"):
        run_study(bigger, ["res"], WORLD)
    assert calls == ["encoder"]


def test_generated_data_with_other_settings_is_refused(tmp_path) -> None:
    from data_prep.synthetic.config import MARKER

    cfg = load_study_config(STUDY_YAML, [f"experiment.output_dir={tmp_path}"])
    (tmp_path / "data").mkdir()
    recorded = {**WORLD.settings(cfg.world), "scenes": 3}
    (tmp_path / "data" / MARKER).write_text(json.dumps(recorded))  # JSON is YAML
    assert WORLD.recorded_settings(tmp_path / "data") == recorded
    with pytest.raises(StudyError, match=r"data settings \(scenes: 3 -> 9\)"):
        prepare_data(cfg, WORLD)


def test_the_tool_refuses_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    _fake_parts(monkeypatch, tmp_path, set())
    out = tmp_path / "study"
    run_study(load_study_config(STUDY_YAML, [f"experiment.output_dir={out}"]), ["first"], WORLD)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")     # the tool's thread defaults: already set in-process
    main = runpy.run_path(str(Path(__file__).resolve().parents[1] / "tools" / "asvp_study.py"))["main"]
    for argv, expected in ((["--config", STUDY_YAML, f"experiment.output_dir={out}"],
                            "error: .* this study is finished"),
                           (["--config", STUDY_YAML, "encoder.asvp.layers=[vit.blocks.4,vit.blocks.5]"],
                            "error: .*encoder.asvp.layers: the encoder study defends one block"),
                           (["--config", STUDY_YAML, "restoration.asvp.h=0"], "error: .*h must be > 0")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert exit_info.value.code == 2 and len(err) == 1, err
        assert re.match(expected, err[0]), err[0]
