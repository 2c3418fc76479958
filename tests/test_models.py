"""Image encoder (timm ViT), weight files, the frozen guard, feature sampling and projection heads."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from collab_distill.models import (
    FrozenModuleError,
    HeadConfig,
    ImageEncoder,
    ImageEncoderConfig,
    ProjectionHead,
    WeightsError,
    sample_features,
    save_vit_weights,
)

PICO = "vit_pico_patch14_cpu"
SIZE = (56, 84)                       # 4 x 6 patches
REG4 = {"reg_tokens": 4, "no_embed_class": True}


def make_encoder(weights: str = "random", size: tuple[int, int] = SIZE, **kwargs) -> ImageEncoder:
    return ImageEncoder(ImageEncoderConfig(name=PICO, weights=weights, **kwargs), size)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(0))


def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter O(1) random values, so that LayerScale does not hide the blocks."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


# ----------------------------------------------------------------------------- shapes and features
def test_shapes_at_default_image_size():
    enc = make_encoder(size=(224, 448), blocks=[0, -1])
    out = enc(torch.rand(1, 3, 224, 448), attn_blocks=[-1])
    assert enc.grid_size == (16, 32) and enc.patch_size == 14
    assert out.cls.shape == (1, 64)
    assert [tuple(p.shape) for p in out.patch] == [(1, 64, 16, 32)] * 2
    assert [tuple(a.shape) for a in out.attn] == [(1, 2, 1 + 16 * 32, 1 + 16 * 32)]


def test_patch_maps_are_the_normed_tokens_in_row_major_order(images):
    enc = make_encoder().eval()
    out = enc(images, blocks=[-1])
    x = (images - enc.mean) / enc.std
    tokens = enc.vit.forward_features(x)                                   # (B, 1 + h*w, D), final norm
    h, w = enc.grid_size
    torch.testing.assert_close(out.patch[0], tokens[:, 1:].reshape(2, h, w, -1).permute(0, 3, 1, 2))
    torch.testing.assert_close(out.cls, tokens[:, 0])
    prenorm = make_encoder(norm=False).eval()
    prenorm.load_state_dict(enc.state_dict())
    assert not torch.allclose(prenorm(images).patch[0], out.patch[0])


def test_maps_come_in_request_order(images):
    enc = make_encoder(blocks=[2, 0, 2]).eval()
    out = enc(images)
    assert torch.equal(out.patch[0], enc(images, blocks=[-1]).patch[0])
    assert torch.equal(out.patch[1], enc(images, blocks=[0]).patch[0])
    assert torch.equal(out.patch[2], out.patch[0]) and not torch.equal(out.patch[1], out.patch[0])
    cls_only = enc(images, blocks=[])
    assert cls_only.patch == [] and torch.equal(cls_only.cls, out.cls)


@pytest.mark.parametrize("name", ["vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2"])
def test_first_class_models_build_at_any_multiple_of_the_patch(name):
    enc = ImageEncoder(ImageEncoderConfig(name=name, weights="random"), (224, 448))
    assert enc.grid_size == (16, 32)
    assert enc.num_prefix_tokens == (5 if "reg4" in name else 1)
    assert enc.embed_dim == 384 and enc.num_heads == 6 and enc.depth == 12


def test_image_size_must_be_a_multiple_of_the_patch():
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        make_encoder(size=(56, 80))


# ----------------------------------------------------------------------------- gradients and the guard
def test_gradients_reach_every_parameter_of_the_student(images):
    enc = make_encoder(blocks=[1, -1]).train()
    out = enc(images, attn_blocks=[0])
    loss = out.cls.pow(2).sum() + sum(p.pow(2).sum() for p in out.patch) + out.attn[0].pow(2).sum()
    loss.backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_frozen_guard(images):
    enc = make_encoder().freeze()
    assert enc.frozen and not enc.training and not any(m.training for m in enc.modules())
    assert not any(p.requires_grad for p in enc.parameters())
    with pytest.raises(FrozenModuleError, match="frozen"):
        enc.train()
    with pytest.raises(FrozenModuleError):
        torch.nn.Sequential(enc).train()                                    # a parent cannot sneak it in
    with pytest.raises(FrozenModuleError):
        enc.requires_grad_(True)
    enc.eval()
    enc.train(False)
    assert not enc.training and not enc.vit.training
    out = enc(images, attn_blocks=[-1])
    assert not out.cls.requires_grad and not out.patch[0].requires_grad and not out.attn[0].requires_grad


# ----------------------------------------------------------------------------- attention maps
def test_attention_maps_match_a_manual_softmax(images):
    enc = make_encoder().eval()
    randomize(enc.vit)
    block = enc.vit.blocks[1]
    seen = {}
    handle = block.norm1.register_forward_hook(lambda _m, _i, out: seen.__setitem__("x", out))
    out = enc(images, attn_blocks=[1, -1])
    handle.remove()

    attn = out.attn[0]
    torch.testing.assert_close(attn.sum(-1), torch.ones_like(attn[..., 0]))
    x = seen["x"]                                                          # (B, T, D) input of the attention
    heads, head_dim = enc.num_heads, enc.embed_dim // enc.num_heads
    qkv = F.linear(x, block.attn.qkv.weight, block.attn.qkv.bias).reshape(2, x.shape[1], 3, heads, head_dim)
    q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)      # (B, heads, T, head_dim)
    manual = torch.softmax(q @ k.transpose(-1, -2) * head_dim ** -0.5, dim=-1)
    torch.testing.assert_close(attn, manual)
    assert attn.std() > 1e-3                                               # not a uniform map
    assert out.attn[1].shape == (2, heads, 25, 25)


def test_attention_is_only_computed_when_asked(images):
    enc = make_encoder().eval()
    randomize(enc.vit)
    fused = [b.attn.fused_attn for b in enc.vit.blocks]
    plain = enc(images)
    with_attn = enc(images, attn_blocks=[0, 2])
    assert plain.attn == []
    assert [b.attn.fused_attn for b in enc.vit.blocks] == fused             # restored after the call
    assert not any(b.attn.attn_drop._forward_hooks for b in enc.vit.blocks)
    torch.testing.assert_close(with_attn.patch[0], plain.patch[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(IndexError):
        enc(images, attn_blocks=[3])


# ----------------------------------------------------------------------------- gradient checkpointing
def test_grad_checkpointing_follows_the_training_mode():
    assert not make_encoder().vit.grad_checkpointing                      # off by default
    enc = make_encoder(grad_checkpointing=True)
    assert enc.vit.grad_checkpointing                                      # built in training mode
    enc.eval()
    assert not enc.vit.grad_checkpointing
    torch.nn.Sequential(enc).train()                                       # a parent's train() reaches it
    assert enc.vit.grad_checkpointing
    assert not enc.freeze().vit.grad_checkpointing                         # a frozen teacher never recomputes


def test_grad_checkpointing_recomputes_the_blocks_with_the_same_loss_and_gradients(images):
    """The image-only baselines' loss (CLS, patch tokens, last block's attention), two steps each."""
    plain, ckpt = make_encoder(), make_encoder(grad_checkpointing=True)
    randomize(plain.vit)
    ckpt.load_state_dict(plain.state_dict())
    calls = {"plain": 0, "ckpt": 0}
    for key, enc in (("plain", plain), ("ckpt", ckpt)):
        enc.vit.blocks[0].register_forward_pre_hook(lambda *_a, k=key: calls.__setitem__(k, calls[k] + 1))
    for step in range(2):
        results = []
        for enc in (plain, ckpt):
            enc.zero_grad()
            out = enc(images + 0.1 * step, attn_blocks=[-1])
            loss = out.cls.square().mean() + out.patch[0].square().mean() + out.attn[0].square().sum()
            loss.backward()
            results.append((loss.detach(), [p.grad for p in enc.parameters()]))
        (loss_p, grads_p), (loss_c, grads_c) = results
        torch.testing.assert_close(loss_c, loss_p, rtol=1e-5, atol=1e-6)
        for gp, gc in zip(grads_p, grads_c, strict=True):
            torch.testing.assert_close(gc, gp, rtol=1e-4, atol=1e-6)
    assert calls == {"plain": 2, "ckpt": 4}                                # recomputed in every backward pass

# ----------------------------------------------------------------------------- weight files
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_checkpoint_round_trip(tmp_path, images, suffix):
    src = make_encoder().eval()
    randomize(src.vit, seed=1)
    path = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        save_vit_weights(src.vit, path)
    else:
        torch.save({"model": src.vit.state_dict()}, path)
    loaded = make_encoder(weights=str(path)).eval()
    a, b = src(images, attn_blocks=[-1]), loaded(images, attn_blocks=[-1])
    assert torch.equal(a.cls, b.cls) and torch.equal(a.patch[0], b.patch[0]) and torch.equal(a.attn[0], b.attn[0])


def test_saved_non_square_grid_is_resampled_like_timm(tmp_path, images):
    src = make_encoder().eval()
    randomize(src.vit, seed=2)
    path = save_vit_weights(src.vit, tmp_path / "vit.safetensors")
    big = make_encoder(weights=str(path), size=(112, 84)).eval()           # grid 4x6 -> 8x6
    reference = timm.create_model(PICO, img_size=SIZE, dynamic_img_size=True, num_classes=0).eval()
    reference.load_state_dict(src.vit.state_dict())
    x = torch.rand(1, 3, 112, 84)
    expected = reference.forward_features((x - big.mean) / big.std)[:, 0]
    torch.testing.assert_close(big(x).cls, expected, atol=1e-5, rtol=1e-5)


def _dinov2_original(timm_state: dict[str, torch.Tensor], registers: bool) -> dict[str, torch.Tensor]:
    """The state dict the official dinov2 repo would hold for the same network (see timm's _convert_dinov2)."""
    state = dict(timm_state)
    dim = state["cls_token"].shape[-1]
    state["mask_token"] = torch.zeros(1, dim)
    if registers:
        cls_pos = torch.randn(1, 1, dim)
        state["register_tokens"] = state.pop("reg_token")
        state["cls_token"] = state["cls_token"] - cls_pos
        state["pos_embed"] = torch.cat([cls_pos, state["pos_embed"]], dim=1)
    return state


@pytest.mark.parametrize("registers", [False, True], ids=["dinov2", "dinov2_reg4"])
def test_original_dinov2_checkpoint_loads(tmp_path, images, registers):
    kwargs = REG4 if registers else {}
    reference = timm.create_model(PICO, img_size=518, dynamic_img_size=True, num_classes=0, **kwargs).eval()
    randomize(reference, seed=3)
    original = _dinov2_original(reference.state_dict(), registers)
    assert original["pos_embed"].shape[1] == 37 * 37 + 1 and "mask_token" in original
    path = tmp_path / "dinov2_vitp14_pretrain.pth"
    torch.save(original, path)

    enc = make_encoder(weights=str(path), model_kwargs=kwargs).eval()
    assert torch.equal(enc.vit.blocks[0].attn.qkv.weight, reference.blocks[0].attn.qkv.weight)
    tokens = reference.forward_features((images - enc.mean) / enc.std)     # pos_embed resampled on the fly
    out = enc(images)
    prefix = enc.num_prefix_tokens
    torch.testing.assert_close(out.cls, tokens[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.patch[0], tokens[:, prefix:].reshape(2, 4, 6, -1).permute(0, 3, 1, 2),
                               atol=1e-5, rtol=1e-5)


def test_missing_weight_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere" / "dinov2.safetensors"
    with pytest.raises(WeightsError, match=r"not found: .*nowhere.*'hub'.*'random'"):
        make_encoder(weights=str(missing))
    with pytest.raises(ValueError, match="'weights' is not set"):
        ImageEncoder(ImageEncoderConfig(name=PICO), SIZE)


def test_mismatched_keys_are_an_error_unless_allowed(tmp_path, images, caplog):
    src = make_encoder()
    state = src.vit.state_dict()
    state["extra.weight"] = torch.zeros(3)
    del state["norm.bias"]
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="1 missing keys: norm.bias; 1 unexpected keys: extra.weight"):
        make_encoder(weights=str(path))
    loaded = make_encoder(weights=str(path), strict=False)
    assert torch.equal(loaded.vit.blocks[0].mlp.fc1.weight, src.vit.blocks[0].mlp.fc1.weight)
    assert "strict is false" in caplog.text
    wrong = tmp_path / "wrong.pth"
    torch.save(timm.create_model("vit_tiny_patch14_cpu", img_size=SIZE, num_classes=0).state_dict(), wrong)
    with pytest.raises(WeightsError, match="shape mismatch"):
        make_encoder(weights=str(wrong))


# ----------------------------------------------------------------------------- sampling
def _centres(idx: torch.Tensor, p: int) -> torch.Tensor:
    return idx.double() * p + (p - 1) / 2


def test_sampling_at_patch_centres_returns_the_token_exactly():
    gen = torch.Generator().manual_seed(0)
    fmap = torch.randn(3, 8, 5, 7, generator=gen)
    b = torch.randint(0, 3, (200,), generator=gen)
    i = torch.randint(0, 5, (200,), generator=gen)
    j = torch.randint(0, 7, (200,), generator=gen)
    uv = torch.stack([_centres(j, 14), _centres(i, 14)], dim=1).float()
    assert torch.equal(sample_features(fmap, uv, b, 14), fmap[b, :, i, j])


def test_sampling_between_centres_is_the_average():
    fmap = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    p = 14
    c = (p - 1) / 2
    uv = torch.tensor([[c + p / 2, c],            # between (0,0) and (0,1)
                       [c, c + p / 2],            # between (0,0) and (1,0)
                       [c + p / 2, c + p / 2]])   # middle of (0,0), (0,1), (1,0), (1,1)
    out = sample_features(fmap, uv, torch.zeros(3, dtype=torch.long), p)
    t = fmap[0]
    torch.testing.assert_close(out[0], (t[:, 0, 0] + t[:, 0, 1]) / 2)
    torch.testing.assert_close(out[1], (t[:, 0, 0] + t[:, 1, 0]) / 2)
    torch.testing.assert_close(out[2], (t[:, 0, 0] + t[:, 0, 1] + t[:, 1, 0] + t[:, 1, 1]) / 4)


def test_sampling_equals_grid_sample_and_is_differentiable():
    gen = torch.Generator().manual_seed(2)
    p, h, w = 14, 4, 6
    fmap = torch.randn(2, 5, h, w, generator=gen, requires_grad=True)
    uv = torch.rand(300, 2, generator=gen) * torch.tensor([w * p, h * p]) - 0.5   # whole image, borders too
    b = torch.randint(0, 2, (300,), generator=gen)
    out = sample_features(fmap, uv, b, p)
    grid = torch.stack([(2 * uv[:, 0] + 1) / (w * p) - 1, (2 * uv[:, 1] + 1) / (h * p) - 1], dim=1)
    for img in range(2):
        ref = F.grid_sample(fmap[img:img + 1], grid[b == img][None, None], mode="bilinear",
                            padding_mode="border", align_corners=False)[0, :, 0].T
        torch.testing.assert_close(out[b == img], ref, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert fmap.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- heads
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_projection_head(kind):
    head = ProjectionHead(HeadConfig(kind=kind, hidden_dim=16), in_dim=8, out_dim=12)
    y = head(torch.randn(5, 8))
    assert y.shape == (5, 12)
    y.pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert head(torch.randn(2, 3, 8)).shape == (2, 3, 12)
