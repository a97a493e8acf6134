"""The pixel filter's widening of the lobes at a first hit (pbrfit.pixel_filter).

Oracles: analytic normal fields (a sphere seen along its axis, a crease), the BSDF with the
equivalent roughness, and real Cycles: a sharp metal sphere under a checker environment, whose
best-matching roughness in the raster renderer is the true one only with the filter modelled.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pbrfit import pixel_filter
from pbrfit.bsdf import FOOTPRINT, pdf_coat, pdf_specular, principled_eval
from pbrfit.params import default_material

ROOT = Path(__file__).resolve().parents[1]


def _frames(normals: np.ndarray) -> np.ndarray:
    """(P, 3, 3) shading frames, rows tangent, bitangent, normal: the tangent the world x made
    perpendicular to the normal."""
    tangent = np.array([1.0, 0.0, 0.0]) - normals[:, :1] * normals
    tangent /= np.linalg.norm(tangent, axis=-1, keepdims=True)
    return np.stack([tangent, np.cross(normals, tangent), normals], 1)


def _sphere_normals(size: int, radius: float):
    """Orthographic view of a unit sphere of ``radius`` pixels centred in a size x size image."""
    c = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size]
    px, py = (x - c) / radius, (y - c) / radius
    r2 = px * px + py * py
    coverage = r2 < 1
    normals = np.stack([px, -py, np.sqrt(np.clip(1 - r2, 0, None))], -1)
    pixels = np.nonzero(coverage.reshape(-1))[0]
    return coverage, pixels, normals.reshape(-1, 3)[pixels]


def test_footprint_of_a_sphere_is_the_filter_variance_times_its_curvature():
    size, radius = 101, 40.0
    coverage, pixels, normals = _sphere_normals(size, radius)
    k = pixel_filter.footprint(coverage, pixels, _frames(normals))
    centre = np.nonzero(pixels == (size // 2) * size + size // 2)[0][0]
    # at the centre the normal turns 1/radius per pixel along both axes: K = 2 v / radius^2 I
    expected = 2 * pixel_filter.FILTER_VARIANCE / radius ** 2
    assert k[centre] == pytest.approx([expected, 0.0, expected], rel=0.01, abs=1e-9)
    # toward the silhouette the normal turns faster per pixel, along the radius only: on the
    # horizontal through the centre K grows along x (the tangent) and stays ~the centre's along y
    row = k[np.nonzero((pixels // size) == size // 2)[0]]
    mid = len(row) // 2
    assert row[mid, 0] < row[mid // 2, 0] < row[2, 0]
    assert row[2, 0] > 5 * row[2, 2] and row[2, 2] == pytest.approx(expected, rel=0.05)
    assert np.abs(row[:, 1]).max() < 1e-3 * row[:, 0].max()
    assert k[:, [0, 2]].max() <= pixel_filter.KERNEL_MAX + 1e-6


def test_footprint_of_a_cylinder_widens_across_its_axis_only():
    """A cylinder seen side on, axis along the image's y: the normal turns along x only, so the
    lobe widens along the tangent that crosses the axis, whichever way the frame is turned."""
    h, w, radius = 30, 61, 25.0
    xs = (np.arange(w) - (w - 1) / 2) / radius
    coverage = np.repeat((np.abs(xs) < 0.9)[None], h, 0)
    normals = np.zeros((h, w, 3))
    normals[..., 0], normals[..., 2] = xs, np.sqrt(np.clip(1 - xs * xs, 0, None))
    pixels = np.nonzero(coverage.reshape(-1))[0]
    n = normals.reshape(-1, 3)[pixels]
    frame = _frames(n)
    turn = np.deg2rad(30.0)  # tangents turned 30 degrees about the normal
    t, b = frame[:, 0], frame[:, 1]
    frame = np.stack([np.cos(turn) * t + np.sin(turn) * b, -np.sin(turn) * t + np.cos(turn) * b, n], 1)
    k = pixel_filter.footprint(coverage, pixels, frame)
    centre = np.nonzero(pixels == (h // 2) * w + w // 2)[0][0]
    m = np.array([[k[centre, 0], k[centre, 1]], [k[centre, 1], k[centre, 2]]])
    values, vectors = np.linalg.eigh(m)
    assert values[1] == pytest.approx(2 * pixel_filter.FILTER_VARIANCE / radius ** 2, rel=0.01)
    assert values[0] < 1e-6 * values[1]
    # the major axis is the frame's x turned back by 30 degrees: the direction across the axis
    assert abs(vectors[:, 1] @ [np.cos(turn), -np.sin(turn)]) == pytest.approx(1.0, abs=1e-6)


def test_footprint_is_zero_on_flat_faces_either_side_of_a_crease():
    h, w = 20, 20
    coverage = np.ones((h, w), bool)
    normals = np.zeros((h, w, 3))
    normals[:, :10] = [0.0, 0.0, 1.0]
    normals[:, 10:] = [np.sin(0.8), 0.0, np.cos(0.8)]  # a 46-degree crease between columns 9 and 10
    pixels = np.arange(h * w)
    k = pixel_filter.footprint(coverage, pixels, _frames(normals.reshape(-1, 3)))
    assert np.all(k == 0)


def _material(extra):
    return {k: torch.as_tensor(v, dtype=torch.float32) for k, v in (default_material() | extra).items()
            if not isinstance(v, str)}


def test_bsdf_footprint_widens_the_lobes_core_and_keeps_their_tails():
    wo = torch.nn.functional.normalize(torch.tensor([[0.3, -0.2, 0.9]]), dim=-1)
    mirror = wo * torch.tensor([-1.0, -1.0, 1.0])
    far = torch.nn.functional.normalize(torch.tensor([[0.5, 0.4, 0.6]]), dim=-1)  # ~45 degrees off the mirror
    kernel = torch.tensor([[2e-3, 0.0, 2e-3]])  # the same on both axes
    for extra in ({"roughness": 0.05}, {"roughness": 0.1, "metallic": 1.0},
                  {"roughness": 0.25, "metallic": 1.0, "anisotropic": 0.6, "anisotropic_rotation": 0.1},
                  {"roughness": 0.5, "coat_weight": 1.0, "coat_roughness": 0.04}):
        m = _material(extra)
        widened = dict(m)
        for name in ("roughness", "coat_roughness"):
            widened[name] = torch.sqrt(torch.sqrt(m[name] ** 4 + kernel[0, 0]))
        if "anisotropic" in extra:  # the widened material: both alphas gain the kernel
            aspect = np.sqrt(1 - 0.9 * extra["anisotropic"])
            ax2, ay2 = (extra["roughness"] ** 2 / aspect) ** 2 + 2e-3, (extra["roughness"] ** 2 * aspect) ** 2 + 2e-3
            widened["roughness"] = torch.tensor((ax2 * ay2) ** 0.125, dtype=torch.float32)
            widened["anisotropic"] = torch.tensor((1 - np.sqrt(ay2 / ax2)) / 0.9, dtype=torch.float32)
        filtered = dict(m, **{FOOTPRINT: kernel})
        # sampling is the widened lobe's; the value at the peak too (the core is widened) ...
        assert torch.allclose(pdf_specular(filtered, wo, far), pdf_specular(widened, wo, far), rtol=1e-3)
        assert torch.allclose(pdf_coat(filtered, wo, mirror), pdf_coat(widened, wo, mirror), rtol=1e-4)
        assert torch.allclose(principled_eval(filtered, wo, mirror), principled_eval(widened, wo, mirror), rtol=2e-3)
        # ... and it is sharper without the filter: the peak is higher
        assert (principled_eval(m, wo, mirror) > principled_eval(filtered, wo, mirror)).all()
        if extra.get("metallic"):  # no diffuse: the value is the lobe alone
            # far from the peak the widened GGX's tail is heavier than the lobe's own; the
            # filtered lobe keeps the lobe's own, but for the core's share there and the widened masking
            own, filt, wide = (principled_eval(x, wo, far) for x in (m, filtered, widened))
            assert torch.allclose(filt, own, rtol=0.08), (extra, filt, own)
            assert (wide > 1.1 * own).all(), (extra, wide, own)


def test_a_one_directional_footprint_widens_the_lobe_across_the_fold_only():
    """K = k u u^T (the normal turns along u only): the lobe is Blender's anisotropic GGX with
    alpha_x^2 = alpha^2 + k along u and alpha_y = alpha, in sampling and at its peak."""
    wo = torch.nn.functional.normalize(torch.tensor([[0.3, -0.2, 0.9], [-0.5, 0.1, 0.8]]), dim=-1)
    mirror = wo * torch.tensor([-1.0, -1.0, 1.0])
    torch.manual_seed(1)
    wi = torch.nn.functional.normalize(torch.randn(2, 3) * 0.3 + mirror, dim=-1)
    k, angle = 3e-3, np.deg2rad(30.0)
    u = np.array([np.cos(angle), np.sin(angle)])
    kernel = torch.tensor([[k * u[0] * u[0], k * u[0] * u[1], k * u[1] * u[1]]], dtype=torch.float32)
    for extra in ({"roughness": 0.2, "metallic": 1.0}, {"roughness": 0.3, "coat_weight": 1.0, "coat_roughness": 0.1}):
        m = _material(extra)
        filtered = dict(m, **{FOOTPRINT: kernel})
        name = "coat_roughness" if "coat_weight" in extra else "roughness"
        alpha2 = extra[name] ** 4
        ax, ay = np.sqrt(alpha2 + k), np.sqrt(alpha2)
        aniso = {"roughness": torch.tensor((ax * ay) ** 0.25), "anisotropic": torch.tensor((1 - ay / ax) / 0.9),
                 "anisotropic_rotation": torch.tensor(angle / (2 * np.pi))}
        if name == "roughness":
            assert torch.allclose(pdf_specular(filtered, wo, wi), pdf_specular(m | aniso, wo, wi), rtol=1e-3)
            assert torch.allclose(principled_eval(filtered, wo, mirror), principled_eval(m | aniso, wo, mirror),
                                  rtol=2e-3)
        else:  # the coat has no anisotropy of its own: its sampling matches the base's widened the same way
            assert torch.allclose(pdf_coat(filtered, wo, wi), pdf_specular(m | aniso, wo, wi), rtol=1e-3)
        # across the fold the lobe is as sharp as the material's own: it falls off faster there
        # than the isotropic widening by K's trace (the model before), relative to its peak
        iso = dict(m, **{FOOTPRINT: torch.tensor([[k / 2, 0.0, k / 2]])})
        along = torch.tensor([[-np.sin(angle), np.cos(angle)]], dtype=torch.float32)
        off = torch.nn.functional.normalize(torch.cat([0.15 * along, torch.ones(1, 1)], -1), dim=-1)
        view = peak = torch.tensor([[0.0, 0.0, 1.0]])  # seen head on, the peak is straight back
        pdf = pdf_specular if name == "roughness" else pdf_coat

        falloff = [float(pdf(x, view, off) / pdf(x, view, peak)) for x in (filtered, iso)]
        assert falloff[0] < 0.8 * falloff[1], falloff


def test_filtered_lobe_matches_the_ggx_averaged_over_the_pixels_normals():
    """The slope density of GGX(alpha) convolved (FFT) with the pixel's Gaussian spread of
    normals: the filtered lobe follows it into the tails within 6%, the widened GGX overshoots
    them by more than 1.5x."""
    from pbrfit.microfacet import filtered_ggx_D, ggx_D

    alpha2, kernel = 0.0039, 0.0034  # gold's alpha^2; the kernel adds 2 sigma^2 (sigma^2 per axis)
    step, n = 0.004, 801
    grid = (np.arange(n) - n // 2) * step
    sx, sy = np.meshgrid(grid, grid)
    ggx = alpha2 / (np.pi * (alpha2 + sx ** 2 + sy ** 2) ** 2)
    gauss = np.exp(-(sx ** 2 + sy ** 2) / kernel)
    gauss /= gauss.sum()
    conv = np.real(np.fft.ifft2(np.fft.fft2(ggx) * np.fft.fft2(np.fft.ifftshift(gauss))))[n // 2, n // 2:]
    s = torch.tensor(grid[n // 2:], dtype=torch.float64)[:, None]
    h = torch.nn.functional.normalize(torch.cat([-s, torch.zeros_like(s), torch.ones_like(s)], -1), dim=-1)
    a = torch.tensor([[np.sqrt(alpha2)]], dtype=torch.float64)
    aw = torch.sqrt(a * a + kernel)
    hz4 = h[:, 2] ** 4
    filtered = (filtered_ggx_D(h, aw, aw, a, a)[:, 0] * hz4).numpy() / conv
    widened = (ggx_D(h, aw, aw)[:, 0] * hz4).numpy() / conv
    tails = (grid[n // 2:] >= 0.24) & (grid[n // 2:] <= 1.2)  # past 4 widened alphas, short of the FFT's wrap
    assert np.all(np.abs(filtered[tails] - 1) < 0.06), filtered[tails]
    assert np.all(widened[tails] > 1.3) and widened[tails].max() > 1.5
    # the core is the widened GGX's (its peak within 25% of the convolution's)
    assert abs(filtered[0] - widened[0]) < 1e-9 and abs(filtered[0] - 1) < 0.25


@pytest.fixture(scope="module")
def mirror_sphere(tmp_path_factory):
    """A 0.1-rough metal sphere under a checker environment, rendered by Cycles at 64 px
    (radius about 27 px: the filter spreads each pixel over ~1.7 degrees of normals, as wide
    as the lobe)."""
    from pbrfit.images import write_exr

    d = tmp_path_factory.mktemp("pixel_filter")
    v, u = np.mgrid[0:256, 0:512]
    checker = np.where(((u // 16) + (v // 16)) % 2 == 0, 2.0, 0.1).astype(np.float32)
    write_exr(d / "checker.exr", np.repeat(checker[..., None], 3, -1))
    spec = {"shape": "sphere", "material": {"base_color": [0.9, 0.9, 0.9], "metallic": 1.0, "roughness": 0.1},
            "train_hdri": str(d / "checker.exr"), "cameras": 1, "resolution": [64, 64], "samples": 256,
            "out": str(d / "case")}
    (d / "spec.json").write_text(json.dumps(spec))
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "cycles_reference.py"), str(d / "spec.json")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return d / "case"


@pytest.mark.cycles
def test_only_the_filtered_render_finds_cycles_roughness(mirror_sphere, monkeypatch):
    from pbrfit.job import load_job
    from pbrfit.render import RasterRenderer, SampleCounts

    job = load_job(mirror_sphere / "job.toml")
    view = job.scene.views[0]
    inside = (view.mask > 0.99).reshape(-1)
    truth = json.loads((mirror_sphere / "truth.json").read_text())["material"]
    grid = [0.04, 0.06, 0.08, 0.1, 0.12, 0.14, 0.17, 0.2, 0.25]

    def best_roughness():
        r = RasterRenderer(job.scene, SampleCounts(32, 0, 128, 0), seed=0)
        errors = []
        for rough in grid:
            m = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in (default_material() | truth).items()
                 if not isinstance(v, str)}
            m["roughness"] = torch.tensor(rough)
            img = r.render_image(0, m).reshape(-1, 3)[inside]
            errors.append(float(np.mean((img - view.image.reshape(-1, 3)[inside]) ** 2)))
        return grid[int(np.argmin(errors))], errors

    filtered, errors_filtered = best_roughness()
    monkeypatch.setattr(pixel_filter, "footprint",
                        lambda coverage, pixels, frame, **_: np.zeros((len(pixels), 3), np.float32))
    centre_only, errors_centre = best_roughness()
    assert abs(filtered - 0.1) <= 0.021, (filtered, errors_filtered)
    assert centre_only >= 0.14, (centre_only, errors_centre)  # the blur read as roughness
    assert min(errors_filtered) < 0.5 * min(errors_centre)


def test_gradients_stay_finite_where_the_widened_lobe_is_isotropic():
    """At anisotropic 0 under an isotropic footprint the widened lobe's axes are undefined; the
    gradients of every GGX parameter must stay finite there (the fit starts at anisotropic 0)."""
    torch.manual_seed(2)
    wo = torch.nn.functional.normalize(torch.rand(64, 3) + torch.tensor([0.0, 0.0, 0.5]), dim=-1)
    wi = torch.nn.functional.normalize(torch.randn(64, 3) * 0.3 + wo * torch.tensor([-1.0, -1.0, 1.0]), dim=-1)
    for kernel in ([2e-3, 0.0, 2e-3], [0.0, 0.0, 0.0]):
        m = _material({"roughness": 0.3, "metallic": 1.0, "coat_weight": 0.5, "coat_roughness": 0.1})
        params = {n: m[n].clone().requires_grad_() for n in ("roughness", "anisotropic", "anisotropic_rotation",
                                                            "coat_roughness")}
        value = principled_eval(m | params | {FOOTPRINT: torch.tensor([kernel])}, wo, wi).sum()
        value = value + pdf_specular(m | params | {FOOTPRINT: torch.tensor([kernel])}, wo, wi).sum()
        value.backward()
        for name, p in params.items():
            assert torch.isfinite(p.grad).all(), (kernel, name, p.grad)
        assert float(params["roughness"].grad.abs()) > 0 and float(params["coat_roughness"].grad.abs()) > 0


def test_a_rim_turning_fast_is_widened_and_an_occlusion_edge_is_not():
    """A thin cylinder seen side on turns its normal ~27 degrees a pixel (an ear's rim): on one
    continuous surface, so it widens the lobe (before session 50 any step over 20 degrees was
    taken for an edge). The same normals with the right half's hits set far behind (another
    surface, occluded) leave the step across the jump out."""
    h, w, radius = 12, 5, 2.2
    xs = (np.arange(w) - (w - 1) / 2) / radius
    coverage = np.ones((h, w), bool)
    normals = np.zeros((h, w, 3))
    normals[..., 0], normals[..., 2] = xs, np.sqrt(np.clip(1 - xs * xs, 0, None))
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    pixels = np.arange(h * w)
    n = normals.reshape(-1, 3)
    positions = np.zeros((h, w, 3))
    positions[..., 0] = np.arange(w)[None, :] * 0.01
    positions[..., 1] = np.arange(h)[:, None] * 0.01
    spacing = np.full(h * w, 0.01)
    centre = (h // 2) * w + w // 2
    step = np.linalg.norm(n[centre + 1] - n[centre])
    assert step > 0.35  # what the old rule took for an edge
    k = pixel_filter.footprint(coverage, pixels, _frames(n), position=positions.reshape(-1, 3), spacing=spacing)
    # at the centre the tangent is the world x: K_xx = 2 v (x-change per pixel)^2, central
    assert k[centre, 0] == pytest.approx(
        2 * pixel_filter.FILTER_VARIANCE * (0.5 * (n[centre + 1, 0] - n[centre - 1, 0])) ** 2, rel=1e-3)
    behind = positions.copy()
    behind[:, w // 2 + 1:, 2] = -1.0  # a metre behind: across an occlusion edge
    k_edge = pixel_filter.footprint(coverage, pixels, _frames(n), position=behind.reshape(-1, 3), spacing=spacing)
    one_sided = 2 * pixel_filter.FILTER_VARIANCE * (n[centre, 0] - n[centre - 1, 0]) ** 2
    assert k_edge[centre, 0] == pytest.approx(one_sided, rel=1e-3)
