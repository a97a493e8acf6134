"""Tests of the Principled BSDF model (pbrfit.bsdf and its helpers).

Oracles: Blender 5.0's Cycles itself (rendered in a subprocess through the ``bpy`` module),
colour-science's tabulated CIE 1931 observer with a brute-force Airy thin-film sum, Cycles'
published GGX albedo values, and Monte Carlo integration.

Reciprocity, as tested here: every single-scattering lobe (GGX with Fresnel at the half vector:
dielectric, generalized Schlick, F82; Lambert) is reciprocal, and so is the whole model with
``reciprocal=True``. The default (Cycles') form is not: Cycles evaluates energy compensation,
layer albedos, coat absorption and the sheen LTC at the view direction only.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from pbrfit.albedo_tables import compute_tables, interp, load_tables
from pbrfit.bsdf import pdf_coat, pdf_specular, principled_eval, sample_coat, sample_specular
from pbrfit.microfacet import (
    f82_tint_B,
    fresnel_dielectric,
    fresnel_f82,
    fresnel_generalized_schlick,
    ggx_reflection,
    soft_alpha,
)
from pbrfit.params import PARAMETERS, default_material
from pbrfit.thinfilm import XYZ_TO_REC709, sensitivity, thin_film_dielectric, thin_film_f82

# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _one_thread():
    """Single-threaded torch: on small, shared CI machines torch's 2-thread kernels stall
    whenever the other core is busy; one thread keeps these tests fast and steady."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def T(v):
    return torch.tensor(v if isinstance(v, (list, tuple)) else [v], dtype=torch.float32)


def upper_dirs(n, gen):
    """Random unit directions in the upper hemisphere, at least ~1 degree above the horizon."""
    v = torch.randn(n, 3, generator=gen)
    v = torch.cat([v[:, :2], v[:, 2:].abs()], -1)
    v = v / v.norm(dim=-1, keepdim=True)
    v = torch.cat([v[:, :2], v[:, 2:].clamp_min(0.02)], -1)
    return v / v.norm(dim=-1, keepdim=True)


def view(mu):
    return torch.tensor([[math.sqrt(1 - mu * mu), 0.0, mu]])


def random_material(gen, size=None):
    """Uniform over every parameter's bounds (log-uniform for log-box ones)."""
    m = {}
    for name, s in PARAMETERS.items():
        shape = (s.size,) if size is None else (size, s.size)
        r = torch.rand(shape, generator=gen)
        if s.transform == "logbox":
            m[name] = torch.exp(math.log(s.lower) + r * (math.log(s.upper) - math.log(s.lower)))
        else:
            m[name] = s.lower + r * (s.upper - s.lower)
    return m


def cos_hemisphere(u):
    r = torch.sqrt(u[..., 0])
    phi = 2 * math.pi * u[..., 1]
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), torch.sqrt((1 - u[..., 0]).clamp_min(0))], -1)


def mis_albedo(m, mu, n=60000, seed=0, reciprocal=False):
    """Directional albedo by one-sample MIS over specular, coat and cosine sampling.

    Returns (mean RGB, standard error RGB)."""
    g = torch.Generator().manual_seed(seed)
    wo = view(mu).expand(n, 3)
    u = torch.rand(n, 2, generator=g)
    pick = torch.randint(0, 3, (n, 1), generator=g)
    ws, _ = sample_specular(m, wo, u)
    wc, _ = sample_coat(m, wo, u)
    wi = torch.where(pick == 0, ws, torch.where(pick == 1, wc, cos_hemisphere(u)))
    pdf = (pdf_specular(m, wo, wi) + pdf_coat(m, wo, wi) + wi[:, 2].clamp_min(0) / math.pi) / 3
    v = principled_eval(m, wo, wi, reciprocal=reciprocal) / pdf[:, None].clamp_min(1e-20)
    return v.mean(0), v.std(0) / math.sqrt(n)


# --- albedo tables -------------------------------------------------------------------------


def test_tables_match_generator_and_cycles():
    stored = load_tables()
    fresh = compute_tables(log2_samples=8)
    for name in stored:
        assert stored[name].shape == fresh[name].shape
        assert np.abs(stored[name] - fresh[name]).max() < 0.02, name
    E, Eavg = stored["ggx_E"], stored["ggx_Eavg"]
    # values of Cycles' own table_ggx_E / table_ggx_Eavg (intern/cycles/scene/shader.tables)
    assert E[31, 31] == pytest.approx(0.306853, abs=2e-4)  # mu = 1, rough = 1
    assert E[16, 16] == pytest.approx(0.847421, abs=2e-4)
    assert E[1, 3] == pytest.approx(0.954714, abs=5e-4)
    assert Eavg[31] == pytest.approx(0.409137, abs=2e-4)
    assert Eavg[16] == pytest.approx(0.870874, abs=2e-4)
    assert (E[:, 0] == 1).all()  # rough 0 is a mirror in Cycles


def test_interp_follows_cycles_lookup():
    tab = torch.tensor(load_tables()["ggx_E"])
    # grid points are exact, midpoints average, coordinates saturate
    assert interp(tab, [T(16 / 31), T(5 / 31)]) == pytest.approx(float(tab[16, 5]), abs=1e-6)
    mid = interp(tab, [T(16.5 / 31), T(5 / 31)])
    assert mid == pytest.approx(float(tab[16:18, 5].mean()), abs=1e-6)
    assert interp(tab, [T(2.0), T(-1.0)]) == pytest.approx(float(tab[31, 0]), abs=1e-6)
    # per-sample coordinates give the same as scalar ones
    mu = torch.rand(50, 1)
    a = interp(tab, [mu, T(0.3)])
    b = torch.stack([interp(tab, [x.reshape(1), T(0.3)]) for x in mu]).reshape(50, 1)
    assert torch.allclose(a, b, atol=1e-6)


# --- reciprocity ---------------------------------------------------------------------------


def test_single_scattering_lobes_are_reciprocal():
    g = torch.Generator().manual_seed(1)
    n = 4000
    wo, wi = upper_dirs(n, g), upper_dirs(n, g)
    ax = soft_alpha(torch.rand(n, 1, generator=g))
    ay = soft_alpha(torch.rand(n, 1, generator=g))
    eta = 1.01 + 2 * torch.rand(n, 1, generator=g)
    f0 = torch.rand(n, 3, generator=g)
    b = f82_tint_B(f0, torch.rand(n, 3, generator=g))
    v1, c1 = ggx_reflection(wo, wi, ax, ay)
    v2, c2 = ggx_reflection(wi, wo, ax, ay)
    assert torch.allclose(c1, c2, atol=1e-6)
    f_ab = v1 / wi[:, 2:]
    f_ba = v2 / wo[:, 2:]
    for fres in (fresnel_dielectric(c1, eta), fresnel_generalized_schlick(c1, eta, f0), fresnel_f82(c1, f0, b)):
        assert torch.allclose(fres * f_ab, fres * f_ba, rtol=2e-4, atol=1e-7)


def test_full_model_reciprocity():
    g = torch.Generator().manual_seed(2)
    n = 3000
    wo, wi = upper_dirs(n, g), upper_dirs(n, g)
    for _ in range(6):
        m = random_material(g)
        a = principled_eval(m, wo, wi, reciprocal=True) / wi[:, 2:]
        b = principled_eval(m, wi, wo, reciprocal=True) / wo[:, 2:]
        assert torch.allclose(a, b, rtol=2e-3, atol=1e-6)
    # Cycles' form: reciprocal for a bare Lambert base, not once view-dependent factors act
    lambert = {"base_color": T([0.7, 0.4, 0.2]), "specular_ior_level": T(0.0)}
    a = principled_eval(lambert, wo, wi) / wi[:, 2:]
    b = principled_eval(lambert, wi, wo) / wo[:, 2:]
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    metal = {"metallic": T(1.0), "roughness": T(0.8), "base_color": T([0.9, 0.6, 0.3])}
    a = principled_eval(metal, wo, wi) / wi[:, 2:]
    b = principled_eval(metal, wi, wo) / wo[:, 2:]
    assert ((a - b).abs() / b.clamp_min(1e-6)).max() > 0.05


# --- energy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("reciprocal", [False, True])
def test_white_furnace_metal(reciprocal):
    n = 40000
    for rough in (0.0, 0.1, 0.3, 0.6, 1.0):
        m = {"metallic": T(1.0), "base_color": T([1, 1, 1]), "specular_tint": T([1, 1, 1]), "roughness": T(rough)}
        for mu in (0.05, 0.2, 0.5, 1.0):
            g = torch.Generator().manual_seed(int(100 * rough + 10 * mu))
            wo = view(mu).expand(n, 3)
            wi, pdf = sample_specular(m, wo, torch.rand(n, 2, generator=g))
            est = (principled_eval(m, wo, wi, reciprocal=reciprocal)[:, 0] / pdf.clamp_min(1e-20))
            if reciprocal:  # the added Kulla-Conty lobe is diffuse-like: add cosine samples
                wc = cos_hemisphere(torch.rand(n, 2, generator=g))
                p_mix = 0.5 * (pdf_specular(m, wo, wc) + wc[:, 2] / math.pi)
                est_c = principled_eval(m, wo, wc, reciprocal=True)[:, 0] / p_mix
                p_mix_s = 0.5 * (pdf + wi[:, 2].clamp_min(0) / math.pi)
                est = 0.5 * (principled_eval(m, wo, wi, reciprocal=True)[:, 0] / p_mix_s + est_c)
            assert float(est.mean()) == pytest.approx(1.0, abs=0.03), (rough, mu)


def test_white_dielectric_albedo_close_to_one():
    for rough in (0.0, 0.3, 0.7, 1.0):
        m = {"base_color": T([1, 1, 1]), "roughness": T(rough)}
        for mu in (0.1, 0.5, 1.0):
            a, e = mis_albedo(m, mu, seed=int(rough * 10 + mu * 100))
            assert float(a[0]) == pytest.approx(1.0, abs=0.02 + 3 * float(e[0]))


def test_random_materials_never_reflect_more_than_one():
    g = torch.Generator().manual_seed(3)
    worst = 0.0
    for i in range(24):
        m = random_material(g)
        if i % 3 == 0:
            m["base_color"] = T([1, 1, 1])
        if i % 4 == 0:
            m["specular_tint"] = T([1, 1, 1])
        for mu in (0.05, 0.4, 1.0):
            for reciprocal in (False, True):
                a, e = mis_albedo(m, mu, n=30000, seed=i, reciprocal=reciprocal)
                worst = max(worst, float((a - 3 * e).max()))
    assert worst <= 1.01


# --- sampling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("lobe", ["specular", "coat"])
def test_sampler_matches_its_pdf(lobe):
    sample, pdf_fn = (sample_specular, pdf_specular) if lobe == "specular" else (sample_coat, pdf_coat)
    g = torch.Generator().manual_seed(4)
    m = {"roughness": T(0.5), "anisotropic": T(0.7), "anisotropic_rotation": T(0.15),
         "coat_roughness": T(0.4), "base_color": T([0.5, 0.5, 0.5]), "coat_weight": T(0.0)}
    n = 200000
    for mu in (0.2, 0.7, 1.0):
        wo = view(mu).expand(n, 3)
        wi, pdf = sample(m, wo, torch.rand(n, 2, generator=g))
        assert torch.allclose(pdf_fn(m, wo, wi), pdf, rtol=1e-3, atol=1e-6)
        assert torch.allclose(wi.norm(dim=-1), torch.ones(n), atol=1e-5)
        # the pdf integrates to one over the sphere
        d = torch.randn(n, 3, generator=g)
        d = d / d.norm(dim=-1, keepdim=True)
        assert float((pdf_fn(m, wo, d) * 4 * math.pi).mean()) == pytest.approx(1.0, abs=0.03)
    # importance-sampled and uniform-hemisphere albedo estimates agree
    m["metallic"] = T(1.0)
    m["coat_weight"] = T(1.0 if lobe == "coat" else 0.0)
    m["base_color"] = T([0.9, 0.6, 0.3])
    wo = view(0.6).expand(n, 3)
    wi, pdf = sample(m, wo, torch.rand(n, 2, generator=g))
    f = principled_eval(m, wo, wi)
    mask = pdf > 0
    is_est = (f[mask] / pdf[mask, None]).sum(0) / n
    u = torch.rand(n, 2, generator=g)
    z = u[:, 0]
    phi = 2 * math.pi * u[:, 1]
    wu = torch.stack([torch.sqrt(1 - z * z) * torch.cos(phi), torch.sqrt(1 - z * z) * torch.sin(phi), z], -1)
    uni = principled_eval(m, wo, wu) * 2 * math.pi
    uni_est, uni_err = uni.mean(0), uni.std(0) / math.sqrt(n)
    assert torch.all((is_est - uni_est).abs() < 4 * uni_err + 0.01)


def test_anisotropic_rotation_direction():
    """alpha_x lies along the tangent rotated counter-clockwise (from +x toward +y)."""
    n = 50000
    g = torch.Generator().manual_seed(5)
    wo = view(1.0).expand(n, 3)
    u = torch.rand(n, 2, generator=g)

    def spread(rot):
        m = {"roughness": T(0.6), "anisotropic": T(1.0), "anisotropic_rotation": T(rot)}
        wi, _ = sample_specular(m, wo, u)
        x, y = wi[:, 0], wi[:, 1]
        return float((x * x).mean()), float((y * y).mean()), float((x * y).mean())

    vx, vy, _ = spread(0.0)
    assert vx > 2 * vy
    vx, vy, _ = spread(0.25)
    assert vy > 2 * vx
    _, _, cxy = spread(0.125)
    assert cxy > 0.05
    # eval: rotating the material equals counter-rotating the directions
    rot = 0.3
    m = {"roughness": T(0.5), "anisotropic": T(0.8), "metallic": T(1.0), "anisotropic_rotation": T(rot)}
    m0 = dict(m, anisotropic_rotation=T(0.0))
    wo, wi = upper_dirs(2000, g), upper_dirs(2000, g)
    c, s = math.cos(-2 * math.pi * rot), math.sin(-2 * math.pi * rot)
    R = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(principled_eval(m, wo, wi), principled_eval(m0, wo @ R.T, wi @ R.T), rtol=1e-3, atol=1e-6)


def test_sampling_is_differentiable_in_roughness():
    n = 20000
    rough = torch.tensor([0.4], requires_grad=True)
    m = {"roughness": rough, "metallic": T(1.0), "base_color": T([0.9, 0.8, 0.7])}
    wo = view(0.7).expand(n, 3)
    wi, pdf = sample_specular(m, wo, torch.rand(n, 2, generator=torch.Generator().manual_seed(6)))
    (wi[:, 0].mean()).backward(retain_graph=True)
    assert torch.isfinite(rough.grad).all() and rough.grad.abs() > 0
    rough.grad = None
    (principled_eval(m, wo, wi)[:, 0] / pdf.clamp_min(1e-12)).mean().backward()
    assert torch.isfinite(rough.grad).all()


# --- thin film -------------------------------------------------------------------------------


def _airy_oracle(cos1, d, n_film, n_sub):
    """Brute-force RGB of a thin film: full Airy sum per wavelength, CIE 1931 (colour-science)."""
    import colour

    cmfs = colour.MSDS_CMFS["CIE 1931 2 Degree Standard Observer"].copy().align(colour.SpectralShape(360, 830, 1))
    lam, xyz = cmfs.wavelengths, cmfs.values
    rgb = xyz @ XYZ_TO_REC709.T
    rgb = rgb / rgb.sum(0)

    def coeffs(n1, n2, c1):
        c2 = np.sqrt(1 - (n1 / n2) ** 2 * (1 - c1 * c1) + 0j)
        return (n1 * c1 - n2 * c2) / (n1 * c1 + n2 * c2), (n2 * c1 - n1 * c2) / (n2 * c1 + n1 * c2), c2

    rs12, rp12, c2 = coeffs(1.0, n_film, cos1)
    rs23, rp23, _ = coeffs(n_film, n_sub, c2)
    e = np.exp(4j * np.pi * n_film * d * c2 / lam)
    refl = sum(0.5 * np.abs((a + b * e) / (1 + a * b * e)) ** 2 for a, b in ((rs12, rs23), (rp12, rp23)))
    return (refl[:, None] * rgb).sum(0)


def test_thin_film_matches_spectral_oracle():
    worst = 0.0
    for cos1 in (1.0, 0.6, 0.2):
        for d in (0.0, 80.0, 250.0, 600.0, 1500.0):
            for nf in (1.33, 2.2):
                mine = thin_film_dielectric(T([cos1])[None], T([d])[None], T([nf])[None], T([1.5])[None])[0]
                worst = max(worst, float(np.abs(mine.numpy() - _airy_oracle(cos1, d, nf, 1.5)).max()))
    assert worst < 0.015


def test_thin_film_basic_properties():
    re, im = sensitivity(torch.zeros(1, 1))
    assert torch.allclose(re, torch.ones(1, 3), atol=1e-6) and torch.allclose(im, torch.zeros(1, 3), atol=1e-6)
    g = torch.Generator().manual_seed(7)
    n = 5000
    cos1 = torch.rand(n, 1, generator=g)
    d = 1500 * torch.rand(n, 1, generator=g)
    nf = 1.01 + 2 * torch.rand(n, 1, generator=g)
    r = thin_film_dielectric(cos1, d, nf, 1.01 + 2 * torch.rand(n, 1, generator=g))
    assert r.min() >= 0 and r.max() <= 1
    f0 = torch.rand(n, 3, generator=g)
    r = thin_film_f82(cos1, d, nf, f0, f82_tint_B(f0, torch.rand(n, 3, generator=g)))
    assert r.min() >= 0 and r.max() <= 1
    # colour changes with thickness
    ds = torch.linspace(50, 800, 16)[:, None]
    rgb = thin_film_dielectric(torch.ones_like(ds), ds, torch.full_like(ds, 1.33), torch.full_like(ds, 1.5))
    chroma = rgb / rgb.sum(-1, keepdim=True)
    assert float((chroma.max(0).values - chroma.min(0).values).max()) > 0.1
    # a film barely above Cycles' cutoff leaves the metal's F82 Fresnel nearly unchanged away
    # from grazing (near grazing even an index-1.02 film reflects, and the Airy series that
    # Cycles truncates after 3 terms no longer telescopes to the bare interface)
    f0 = T([0.9, 0.6, 0.3])[None]
    b = f82_tint_B(f0, T([0.8, 0.9, 1.0])[None])
    c = torch.linspace(0.4, 1, 20)[:, None]
    film = thin_film_f82(c, torch.full_like(c, 0.11), torch.full_like(c, 1.5), f0, b)
    assert torch.allclose(film, fresnel_f82(c, f0, b), atol=0.02)


def test_zero_thickness_is_exactly_no_film():
    g = torch.Generator().manual_seed(8)
    wo, wi = upper_dirs(1000, g), upper_dirs(1000, g)
    base = {"base_color": T([0.2, 0.3, 0.4]), "metallic": T(0.5), "roughness": T(0.3), "thin_film_ior": T(2.0)}
    plain = principled_eval(dict(base, thin_film_thickness=T(0.0)), wo, wi)
    assert torch.equal(plain, principled_eval(dict(base, thin_film_thickness=T(0.05)), wo, wi))
    assert torch.equal(plain, principled_eval(dict(base, thin_film_ior=T(1.33)), wo, wi))
    d = torch.zeros(1, requires_grad=True)
    assert torch.equal(plain, principled_eval(dict(base, thin_film_thickness=d), wo, wi))
    assert not torch.allclose(plain, principled_eval(dict(base, thin_film_thickness=T(300.0)), wo, wi), atol=1e-3)


def test_per_sample_parameters_match_per_material():
    """Per-sample (texture) parameters take the direct path, per-material ones the cosine LUT."""
    g = torch.Generator().manual_seed(9)
    n = 800
    wo, wi = upper_dirs(n, g), upper_dirs(n, g)
    m = random_material(g)
    m["thin_film_thickness"] = T(420.0)
    per_sample = {k: v.expand(n, v.shape[-1]).clone() for k, v in m.items()}
    a = principled_eval(m, wo, wi)
    b = principled_eval(per_sample, wo, wi)
    assert torch.allclose(a, b, rtol=5e-3, atol=2e-4)
    assert principled_eval({}, wo.reshape(20, 40, 3), wi.reshape(20, 40, 3)).shape == (20, 40, 3)


# --- sheen -----------------------------------------------------------------------------------


def test_sheen_lobe_albedo_matches_its_fit():
    """The LTC is normalized: a sheen-only material reflects the fitted albedo."""
    m = {"base_color": T([0, 0, 0]), "specular_ior_level": T(0.0), "sheen_weight": T(1.0),
         "sheen_roughness": T(1.0), "sheen_tint": T([1, 1, 1])}
    n = 200000
    for mu, cycles_albedo in ((1.0, 0.34187), (0.0, 0.74973)):  # Cycles' table_sheen_ltc, rough 1
        g = torch.Generator().manual_seed(10)
        wo = view(max(mu, 1e-4)).expand(n, 3)
        wi = cos_hemisphere(torch.rand(n, 2, generator=g))
        a = float((principled_eval(m, wo, wi)[:, 0] / (wi[:, 2] / math.pi)).mean())
        assert a == pytest.approx(cycles_albedo, rel=0.03)


# --- gradients -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["low", "high", "mixed"])
def test_gradients_finite_at_extremes(case):
    lo = {n: s.lower for n, s in PARAMETERS.items()}
    hi = {n: s.upper for n, s in PARAMETERS.items()}
    vals = lo if case == "low" else hi if case == "high" else {
        n: (lo[n] if i % 2 else hi[n]) for i, n in enumerate(PARAMETERS)}
    m = {n: torch.full((s.size,), float(vals[n]), requires_grad=True) for n, s in PARAMETERS.items()}
    if case == "low":  # make every lobe present while staying at the roughness/IOR/film bounds
        for n in ("coat_weight", "sheen_weight", "metallic"):
            m[n] = torch.full((1,), 0.5, requires_grad=True)
    dirs = torch.tensor([
        [0.0, 0.0, 1.0], [0.999, 0.0, 0.0447], [0.6, 0.0, 0.8], [0.0, 0.9999, 1e-3],
        [0.3, 0.3, -0.2], [-0.6, 0.0, 0.8], [0.0, -0.99995, 1e-4]])
    wo = dirs[:, None].expand(-1, len(dirs), 3).reshape(-1, 3)
    wi = dirs[None].expand(len(dirs), -1, 3).reshape(-1, 3)
    loss = 0.0
    for reciprocal in (False, True):
        loss = loss + principled_eval(m, wo, wi, reciprocal=reciprocal).sum()
    u = torch.rand(len(wo), 2, generator=torch.Generator().manual_seed(11))
    for sample in (sample_specular, sample_coat):
        w, p = sample(m, wo, u)
        loss = loss + w.sum() + p.clamp(max=1e6).sum()
    assert torch.isfinite(loss)
    loss.backward()
    for name, t in m.items():
        assert t.grad is None or torch.isfinite(t.grad).all(), name


def test_view_below_horizon_and_light_below_are_handled():
    m = {"roughness": T(0.3), "metallic": T(0.5), "coat_weight": T(0.5), "sheen_weight": T(0.5)}
    wo = torch.tensor([[0.6, 0.0, -0.8], [0.0, 0.0, -1.0], [0.5, 0.0, 0.8660254]])
    wi = torch.tensor([[-0.6, 0.0, 0.8], [0.0, 0.6, 0.8], [0.0, 0.0, -1.0]])
    out = principled_eval(m, wo, wi)
    assert torch.isfinite(out).all() and (out[:2] > 0).all() and (out[2] == 0).all()


# --- Blender's Cycles as the oracle -------------------------------------------------------

_CYCLES_SCRIPT = textwrap.dedent('''
    import json, math, sys
    import bpy
    import OpenImageIO as oiio
    from mathutils import Vector
    cases, out_path, exr = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
    bpy.ops.wm.read_factory_settings(use_empty=True)
    sc = bpy.context.scene
    sc.render.engine = "CYCLES"
    cy = sc.cycles
    cy.device, cy.use_adaptive_sampling, cy.use_denoising, cy.blur_glossy = "CPU", False, False, 0.0
    cy.sample_clamp_direct = cy.sample_clamp_indirect = 0.0
    sc.render.resolution_x = sc.render.resolution_y = 4
    sc.render.use_persistent_data = True
    sc.view_settings.view_transform, sc.view_settings.look = "Standard", "None"
    sc.render.image_settings.file_format, sc.render.image_settings.color_depth = "OPEN_EXR", "32"
    bpy.ops.mesh.primitive_plane_add(size=200)
    plane = bpy.context.active_object
    mat = bpy.data.materials.new("M")
    plane.data.materials.append(mat)
    nt = mat.node_tree
    pr = nt.nodes["Principled BSDF"]
    tangent = nt.nodes.new("ShaderNodeTangent")
    tangent.direction_type = "UV_MAP"  # the plane's U runs along +X
    nt.links.new(tangent.outputs["Tangent"], pr.inputs["Tangent"])
    sc.world = bpy.data.worlds.new("W")
    bg = sc.world.node_tree.nodes["Background"]
    cam = bpy.data.cameras.new("C")
    cam.type, cam.ortho_scale = "ORTHO", 0.05
    camo = bpy.data.objects.new("C", cam)
    sc.collection.objects.link(camo)
    sc.camera = camo
    sun = bpy.data.lights.new("S", "SUN")
    sun.angle, sun.energy = math.radians(0.02), 1.0
    suno = bpy.data.objects.new("S", sun)
    sc.collection.objects.link(suno)
    res = []
    for c in cases:
        for socket, v in c["sockets"].items():
            s = pr.inputs[socket]
            s.default_value = (list(v) + [1.0]) if isinstance(v, list) and len(s.default_value) == 4 else v
        wo = Vector(c["wo"])
        camo.location = wo * 20
        camo.rotation_euler = wo.to_track_quat("Z", "Y").to_euler()
        furnace = c["wi"] is None
        bg.inputs["Strength"].default_value = 1.0 if furnace else 0.0
        bg.inputs["Color"].default_value = (1, 1, 1, 1)
        suno.hide_render = furnace
        if not furnace:
            suno.rotation_euler = Vector(c["wi"]).to_track_quat("Z", "Y").to_euler()
        cy.samples = 1024 if furnace else 256
        sc.render.filepath = exr
        bpy.ops.render.render(write_still=True)
        px = oiio.ImageBuf(exr).get_pixels(oiio.FLOAT)
        res.append(px[..., :3].reshape(-1, 3).mean(0).tolist())
    json.dump(res, open(out_path, "w"))
''')

_SOCKETS = {
    "base_color": "Base Color", "metallic": "Metallic", "roughness": "Roughness", "ior": "IOR",
    "specular_ior_level": "Specular IOR Level", "specular_tint": "Specular Tint",
    "anisotropic": "Anisotropic", "anisotropic_rotation": "Anisotropic Rotation",
    "coat_weight": "Coat Weight", "coat_roughness": "Coat Roughness", "coat_ior": "Coat IOR",
    "coat_tint": "Coat Tint", "sheen_weight": "Sheen Weight", "sheen_roughness": "Sheen Roughness",
    "sheen_tint": "Sheen Tint", "thin_film_thickness": "Thin Film Thickness", "thin_film_ior": "Thin Film IOR",
}

_CYCLES_MATERIALS = {
    "default": {},
    "tinted plastic": {"base_color": [0.6, 0.1, 0.1], "roughness": 0.3, "specular_ior_level": 0.7,
                       "specular_tint": [1, 0.8, 0.6]},
    "dense dielectric": {"base_color": [0.2, 0.5, 0.5], "specular_ior_level": 1.0, "ior": 3.0, "roughness": 0.2},
    "gold": {"base_color": [0.95, 0.7, 0.35], "metallic": 1.0, "roughness": 0.4, "specular_tint": [0.9, 0.7, 0.5]},
    "brushed": {"base_color": [0.9, 0.9, 0.9], "metallic": 1.0, "roughness": 0.6, "anisotropic": 1.0,
                "anisotropic_rotation": 0.3},
    "coated": {"base_color": [0.8, 0.8, 0.8], "roughness": 0.5, "coat_weight": 0.7, "coat_roughness": 0.4,
               "coat_tint": [0.2, 0.6, 0.9], "coat_ior": 2.5},
    "film": {"base_color": [0.05, 0.05, 0.05], "roughness": 0.3, "thin_film_thickness": 350.0, "thin_film_ior": 1.33},
    "metal film": {"base_color": [0.8, 0.8, 0.8], "metallic": 1.0, "roughness": 0.3,
                   "thin_film_thickness": 300.0, "thin_film_ior": 1.5},
    "mixed": {"base_color": [0.3, 0.6, 0.2], "metallic": 0.4, "roughness": 0.45, "coat_weight": 0.5,
              "coat_roughness": 0.2, "sheen_weight": 0.3, "specular_ior_level": 0.3},
    "sheen": {"base_color": [0.1, 0.1, 0.1], "roughness": 0.8, "sheen_weight": 1.0, "sheen_roughness": 0.5,
              "sheen_tint": [1, 0.7, 0.7]},
}


def _dir(theta, phi):
    t, p = math.radians(theta), math.radians(phi)
    return [math.sin(t) * math.cos(p), math.sin(t) * math.sin(p), math.cos(t)]


@pytest.mark.cycles
def test_matches_cycles(tmp_path):
    """Render a plane in Blender 5.0's Cycles (orthographic camera along wo, a 0.02-degree sun
    along wi, or a white world for the directional albedo) and compare pixels with the model."""
    try:
        import importlib.util

        if importlib.util.find_spec("bpy") is None:
            pytest.skip("bpy is not installed")
    except ValueError:
        pytest.skip("bpy is not importable")
    pairs = [((0, 0), (40, 180)), ((45, 0), (50, 170)), ((60, 0), (30, 90)), ((30, 20), (70, 200)),
             ((75, 0), None)]
    defaults = default_material()
    cases = []
    for name, mat in _CYCLES_MATERIALS.items():
        full = dict(defaults, **mat)
        sockets = {_SOCKETS[k]: v for k, v in full.items() if k in _SOCKETS}
        for o, i in pairs:
            cases.append({"name": name, "material": full, "sockets": sockets, "wo": _dir(*o),
                          "wi": None if i is None else _dir(*i)})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "render.py").write_text(_CYCLES_SCRIPT)
    proc = subprocess.run([sys.executable, str(tmp_path / "render.py"), str(tmp_path / "cases.json"),
                           str(tmp_path / "out.json"), str(tmp_path / "r.exr")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cycles = json.loads((tmp_path / "out.json").read_text())
    for c, ref in zip(cases, cycles):
        m = {k: T(v) for k, v in c["material"].items()}
        wo = torch.tensor([c["wo"]])
        if c["wi"] is None:
            mine, err = mis_albedo(m, c["wo"][2], n=400000, seed=12)
        else:
            mine, err = principled_eval(m, wo, torch.tensor([c["wi"]]))[0], torch.zeros(3)
        ref = torch.tensor(ref)
        tol = 0.05 if c["name"] in ("sheen", "mixed") else 0.012
        ok = torch.all((mine - ref).abs() <= tol * ref.max() + 3 * err + 2e-4)
        assert ok, (c["name"], c["wo"], c["wi"], ref, mine)


def test_cycles_bends_the_glossy_lobes_normal_at_grazing_views_only():
    """Cycles' ensure_valid_specular_reflection (pbrfit.microfacet.valid_specular_normal): a
    shading normal that mirrors a grazing view below the geometric surface is tilted toward the
    geometric normal until the mirrored view leaves at min(0.9 wo.ng, 0.01); elsewhere kept.
    The Principled BSDF's glossy lobes (here a metal: nothing else) then evaluate and sample in
    that frame (GLOSSY_FRAME), consistently with their densities."""
    from pbrfit.bsdf import GLOSSY_FRAME, pdf_specular, principled_eval, sample_specular
    from pbrfit.microfacet import glossy_frame, valid_specular_normal

    g = torch.Generator().manual_seed(3)
    n = torch.nn.functional.normalize(torch.randn(4000, 3, generator=g) * torch.tensor([0.4, 0.4, 0.0])
                                      + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    ng = torch.tensor([[0.0, 0.0, 1.0]]).expand_as(n)
    wo = torch.nn.functional.normalize(torch.randn(4000, 3, generator=g) * torch.tensor([1.0, 1.0, 0.15]), dim=-1)
    wo = wo * torch.where(wo[:, 2:] < 0, -1.0, 1.0)
    bent = valid_specular_normal(ng, wo, n)
    r = 2 * (bent * wo).sum(-1, keepdim=True) * bent - wo
    threshold = torch.clamp(0.9 * wo[:, 2:], max=0.01)
    was_valid = ((2 * (n * wo).sum(-1, keepdim=True) * n - wo)[:, 2:] >= threshold)[:, 0]
    assert 0.05 < float((~was_valid).float().mean()) < 0.95
    assert torch.equal(bent[was_valid], n[was_valid])
    assert torch.allclose(r[~was_valid, 2:], threshold[~was_valid], atol=5e-4)  # float32 at wo.z ~ 0.004
    assert torch.allclose(bent.norm(dim=-1), torch.ones(4000), atol=1e-5)

    # in a shading frame whose geometric normal is tilted: the frame is None where nothing bends
    wo_local = torch.nn.functional.normalize(torch.tensor([[0.9, 0.0, 0.05], [0.0, 0.2, 0.95]]), dim=-1)
    ng_local = torch.nn.functional.normalize(torch.tensor([[0.3, 0.0, 1.0], [0.3, 0.0, 1.0]]), dim=-1)
    frame = glossy_frame(ng_local, wo_local)
    assert frame is not None and torch.allclose(frame[1], torch.eye(3), atol=1e-6)
    assert glossy_frame(ng_local[1:], wo_local[1:]) is None
    m = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in (default_material() | {
        "metallic": 1.0, "roughness": 0.3, "base_color": [0.9, 0.8, 0.6]}).items() if not isinstance(v, str)}
    rot = frame[:1]
    u = torch.rand(2000, 2, generator=g)
    wi, pdf = sample_specular(m | {GLOSSY_FRAME: rot}, wo_local[:1].expand(2000, 3), u)
    assert torch.allclose(pdf, pdf_specular(m | {GLOSSY_FRAME: rot}, wo_local[:1].expand(2000, 3), wi), rtol=1e-3)

    def turned(v):
        return (rot @ v[..., None])[..., 0]

    up = (wi[:, 2] > 0) & (turned(wi)[:, 2] > 0)
    bent_eval = principled_eval(m | {GLOSSY_FRAME: rot}, wo_local[:1].expand(2000, 3), wi)
    in_frame = principled_eval(m, turned(wo_local[:1]).expand(2000, 3), turned(wi))
    assert up.sum() > 100 and torch.allclose(bent_eval[up], in_frame[up], rtol=1e-4, atol=1e-6)
