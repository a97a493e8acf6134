"""Blender 5.0's Principled BSDF, as Cycles evaluates it, in differentiable torch.

This is the single definition of the material model used by pbrfit's renderers. Parameter
values mean what they mean in Blender 5.0 (see :mod:`pbrfit.params`); the structure follows
Cycles' ``svm_node_closure_bsdf`` (``kernel/svm/closure.h``), top to bottom:

1. **Sheen** (Sheen Weight/Tint/Roughness): Cycles uses the microfiber LTC model of Zeltner,
   Burley & Chiang (2022), a linearly transformed cosine whose parameters and albedo Cycles
   tabulates over (cos view, roughness). Here the tables are replaced by the authors' published
   rational/Gaussian fits of the same data (as shipped in MaterialX's ``mx_microfacet_sheen``);
   they agree with Cycles' table to ~1.5 % except the LTC scale at grazing view (~10 %).
   Sheen roughness is clamped to >= 0.01 (the fits' range; Cycles clamps at 0.001).
2. **Coat** (Coat Weight/Roughness/IOR/Tint): isotropic GGX with the exact dielectric Fresnel
   of Coat IOR, energy-compensated; tint absorbs what lies beneath along the refracted view
   path, ``mix(1, tint ** (1 / cos_t), coat_weight)`` with cos_t the refracted view cosine.
3. **Metal** (Metallic): anisotropic GGX with the F82-tint Fresnel, F0 = Base Color and the
   82-degree tint = Specular Tint; weights the rest by ``1 - metallic``.
4. **Transmission**: not representable without light transport. Its reflection is folded into
   the specular layer below (Cycles' glass closure reflects with nearly the same lobe) and it
   removes ``transmission_weight`` of the diffuse base. Refraction itself is not rendered.
5. **Specular** (IOR, Specular IOR Level, Specular Tint, Roughness, Anisotropic, Anisotropic
   Rotation, Thin Film): anisotropic GGX; F0 = F0(IOR) * 2 * level * tint, the IOR converted
   back from F0 * 2 * level; Fresnel is the real dielectric curve remapped from F0_real..1 to
   F0..1 (Cycles' generalized Schlick); with a film (> 0.1 nm), thin-film interference over
   the substrate (:mod:`pbrfit.thinfilm`, also applied to the metal), rescaled per channel by
   F0 / F0_real the way Cycles does.
6. **Diffuse** (Base Color): Lambert (Diffuse Roughness 0). **Subsurface** has no transport
   here: Cycles' random-walk BSSRDF is normalized so its far-field reflectance is Base Color,
   so subsurface is rendered as Lambert with Base Color (``subsurface_weight``,
   ``subsurface_radius`` and ``subsurface_scale`` have no effect and no gradient).

Every GGX lobe is energy-compensated as Cycles' Multiscatter GGX does: the single-scattering
lobe is scaled by ``1 + Fms (1 - E) / E`` with E = E(rough, mu) and Fms = Fss E_avg / (1 - Fss
(1 - E_avg)) (tables in :mod:`pbrfit.albedo_tables`). A layer with albedo A removes
``max_rgb(A)`` of what lies beneath (Cycles' ``closure_layering_weight``), A estimated as
Cycles does (the compensated lobe's Fresnel-weighted albedo from the tables).

Reciprocity. Cycles evaluates every view-dependent factor (energy compensation, layer albedos,
coat tint, the sheen LTC) at the view direction only, so the full BSDF is *not* reciprocal;
each single-scattering lobe (GGX with Fresnel at the half vector, Lambert) is.
``principled_eval(..., reciprocal=True)`` gives a reciprocal variant with (nearly) the same
directional albedos under uniform light: instead of scaling the lobe, the missing energy is
added as the Kulla-Conty lobe ``Fss Fms (1 - E(mu_o)) (1 - E(mu_i)) / (pi (1 - E_avg))``; layering
``(1 - A(mu_o)) (1 - A(mu_i)) / (1 - A_avg)`` with A_avg the cosine-weighted mean of A (this keeps
the Lambert base's directional albedo exactly Cycles'); coat tint exponent ``(1/cos_t(mu_o) +
1/cos_t(mu_i)) / 2``; the sheen lobe symmetrized. The default is Cycles' form, so that fitted
values reproduce Cycles renders: under a broad sun the variant differs from Cycles by up to
~3 % for plastics, ~7-9 % for sheen and coat and up to ~25 % for rough metals (whose
compensation energy is large and lands in a different lobe shape).

Validation: ``tests/test_bsdf.py`` renders a plane in Blender 5.0's Cycles under a sun and a
white world for ten materials covering every layer; pixels agree within 1.2 % (5 % for sheen).

Conventions: all directions are unit vectors in the local shading frame (+z = shading normal,
+x = tangent, +y = bitangent = normal x tangent); ``wo`` points toward the camera, ``wi``
toward the light. Outputs are linear Rec.709 RGB. Material tensors have shape (size,) or
(..., size) broadcastable against the directions' batch shape. A view below the shading
horizon (wo.z <= 0, at silhouettes with interpolated normals) is lifted to
wo.z = ``MU_MIN`` (1e-4) keeping its azimuth; Cycles returns black there instead, which would
leave holes at silhouettes. GGX alphas are clamped softly to >= 1e-4 (see
:mod:`pbrfit.microfacet`). A Specular IOR Level of exactly 0 removes the specular layer (as in
Cycles, where the adjusted IOR becomes 1) unless there is a thin film.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .albedo_tables import interp, tables_for
from .microfacet import (
    F0_from_ior,
    dot,
    f82_tint_B,
    filtered_lobe,
    fresnel_dielectric,
    fresnel_dielectric_Fss,
    fresnel_f82,
    fresnel_f82_Fss,
    fresnel_generalized_schlick,
    from_frame,
    ggx_reflection,
    glossy_frame,
    principled_alphas,
    rotation_axes,
    safe_sqrt,
    sample_vndf,
    soft_alpha,
    specular_eta,
    to_frame,
    vndf_reflection_pdf,
)
from .params import PARAMETERS
from .thinfilm import THICKNESS_CUTOFF, gather_rows, thin_film_dielectric, thin_film_f82

__all__ = [
    "MU_MIN",
    "FOOTPRINT",
    "GLOSSY_FRAME",
    "glossy_frames",
    "principled_eval",
    "sample_specular",
    "pdf_specular",
    "sample_coat",
    "pdf_coat",
    "lobe_probabilities",
    "cosine_hemisphere",
    "sample_principled",
    "pdf_principled",
]

MU_MIN = 1e-4
#: a material dict's key, not a parameter: what the pixel filter adds to every GGX lobe's
#: alpha^2 matrix at a first hit, (..., 3) = (kxx, kxy, kyy) in the local frame
#: (:mod:`pbrfit.pixel_filter`); absent: nothing
FOOTPRINT = "pixel_footprint"
#: a material dict's key, not a parameter: where Cycles' glossy closures (coat, metal,
#: specular) shade with a normal bent off the shading normal at grazing views
#: (:func:`pbrfit.microfacet.glossy_frame`), (..., 3, 3) rotations into their frame
#: broadcastable against the directions' batch shape; absent: the shading frame itself
GLOSSY_FRAME = "glossy_frame"
_SHEEN_ROUGHNESS_MIN = 0.01
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)


# --- inputs --------------------------------------------------------------------------------


def _material(m, ref: torch.Tensor) -> dict[str, torch.Tensor]:
    """All parameters as tensors on ref's device/dtype, clamped to Cycles' valid ranges."""
    p = {}
    for name, spec in PARAMETERS.items():
        v = m.get(name)
        if v is None:
            v = torch.tensor(spec.default, dtype=ref.dtype, device=ref.device)
        t = torch.as_tensor(v, dtype=ref.dtype, device=ref.device)
        p[name] = t.reshape(1) if t.dim() == 0 else t
    unit = ("metallic", "roughness", "anisotropic", "coat_roughness", "sheen_roughness",
            "transmission_weight", "subsurface_weight", "base_color", "specular_tint")
    for name in unit:
        p[name] = p[name].clamp(0.0, 1.0)
    for name in ("coat_weight", "sheen_weight", "specular_ior_level", "thin_film_thickness",
                 "coat_tint", "sheen_tint"):
        p[name] = p[name].clamp_min(0.0)
    for name in ("ior", "coat_ior", "thin_film_ior"):
        p[name] = p[name].clamp_min(1.0)
    kernel = m.get(FOOTPRINT)
    p[FOOTPRINT] = None if kernel is None else torch.as_tensor(kernel, dtype=ref.dtype, device=ref.device)
    frame = m.get(GLOSSY_FRAME)
    p[GLOSSY_FRAME] = None if frame is None else torch.as_tensor(frame, dtype=ref.dtype, device=ref.device)
    return p


def glossy_frames(frame: torch.Tensor, normal_geo, wo: torch.Tensor) -> torch.Tensor | None:
    """:data:`GLOSSY_FRAME` of surface points: shading frames ``frame`` (N, 3, 3) (rows
    tangent, bitangent, normal; world), geometric normals ``normal_geo`` (N, 3) world, on the
    viewer's side (array or tensor), views ``wo`` (N, 3) local; None where no normal is bent
    (:func:`pbrfit.microfacet.glossy_frame`)."""
    ng = torch.as_tensor(normal_geo, dtype=frame.dtype, device=frame.device)
    return glossy_frame(torch.einsum("nij,nj->ni", frame, ng), wo)


def _to_glossy(p: dict, v: torch.Tensor) -> torch.Tensor:
    """Directions ``v`` (..., 3) of the shading frame in the glossy lobes' frame (:data:`GLOSSY_FRAME`)."""
    r = p[GLOSSY_FRAME]
    return v if r is None else (r @ v[..., None])[..., 0]


def _from_glossy(p: dict, v: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_to_glossy`."""
    r = p[GLOSSY_FRAME]
    return v if r is None else (r.transpose(-1, -2) @ v[..., None])[..., 0]


def _lobe(own_x, own_y, axes, kernel, rough):
    """A GGX lobe ``(ax, ay, axes, rough, own)`` as :func:`ggx_reflection` and the samplers
    take it: alphas along ``axes`` ((cos, sin) from the local x, None: the local frame), the
    tables' coordinate, and the material's own lobe where the pixel filter widened it at a first
    hit (``kernel``, :data:`FOOTPRINT`; None: not widened, ``own`` None)."""
    if kernel is None:
        return own_x, own_y, axes, rough, None
    ax, ay, widened_axes, widened_rough = filtered_lobe(own_x, own_y, axes, kernel)
    relative = None  # the own lobe's axes seen from the widened lobe's
    if axes is not None:
        (c, s), (cw, sw) = axes, widened_axes
        relative = (c * cw + s * sw, s * cw - c * sw)
    return ax, ay, widened_axes, widened_rough, (own_x, own_y, relative)


def _base_lobe(p: dict):
    """The base GGX lobe (metal and specular), see :func:`_lobe`."""
    ax, ay, rough = principled_alphas(p["roughness"], p["anisotropic"])
    axes = rotation_axes(p["anisotropic_rotation"]) if _active(p["anisotropic"]) else None
    return _lobe(ax, ay, axes, p[FOOTPRINT], rough)


def _coat_lobe(p: dict):
    """The coat's isotropic GGX lobe, see :func:`_lobe`."""
    a = soft_alpha(p["coat_roughness"] ** 2)
    return _lobe(a, a, None, p[FOOTPRINT], p["coat_roughness"])


def _active(t: torch.Tensor, cutoff: float = 0.0) -> bool:
    """Whether a lobe weighted by ``t`` can contribute a value or a gradient."""
    return t.requires_grad or bool((t > cutoff).any())


def _lift_view(wo: torch.Tensor) -> torch.Tensor:
    """Views with z < MU_MIN become unit vectors with z = MU_MIN and the same azimuth."""
    z = wo[..., 2:3]
    xy = wo[..., :2]
    r2 = (xy * xy).sum(-1, keepdim=True)
    xy = torch.where(r2 > 1e-12, xy, torch.cat([torch.ones_like(z), torch.zeros_like(z)], -1))
    s = torch.sqrt((1.0 - MU_MIN * MU_MIN) / (xy * xy).sum(-1, keepdim=True))
    lifted = torch.cat([xy * s, torch.full_like(z, MU_MIN)], -1)
    return torch.where(z < MU_MIN, lifted, wo)


def _batch_ndim(p: dict[str, torch.Tensor]) -> int:
    return max(t.dim() for k, t in p.items() if t is not None and k != GLOSSY_FRAME) - 1


def _max_rgb(a: torch.Tensor) -> torch.Tensor:
    return a.amax(-1, keepdim=True)


_LUT_SIZE = 513


def _per_material(*ts: torch.Tensor) -> bool:
    return all(t.dim() <= 1 for t in ts)


def _cosine_lut(fn, cos: torch.Tensor, per_material: bool) -> torch.Tensor:
    """fn(cos) -> (..., 3). For per-material parameters, fn is tabulated on a uniform grid of
    ``_LUT_SIZE`` cosines (differentiable in the parameters) and interpolated linearly, which
    is much cheaper than evaluating fn per sample; otherwise fn is evaluated directly."""
    if not per_material:
        return fn(cos)
    grid = torch.linspace(0.0, 1.0, _LUT_SIZE, dtype=cos.dtype, device=cos.device)[:, None]
    table = fn(grid)  # (L, 3)
    x = cos.clamp(0.0, 1.0) * (_LUT_SIZE - 1)
    i0 = torch.floor(x.detach()).clamp(0, _LUT_SIZE - 2).long()
    t = x - i0.to(x.dtype)
    lo = gather_rows(table, i0)
    return lo + t * (gather_rows(table, i0 + 1) - lo)


# --- energy compensation and albedo estimates ----------------------------------------------


class _Ggx:
    """Cycles' multiscatter-GGX bookkeeping for one roughness: E(mu), E_avg, compensation."""

    def __init__(self, rough: torch.Tensor, tables: dict[str, torch.Tensor]):
        self.rough = rough
        self.t = tables
        self.E_avg = interp(tables["ggx_Eavg"], [rough])

    def E(self, mu):
        return interp(self.t["ggx_E"], [mu, self.rough])

    def fms(self, fss):
        return fss * self.E_avg / (1.0 - fss * (1.0 - self.E_avg))

    def compensation(self, mu, fss):
        """Factor on the single-scattering lobe, 1 + Fms (1 - E) / E."""
        e = self.E(mu)
        return 1.0 + self.fms(fss) * (1.0 - e) / e

    def ms_lobe(self, mu_o, mu_i, fss):
        """Kulla-Conty multiple-scattering lobe times mu_i (reciprocal variant):
        Fss Fms (1 - E(mu_o)) (1 - E(mu_i)) / (pi (1 - E_avg)) * mu_i."""
        k = fss * self.fms(fss) / (math.pi * (1.0 - self.E_avg).clamp_min(1e-6))
        return k * (1.0 - self.E(mu_o)) * (1.0 - self.E(mu_i)) * mu_i

    def lobe(self, single, mu_o, mu_i, fss, reciprocal: bool):
        """Energy-compensated lobe from the single-scattering one (f * mu_i, with Fresnel)."""
        if reciprocal:
            return single + self.ms_lobe(mu_o, mu_i.clamp_min(MU_MIN), fss)
        return single * self.compensation(mu_o, fss)

    def darkening(self, mu, fss):
        """The factor Cycles leaves on the closure weight: E + Fms (1 - E)."""
        e = self.E(mu)
        return e + self.fms(fss) * (1.0 - e)

    def ior_s(self, mu, eta):
        """Expected generalized-Schlick interpolation factor for real Fresnel of ``eta``."""
        z = safe_sqrt((eta - 1.0) / (eta + 1.0))  # = F0 ** 0.25, finite gradient at eta = 1
        return interp(self.t["ggx_ior_s"], [z, mu, self.rough])


def _hemispherical_mean(fn, ndim: int, ref: torch.Tensor) -> torch.Tensor:
    """2 * int_0^1 mu fn(mu) dmu by 8-point Gauss-Legendre; fn maps (K, 1.., 1) cosines."""
    x = torch.as_tensor(0.5 * (_GL_NODES + 1.0), dtype=ref.dtype, device=ref.device)
    w = torch.as_tensor(0.5 * _GL_WEIGHTS, dtype=ref.dtype, device=ref.device)
    shape = (-1,) + (1,) * (ndim + 1)
    vals = fn(x.reshape(shape))
    return (vals * (2.0 * x * w).reshape(shape)).sum(0)


class _Layer:
    """Attenuation of what lies beneath a layer whose albedo at cosine mu is albedo(mu)."""

    def __init__(self, albedo, mu_o, mu_i, reciprocal: bool, ndim: int):
        a_o = _max_rgb(albedo(mu_o))
        if not reciprocal:
            self.factor = (1.0 - a_o).clamp(0.0, 1.0)
        else:
            a_i = _max_rgb(albedo(mu_i))
            a_avg = _hemispherical_mean(lambda mu: _max_rgb(albedo(mu)), ndim, mu_o)
            self.factor = ((1.0 - a_o).clamp(0.0, 1.0) * (1.0 - a_i).clamp(0.0, 1.0)
                           / (1.0 - a_avg).clamp_min(1e-4))


# --- sheen (Zeltner et al. 2022 LTC, published fits) ----------------------------------------


def _sheen_fit(mu: torch.Tensor, r: torch.Tensor):
    """LTC inverse-matrix entries (a, b) and the directional albedo at view cosine mu."""
    x, y = mu, r
    a = (2.58126 * x + 0.813703 * y) * y / (1.0 + 0.310327 * x * x + 2.60994 * x * y)
    b = safe_sqrt(1.0 - x) * (y - 1.0) * y * y * y / (
        0.0000254053 + 1.71228 * x - 1.71506 * x * y + 1.34174 * y * y)
    s = y * (0.0206607 + 1.58491 * y) / (0.0379424 + y * (1.32227 + y))
    mean = y * (-0.193854 + y * (-1.14885 + y * (1.7932 - 0.95943 * y * y))) / (0.046391 + y)
    off = y * (0.000654023 + (-0.0207818 + 0.119681 * y) * y) / (1.26264 + y * (-1.92021 + y))
    albedo = torch.exp(-0.5 * ((x - mean) / s) ** 2) / (s * math.sqrt(2.0 * math.pi)) + off
    return a, b, albedo.clamp(0.0, 1.0)


def _sheen_ltc_over_cos(view: torch.Tensor, light: torch.Tensor, a: torch.Tensor, b: torch.Tensor):
    """LTC density at ``light`` for a lobe set up at ``view``, divided by light.z (>= 0)."""
    vx, vy = view[..., 0:1], view[..., 1:2]
    n2 = vx * vx + vy * vy
    ok = n2 > 1e-12
    inv = torch.rsqrt(n2.clamp_min(1e-12))
    tx = torch.where(ok, vx * inv, torch.ones_like(vx))
    ty = torch.where(ok, vy * inv, torch.zeros_like(vy))
    lx = light[..., 0:1] * tx + light[..., 1:2] * ty
    ly = light[..., 1:2] * tx - light[..., 0:1] * ty
    lz = light[..., 2:3]
    len2 = (a * lx + b * lz) ** 2 + (a * ly) ** 2 + lz * lz
    val = (a / len2.clamp_min(1e-12)) ** 2 / math.pi
    return torch.where(lz > 0.0, val, torch.zeros_like(val))


# --- the model ------------------------------------------------------------------------------


def principled_eval(m: dict, wo: torch.Tensor, wi: torch.Tensor, *, reciprocal: bool = False,
                    subsurface_transport: bool = False):
    """f(wo, wi) * max(wi.z, 0) of Blender's Principled BSDF, linear Rec.709 RGB.

    Args:
        m: canonical parameter name -> tensor (size,) or (..., size); missing names take
            Blender's defaults.
        wo: (..., 3) unit direction toward the camera, local shading frame.
        wi: (..., 3) unit direction toward the light, local shading frame.
        reciprocal: use the reciprocal variant of the layering (see the module docstring)
            instead of Cycles' view-only form.
        subsurface_transport: the caller transports subsurface light itself (the path
            backend's random walk): the Lambert lobe keeps only ``1 - subsurface_weight``
            of the base, and the subsurface closure's weight is returned too.
    Returns:
        (..., 3); zero where wi.z <= 0. With ``subsurface_transport``: (that, the
        subsurface closure weight (..., 3): ``subsurface_weight * base_color`` times the
        layers above, as Cycles weights its BSSRDF closure).
    """
    p = _material(m, wo)
    tables = tables_for(wo.device, wo.dtype)
    ndim = _batch_ndim(p)
    wo_g, wi_g = _lift_view(_to_glossy(p, wo)), _to_glossy(p, wi)  # the glossy lobes' (GLOSSY_FRAME)
    wo = _lift_view(wo)
    mu_o = wo[..., 2:3]
    mu_i = wi[..., 2:3].clamp_min(0.0)
    mu_i_safe = mu_i.clamp_min(MU_MIN)  # for view-dependent factors evaluated at the light
    above = wi[..., 2:3] > 0.0
    mu_og, mu_ig = wo_g[..., 2:3], wi_g[..., 2:3].clamp_min(0.0)
    mu_ig_safe = mu_ig.clamp_min(MU_MIN)

    out = 0.0
    w = 1.0  # weight of everything below the current layer (RGB where tinted)

    # 1. sheen
    sheen_w = p["sheen_weight"]
    if _active(sheen_w):
        r = p["sheen_roughness"].clamp_min(_SHEEN_ROUGHNESS_MIN)
        tint = sheen_w * p["sheen_tint"]
        a_o, b_o, alb_o = _sheen_fit(mu_o, r)
        lobe = alb_o * _sheen_ltc_over_cos(wo, wi, a_o, b_o) * mu_i
        if reciprocal:
            a_i, b_i, alb_i = _sheen_fit(mu_i_safe, r)
            back = alb_i * _sheen_ltc_over_cos(wi, wo, a_i, b_i) * mu_i
            lobe = 0.5 * (lobe + torch.where(above, back, torch.zeros_like(back)))
        out = out + tint * lobe
        layer = _Layer(lambda mu: tint * _sheen_fit(mu, r)[2], mu_o, mu_i_safe, reciprocal, ndim)
        w = w * layer.factor

    # 2. coat
    coat_w = p["coat_weight"]
    if _active(coat_w):
        acx, acy, axes, rc, own = _coat_lobe(p)
        val, cos_h = ggx_reflection(to_frame(wo_g, axes), to_frame(wi_g, axes), acx, acy, own)
        coat_ior = p["coat_ior"]
        ggx_c = _Ggx(rc, tables)
        fss = fresnel_dielectric_Fss(coat_ior)
        single = fresnel_dielectric(cos_h, coat_ior) * val
        out = out + w * coat_w * ggx_c.lobe(single, mu_og, mu_ig, fss, reciprocal)
        f0c = F0_from_ior(coat_ior)

        def coat_albedo(mu):
            est = f0c + (1.0 - f0c) * ggx_c.ior_s(mu, coat_ior)
            return coat_w * ggx_c.darkening(mu, fss) * est

        w = w * _Layer(coat_albedo, mu_og, mu_ig_safe, reciprocal, ndim).factor
        coat_tint = p["coat_tint"]
        if _active(1.0 - coat_tint) or coat_tint.requires_grad:
            inv_eta2 = 1.0 / (coat_ior * coat_ior)

            def path(mu):
                return torch.rsqrt(1.0 - inv_eta2 * (1.0 - mu * mu))

            depth = path(mu_og) if not reciprocal else 0.5 * (path(mu_og) + path(mu_ig_safe))
            absorb = torch.pow(coat_tint.clamp_min(1e-6), depth)
            w = w * (1.0 + coat_w * (absorb - 1.0))

    # shared GGX geometry of the base lobes (metal and specular)
    ax, ay, axes, rough, own = _base_lobe(p)
    val, cos_h = ggx_reflection(to_frame(wo_g, axes), to_frame(wi_g, axes), ax, ay, own)
    ggx = _Ggx(rough, tables)
    thick = p["thin_film_thickness"]
    film = _active(thick, THICKNESS_CUTOFF)
    has_film = thick > THICKNESS_CUTOFF

    # 3. metal
    metallic = p["metallic"]
    if _active(metallic):
        f0 = p["base_color"]
        b = f82_tint_B(f0, p["specular_tint"])
        fm = fresnel_f82(cos_h, f0, b)
        if film:
            per_mat = _per_material(thick, p["thin_film_ior"], f0, b)
            fm_film = _cosine_lut(lambda c: thin_film_f82(c, thick, p["thin_film_ior"], f0, b), cos_h, per_mat)
            fm = torch.where(has_film, fm_film, fm)
        out = out + w * metallic * ggx.lobe(fm * val, mu_og, mu_ig, fresnel_f82_Fss(f0, b), reciprocal)
        w = w * (1.0 - metallic)

    # 4./5. specular (also standing in for the transmission lobe's reflection)
    ior, level, spec_tint = p["ior"], p["specular_ior_level"], p["specular_tint"]
    eta = specular_eta(ior, level)
    f0s = (F0_from_ior(ior) * 2.0 * level * spec_tint).clamp(0.0, 1.0)
    f0_real = F0_from_ior(eta)

    def film_scaled(cos):
        f = thin_film_dielectric(cos, thick, p["thin_film_ior"], eta)
        ok = f0_real > 1e-5
        f0r = torch.where(ok, f0_real, torch.full_like(f0_real, 0.5))  # unused where not ok
        s = ((f - 1.0) / (f0r - 1.0)).clamp(0.0, 1.0)
        scaled = f * (1.0 + s * (f0s / f0r - 1.0))
        return torch.where(ok, scaled, f)

    # Cycles drops the specular closure when the adjusted IOR is exactly 1 (level 0) and
    # there is no film; mask it so that a level of 0 is exactly a bare base
    spec_on = (level > 0.0) | has_film
    f0s = torch.where(spec_on, f0s, torch.zeros_like(f0s))
    fs = fresnel_generalized_schlick(cos_h, eta, f0s)
    fs = torch.where(spec_on, fs, torch.zeros_like(fs))
    if film:
        per_mat = _per_material(thick, p["thin_film_ior"], eta, f0s)
        fs = torch.where(has_film, _cosine_lut(film_scaled, cos_h, per_mat), fs)
    s_fss = ((fresnel_dielectric_Fss(eta) - f0_real) / (1.0 - f0_real)).clamp(0.0, 1.0)
    fss = f0s + (1.0 - f0s) * s_fss
    out = out + w * ggx.lobe(fs * val, mu_og, mu_ig, fss, reciprocal)

    def spec_albedo(mu):
        est = f0s + (1.0 - f0s) * ggx.ior_s(mu, eta)
        if film:
            est = torch.where(has_film, _cosine_lut(film_scaled, mu, per_mat and mu.numel() > _LUT_SIZE), est)
        return torch.where(spec_on, ggx.darkening(mu, fss) * est, torch.zeros_like(est))

    w = w * (1.0 - p["transmission_weight"]) * _Layer(spec_albedo, mu_og, mu_ig_safe, reciprocal, ndim).factor

    # 6. diffuse (and subsurface, rendered as the same Lambert lobe unless transported)
    base = w * p["base_color"]
    if subsurface_transport:
        sss = base * p["subsurface_weight"]
        out = out + (base - sss) * (mu_i / math.pi)
        out = torch.where(above, out, torch.zeros_like(out))
        return out, sss.expand_as(out) if sss.shape != out.shape else sss
    out = out + base * (mu_i / math.pi)
    out = torch.where(above, out, torch.zeros_like(out))
    return out


# --- importance sampling --------------------------------------------------------------------


def _spec_frame(m, wo):
    p = _material(m, wo)
    ax, ay, axes, _, _ = _base_lobe(p)
    return p, _lift_view(_to_glossy(p, wo)), ax, ay, axes


def _sample(p, wo, ax, ay, axes, u):
    """A direction from a glossy lobe (in the shading frame) and its density; ``wo`` in the
    glossy lobes' frame (:data:`GLOSSY_FRAME`), a rotation of which keeps densities."""
    wo_l = to_frame(wo, axes)
    h = sample_vndf(wo_l, ax, ay, u)
    wi_l = 2.0 * dot(wo_l, h) * h - wo_l
    pdf = vndf_reflection_pdf(wo_l, wi_l, ax, ay)
    return _from_glossy(p, from_frame(wi_l, axes)), pdf.squeeze(-1)


def _pdf(p, wo, wi, ax, ay, axes):
    return vndf_reflection_pdf(to_frame(wo, axes), to_frame(_to_glossy(p, wi), axes), ax, ay).squeeze(-1)


def sample_specular(m: dict, wo: torch.Tensor, u: torch.Tensor):
    """Sample the base specular (and metal) GGX lobe by its visible normals (Heitz 2018).

    Args:
        m: material (see :func:`principled_eval`); roughness, anisotropic and
            anisotropic_rotation are used.
        wo: (..., 3) view direction, local frame (lifted above the horizon like in eval).
        u: (..., 2) uniforms in [0, 1).
    Returns:
        (wi, pdf): wi (..., 3) unit direction (may point below the horizon, where the BSDF is
        zero); pdf (...) solid-angle density of wi. Both differentiable w.r.t. the roughness
        parameters through the sampling map.
    """
    return _sample(*_spec_frame(m, wo), u)


def pdf_specular(m: dict, wo: torch.Tensor, wi: torch.Tensor) -> torch.Tensor:
    """Solid-angle density with which :func:`sample_specular` produces ``wi``, shape (...)."""
    p, wo, ax, ay, axes = _spec_frame(m, wo)
    return _pdf(p, wo, wi, ax, ay, axes)


def _coat_frame(m, wo):
    p = _material(m, wo)
    ax, ay, axes, _, _ = _coat_lobe(p)
    return p, _lift_view(_to_glossy(p, wo)), ax, ay, axes


def sample_coat(m: dict, wo: torch.Tensor, u: torch.Tensor):
    """Sample the coat's GGX lobe (isotropic but where the pixel filter widens it); same
    conventions as :func:`sample_specular`."""
    return _sample(*_coat_frame(m, wo), u)


def pdf_coat(m: dict, wo: torch.Tensor, wi: torch.Tensor) -> torch.Tensor:
    """Solid-angle density of :func:`sample_coat`, shape (...)."""
    p, wo, ax, ay, axes = _coat_frame(m, wo)
    return _pdf(p, wo, wi, ax, ay, axes)


# --- one-sample lobe selection (the path backend) -------------------------------------------


def lobe_probabilities(m: dict, ref: torch.Tensor) -> torch.Tensor:
    """Probabilities (..., 3) of sampling the diffuse (cosine), base specular (GGX) and coat
    (GGX) lobes, from a rough estimate of each lobe's share of the reflected energy.

    Any choice with every contributing lobe > 0 is unbiased; this one only shapes the noise.
    Computed without gradient (sampling is detached in the path backend).
    """
    with torch.no_grad():
        p = _material(m, ref)
        metallic = p["metallic"]
        luma = (p["base_color"] * p["base_color"].new_tensor([0.2126, 0.7152, 0.0722])).sum(-1, keepdim=True)
        diffuse = (1 - metallic) * (1 - p["transmission_weight"]) * (luma.clamp_min(0.05) + 0.5 * p["sheen_weight"])
        specular = metallic + (1 - metallic) * 0.25 * (p["specular_ior_level"] * 2).clamp(0.0, 1.0)
        specular = torch.maximum(specular, (p["thin_film_thickness"] > THICKNESS_CUTOFF).to(specular) * 0.25)
        coat = 0.25 * p["coat_weight"].clamp(0.0, 1.0)
        w = torch.cat(torch.broadcast_tensors(diffuse, specular, coat), -1)
        w = torch.where(w > 0, w.clamp_min(0.05), w)
        return w / w.sum(-1, keepdim=True).clamp_min(1e-12)


def cosine_hemisphere(u: torch.Tensor) -> torch.Tensor:
    """Cosine-distributed directions about +z from uniforms u (..., 2); pdf = z / pi."""
    r, phi = torch.sqrt(u[..., 0]), 2 * math.pi * u[..., 1]
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), torch.sqrt((1 - u[..., 0]).clamp_min(0))], -1)


def sample_principled(m: dict, wo: torch.Tensor, u_lobe: torch.Tensor, u: torch.Tensor):
    """Sample a direction from the mixture of the Principled BSDF's lobes.

    Args:
        m: material (see :func:`principled_eval`).
        wo: (..., 3) view direction, local frame.
        u_lobe: (...) uniform picking the lobe; u: (..., 2) uniforms for the direction.
    Returns:
        (wi, pdf): direction (..., 3) and its density under the whole mixture
        (:func:`pdf_principled`), shape (...). Not differentiable (detached sampling).
    """
    with torch.no_grad():
        probs = lobe_probabilities(m, wo).expand(*wo.shape[:-1], 3)
        cdf = torch.cumsum(probs, -1)
        lobe = (u_lobe[..., None] >= cdf[..., :2]).sum(-1)
        wi = cosine_hemisphere(u)
        if bool((lobe == 1).any()):
            wi = torch.where((lobe == 1)[..., None], sample_specular(m, wo, u)[0], wi)
        if bool((lobe == 2).any()):
            wi = torch.where((lobe == 2)[..., None], sample_coat(m, wo, u)[0], wi)
        return wi, pdf_principled(m, wo, wi, probs)


def pdf_principled(m: dict, wo: torch.Tensor, wi: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
    """Solid-angle density (...) of :func:`sample_principled` producing ``wi``."""
    with torch.no_grad():
        if probs is None:
            probs = lobe_probabilities(m, wo).expand(*wo.shape[:-1], 3)
        pdf = probs[..., 0] * wi[..., 2].clamp_min(0) / math.pi
        if bool((probs[..., 1] > 0).any()):
            pdf = pdf + probs[..., 1] * pdf_specular(m, wo, wi)
        if bool((probs[..., 2] > 0).any()):
            pdf = pdf + probs[..., 2] * pdf_coat(m, wo, wi)
        return pdf
