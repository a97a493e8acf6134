"""pbrfit.losses: zero on identical images, masks, scale-freeness, SSIM against a numpy oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from pbrfit.color import delta_e2000_linear
from pbrfit.losses import LOSSES, PIXEL_LOSSES, de2000_map, image_metrics, l1, l2, loss_map, ssim, ssim_map

NAMES = ["l1", "l2", "charbonnier", "huber", "de2000", "ssim"]


def _images(h=24, w=20, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(h, w, 3, generator=g, dtype=dtype) * 2.0
    pred = (ref + 0.2 * torch.randn(h, w, 3, generator=g, dtype=dtype)).abs()
    return pred, ref


def _ssim_oracle(x, y, size=11, sigma=1.5, c1=1e-4, c2=9e-4):
    """SSIM map written out directly: reflect-padded windows, 2-D Gaussian weights."""
    r = size // 2
    t = np.arange(size) - r
    g = np.exp(-t**2 / (2 * sigma**2))
    win = np.outer(g, g) / np.outer(g, g).sum()
    maps = []
    for c in range(3):
        xp = np.pad(x[..., c], r, mode="reflect")
        yp = np.pad(y[..., c], r, mode="reflect")
        wx = sliding_window_view(xp, (size, size))  # (H, W, size, size)
        wy = sliding_window_view(yp, (size, size))
        mx = (wx * win).sum((-1, -2))
        my = (wy * win).sum((-1, -2))
        vx = (wx**2 * win).sum((-1, -2)) - mx**2
        vy = (wy**2 * win).sum((-1, -2)) - my**2
        cxy = (wx * wy * win).sum((-1, -2)) - mx * my
        maps.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return np.mean(maps, axis=0)


@pytest.mark.parametrize("name", NAMES)
def test_zero_for_identical_positive_otherwise(name):
    pred, ref = _images()
    f = LOSSES[name]
    assert float(f(ref, ref.clone(), None)) == pytest.approx(0.0, abs=1e-12)
    assert float(f(pred, ref, None)) > 1e-4
    if name != "ssim":  # pixel lists
        assert float(f(pred.reshape(-1, 3), ref.reshape(-1, 3), None)) == pytest.approx(
            float(f(pred, ref, None)), rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_mask_excludes_pixels(name):
    pred, ref = _images()
    mask = torch.zeros(pred.shape[:2], dtype=torch.float64)
    mask[4:18, 3:15] = 1.0
    f = LOSSES[name]
    base = float(f(pred, ref, mask))
    wild = pred.clone()
    wild[mask == 0] = 50.0  # anything outside the mask
    if name == "ssim":
        # windows straddle the mask edge: only pixels at least a window radius inside are safe
        far = torch.zeros_like(mask)
        far[4 + 5:18 - 5, 3 + 5:15 - 5] = 1.0
        assert float(f(wild, ref, far)) == pytest.approx(float(f(pred, ref, far)), abs=1e-12)
        assert float(f(wild, ref, mask)) != pytest.approx(base, abs=1e-6)
    else:
        assert float(f(wild, ref, mask)) == pytest.approx(base, rel=1e-12)
        sel = mask > 0
        assert base == pytest.approx(float(f(pred[sel], ref[sel], None)), rel=1e-12)
    # an empty mask counts nothing
    assert float(f(pred, ref, torch.zeros_like(mask))) == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_scale_free_with_white(name):
    pred, ref = _images()
    f = LOSSES[name]
    a = float(f(pred, ref, None, white=1.3))
    b = float(f(pred * 7.0, ref * 7.0, None, white=1.3 * 7.0))
    assert a == pytest.approx(b, rel=1e-9)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_flow(name, dtype):
    pred, ref = _images(dtype=dtype)
    pred = pred.clone().requires_grad_(True)
    mask = torch.ones(pred.shape[:2], dtype=dtype)
    mask[:, :5] = 0.0
    loss = LOSSES[name](pred, ref, mask)
    assert loss.dtype == dtype and loss.ndim == 0
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert float(pred.grad.abs().sum()) > 0
    if name != "ssim":
        assert float(pred.grad[:, :5].abs().max()) == 0.0


def test_plain_losses_values():
    pred, ref = _images()
    p, r = pred.numpy() / 2.0, ref.numpy() / 2.0
    assert float(l1(pred, ref, white=2.0)) == pytest.approx(np.abs(p - r).mean(), rel=1e-12)
    assert float(l2(pred, ref, white=2.0)) == pytest.approx(((p - r) ** 2).mean(), rel=1e-12)
    d = torch.tensor([[0.0, 0.5, -2.0]], dtype=torch.float64)
    z = torch.zeros_like(d)
    expect_h = (0.0 + 0.1 * (0.5 - 0.05) + 0.1 * (2.0 - 0.05)) / 3
    assert float(LOSSES["huber"](d, z, None, delta=0.1)) == pytest.approx(expect_h, rel=1e-12)
    expect_c = sum(math.sqrt(v * v + 1e-6) - 1e-3 for v in (0.0, 0.5, 2.0)) / 3
    assert float(LOSSES["charbonnier"](d, z, None, eps=1e-3)) == pytest.approx(expect_c, rel=1e-12)
    w = torch.rand(pred.shape[:2], dtype=torch.float64)
    per = np.abs(p - r).mean(-1)
    assert float(l1(pred, ref, w, white=2.0)) == pytest.approx((per * w.numpy()).sum() / w.sum().item())


def test_ssim_matches_numpy_oracle():
    pred, ref = _images(h=23, w=19, seed=3)
    got = ssim_map(pred, ref, white=2.0).numpy()
    want = _ssim_oracle(pred.numpy() / 2.0, ref.numpy() / 2.0)
    np.testing.assert_allclose(got, want, atol=1e-10)
    mask = torch.rand(23, 19, dtype=torch.float64)
    expect = (want * mask.numpy()).sum() / mask.sum().item()
    assert float(ssim(pred, ref, mask, white=2.0)) == pytest.approx(expect, abs=1e-10)
    # float32 agrees to float precision
    got32 = ssim_map(pred.float(), ref.float(), white=2.0).double().numpy()
    np.testing.assert_allclose(got32, want, atol=1e-4)


def test_ssim_tiny_images_shrink_the_window():
    pred, ref = _images(h=6, w=9, seed=4)
    got = ssim_map(pred, ref).numpy()
    assert got.shape == (6, 9)
    np.testing.assert_allclose(got, _ssim_oracle(pred.numpy(), ref.numpy(), size=5), atol=1e-10)
    one = ssim_map(pred[:1, :1], ref[:1, :1]).numpy()  # 1x1: window of one pixel
    np.testing.assert_allclose(one, _ssim_oracle(pred[:1, :1].numpy(), ref[:1, :1].numpy(), size=1),
                               atol=1e-12)
    with pytest.raises(ValueError):
        ssim(pred.reshape(-1, 3), ref.reshape(-1, 3))


def test_ssim_is_one_for_identical_and_decreases_with_noise():
    _, ref = _images(h=32, w=32, seed=5)
    g = torch.Generator().manual_seed(6)
    noise = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    assert float(ssim(ref, ref.clone())) == pytest.approx(1.0, abs=1e-12)
    values = [float(ssim(ref + s * noise, ref)) for s in (0.01, 0.05, 0.2, 0.5)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[0] < 1.0


def test_metrics():
    pred, ref = _images(seed=7, dtype=torch.float32)
    mask = torch.zeros(pred.shape[:2])
    mask[2:20, 2:18] = 1.0
    m = image_metrics(pred.numpy(), ref.numpy(), mask.numpy(), white=1.5)
    assert set(m) == {"de2000_mean", "de2000_p95", "ssim", "l1"}
    assert all(isinstance(v, float) for v in m.values())
    de = de2000_map(pred, ref, 1.5)
    assert de.shape == pred.shape[:2]
    torch.testing.assert_close(de, delta_e2000_linear(pred, ref, 1.5))
    sel = de[mask > 0.5].double().numpy()
    assert m["de2000_mean"] == pytest.approx(sel.mean(), rel=1e-5)
    assert m["de2000_p95"] == pytest.approx(np.percentile(sel, 95), rel=1e-6)
    assert m["de2000_mean"] < m["de2000_p95"]
    assert m["ssim"] == pytest.approx(float(ssim(pred, ref, mask, white=1.5)), rel=1e-6)
    assert m["l1"] == pytest.approx(float(l1(pred, ref, mask, white=1.5)), rel=1e-6)
    same = image_metrics(ref, ref, None, white=1.5)
    assert same["de2000_mean"] == 0.0 and same["de2000_p95"] == 0.0 and same["l1"] == 0.0
    assert same["ssim"] == pytest.approx(1.0, abs=1e-6)
    empty = image_metrics(pred, ref, torch.zeros_like(mask))
    assert all(math.isnan(v) for v in empty.values())


def test_bad_shapes_raise():
    pred, ref = _images()
    with pytest.raises(ValueError):
        l1(pred, ref[:-1])
    with pytest.raises(ValueError):
        l1(pred, ref, torch.ones(3, 3))
    assert float(l1(pred, ref, torch.ones(pred.shape[:2] + (1,), dtype=torch.float64))) == \
        pytest.approx(float(l1(pred, ref)))


@pytest.mark.parametrize("name", sorted(PIXEL_LOSSES))
def test_each_pixelwise_loss_is_the_weighted_mean_of_its_map(name):
    """What a per-texel search pools (``loss_map``) is what the fit minimizes, pixel lists
    and images alike, with a mask and a white."""
    pred, ref = _images()
    mask = torch.rand(pred.shape[:2], generator=torch.Generator().manual_seed(3), dtype=pred.dtype)
    per_pixel = loss_map(name, pred, ref, white=1.7)
    assert per_pixel.shape == pred.shape[:2]
    expected = (mask * per_pixel).sum() / mask.sum()
    assert torch.allclose(LOSSES[name](pred, ref, mask, white=1.7), expected, rtol=1e-12)
    flat = loss_map(name, pred.reshape(-1, 3), ref.reshape(-1, 3), white=1.7)
    assert torch.allclose(flat, per_pixel.reshape(-1), rtol=1e-12)


def test_loss_map_values_and_ssim_has_none():
    pred, ref = torch.tensor([[0.5, 0.2, 0.1]], dtype=torch.float64), torch.tensor([[0.3, 0.2, 0.4]],
                                                                                    dtype=torch.float64)
    d = pred - ref
    assert float(loss_map("relative_l2", pred, ref)[0]) == pytest.approx(
        float((d ** 2 / (ref ** 2 + 0.05 ** 2)).mean()))
    assert float(loss_map("l1", pred * 2, ref * 2, white=2.0)[0]) == pytest.approx(float(d.abs().mean()))
    assert float(loss_map("de2000", pred, ref)[0]) == pytest.approx(float(delta_e2000_linear(pred, ref)[0]))
    assert "ssim" not in PIXEL_LOSSES
    with pytest.raises(ValueError, match="ssim"):
        loss_map("ssim", pred, ref)
