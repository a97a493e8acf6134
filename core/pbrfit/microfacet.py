"""GGX microfacet reflection and the Fresnel terms of Blender 5.0's Principled BSDF.

Everything here follows Cycles' kernel (``kernel/closure/bsdf_microfacet.h`` and
``bsdf_util.h``), re-derived, not copied:

* Directions are unit vectors in a local frame, +z = normal. Tensors are (..., 3); scalar
  quantities keep a trailing dimension of 1 (shape (..., 1)) so they broadcast against RGB
  (..., 3) and against material parameters of shape (..., size).
* GGX (Trowbridge-Reitz) with the anisotropic, height-correlated Smith masking-shadowing
  term ``G2 = 1 / (1 + Lambda(wo) + Lambda(wi))``. Alpha is ``roughness**2``; Blender's
  anisotropy maps ``aspect = sqrt(1 - 0.9 * anisotropic)``, ``alpha_x = alpha / aspect`` along
  the (rotated) tangent and ``alpha_y = alpha * aspect``. Anisotropic rotation is a fraction
  of a full turn, counter-clockwise about +z from +x toward +y (Cycles'
  ``rotate_around_axis(T, N, 2*pi*rotation)``).
* Cycles treats ``alpha_x * alpha_y <= 2e-10`` as a perfect mirror (a delta lobe that can only
  be sampled). A delta cannot be evaluated, so alphas are softly clamped from below:
  ``alpha' = sqrt(alpha**2 + ALPHA_MIN**2)`` with ``ALPHA_MIN = 1e-4`` (roughness 0.01);
  at Blender's default Coat Roughness 0.03 (alpha 9e-4) the change is 0.6 %, above roughness
  0.05 below 0.1 %. The gradient stays finite at roughness 0. Renderers that evaluate such
  near-mirror lobes at discrete directions must filter or sample them themselves.
* Fresnel: exact unpolarized dielectric Fresnel; Cycles' "generalized Schlick" remap used by
  the Principled specular layer (the real Fresnel curve rescaled from F0_real..1 to
  F0..1); the F82-tint metal model of Kutz et al. (Adobe Standard Material) as Cycles
  implements it; the Kulla-Conty fits of the average single-scattering Fresnel ``Fss``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "ALPHA_MIN",
    "dot",
    "normalize",
    "safe_sqrt",
    "soft_alpha",
    "principled_alphas",
    "filtered_lobe",
    "rotation_axes",
    "to_frame",
    "from_frame",
    "ggx_D",
    "filtered_ggx_D",
    "ggx_lambda",
    "ggx_G1",
    "ggx_reflection",
    "sample_vndf",
    "valid_specular_normal",
    "glossy_frame",
    "vndf_reflection_pdf",
    "F0_from_ior",
    "ior_from_sqrt_F0",
    "fresnel_dielectric",
    "fresnel_dielectric_Fss",
    "fresnel_generalized_schlick",
    "f82_tint_B",
    "fresnel_f82",
    "fresnel_f82_Fss",
]

ALPHA_MIN = 1e-4
_TINY = 1e-12


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot product over the last axis, keeping it: (..., 3) x (..., 3) -> (..., 1)."""
    return (a * b).sum(-1, keepdim=True)


def normalize(v: torch.Tensor) -> torch.Tensor:
    """Unit vector along ``v`` (zero vectors stay finite)."""
    return v * torch.rsqrt((v * v).sum(-1, keepdim=True).clamp_min(1e-30))


def safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt with a finite gradient at and below 0."""
    return torch.sqrt(x.clamp_min(_TINY))


def soft_alpha(alpha: torch.Tensor) -> torch.Tensor:
    """Smooth lower bound ``sqrt(alpha**2 + ALPHA_MIN**2)`` on a GGX alpha (see module doc)."""
    return torch.sqrt(alpha * alpha + ALPHA_MIN * ALPHA_MIN)


def principled_alphas(roughness: torch.Tensor, anisotropic: torch.Tensor):
    """Blender's GGX alphas from perceptual Roughness and Anisotropic, both in [0, 1].

    Cycles saturates each alpha to [0, 1] (``bsdf_microfacet_ggx_setup``), so alpha_x =
    min(r**2 / aspect, 1).

    Returns:
        (alpha_x, alpha_y, rough): soft-clamped alphas, alpha_x along the rotated tangent, and
        ``rough = (alpha_x * alpha_y) ** 0.25`` of the unclamped-from-below alphas, the
        coordinate of Cycles' albedo tables (equal to ``roughness`` unless alpha_x saturates).
        All (..., 1).
    """
    alpha = roughness * roughness
    aspect = torch.sqrt(1.0 - 0.9 * anisotropic)
    ax = alpha / aspect
    saturated = ax > 1.0
    # rough**4 = min(ax, 1) * ay = alpha**2 * min(1, aspect / alpha)
    ratio = torch.where(saturated, aspect / torch.where(saturated, alpha, torch.ones_like(alpha)),
                        torch.ones_like(alpha))
    rough = roughness * torch.sqrt(torch.sqrt(ratio))
    return soft_alpha(ax.clamp(max=1.0)), soft_alpha(alpha * aspect), rough


def filtered_lobe(ax: torch.Tensor, ay: torch.Tensor, axes, kernel: torch.Tensor):
    """A GGX lobe widened by the pixel filter at a first hit (:mod:`pbrfit.pixel_filter`).

    The lobe's slopes have (Beckmann-equivalent) covariance ``M / 2`` with ``M = R diag(ax^2,
    ay^2) R^T`` in the local frame; the filter's spread of normals adds ``kernel / 2``. The
    sum's principal axes are the widened lobe's frame and the roots of its eigenvalues its
    alphas (saturated to 1 as Cycles saturates alphas): a fold widens the lobe across the fold
    only.

    Args:
        ax, ay: the lobe's own alphas (..., 1) along ``axes``.
        axes: (cos, sin) of the angle of the lobe's x axis from the local x, or None (the
            local frame: an isotropic lobe, or one not rotated).
        kernel: (..., 3) ``(kxx, kxy, kyy)``, what the filter adds to the alpha^2 matrix in the
            local frame (:func:`pbrfit.pixel_filter.footprint`).

    Returns:
        ``(ax', ay', (cos', sin'), rough)``: the widened alphas along their frame (same
        conventions) and ``rough = (ax' ay') ** 0.25``, the coordinate of the albedo tables.
    """
    a2, b2 = ax * ax, ay * ay
    kxx, kxy, kyy = kernel[..., 0:1], kernel[..., 1:2], kernel[..., 2:3]
    if axes is None:
        mxx, mxy, myy = a2 + kxx, kxy, b2 + kyy
    else:
        c, s = axes
        mxx = c * c * a2 + s * s * b2 + kxx
        myy = s * s * a2 + c * c * b2 + kyy
        mxy = c * s * (a2 - b2) + kxy
    half, mean = 0.5 * (mxx - myy), 0.5 * (mxx + myy)
    # the eigenvalues' half gap, kept off zero (relative 1e-5) so that the axes' gradient stays
    # finite where the sum is isotropic (there the axes do not change the lobe)
    d = torch.sqrt(half * half + mxy * mxy + (1e-5 * mean) ** 2)
    major, minor = mean + d, (mean - d).clamp_min(ALPHA_MIN * ALPHA_MIN)
    # the major axis, from whichever row of (M - major I) is not degenerate
    vx = torch.where(half >= 0, half + d, mxy)
    vy = torch.where(half >= 0, mxy, d - half)
    norm = torch.rsqrt((vx * vx + vy * vy).clamp_min(1e-30))
    ax_w, ay_w = torch.sqrt(major).clamp(max=1.0), torch.sqrt(minor).clamp(max=1.0)
    return ax_w, ay_w, (vx * norm, vy * norm), torch.sqrt(torch.sqrt(ax_w * ay_w))


def rotation_axes(rotation: torch.Tensor):
    """(cos, sin) of ``rotation`` turns, the axes argument of :func:`to_frame`."""
    theta = (2.0 * math.pi) * rotation
    return torch.cos(theta), torch.sin(theta)


def to_frame(v: torch.Tensor, axes) -> torch.Tensor:
    """Local-frame vector -> the frame whose x axis is at angle (cos, sin) = ``axes`` from the
    local x, counter-clockwise about +z (None: unchanged)."""
    if axes is None:
        return v
    c, s = axes
    x, y, z = v[..., 0:1], v[..., 1:2], v[..., 2:3]
    return torch.cat(torch.broadcast_tensors(c * x + s * y, c * y - s * x, z), -1)


def from_frame(v: torch.Tensor, axes) -> torch.Tensor:
    """Inverse of :func:`to_frame`."""
    if axes is None:
        return v
    c, s = axes
    x, y, z = v[..., 0:1], v[..., 1:2], v[..., 2:3]
    return torch.cat(torch.broadcast_tensors(c * x - s * y, s * x + c * y, z), -1)


def ggx_D(h: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor) -> torch.Tensor:
    """Anisotropic GGX normal distribution D(h) (per steradian), h in the aniso frame."""
    hx = h[..., 0:1] / ax
    hy = h[..., 1:2] / ay
    hz = h[..., 2:3]
    l2 = hx * hx + hy * hy + hz * hz
    return 1.0 / (math.pi * ax * ay * l2 * l2)


#: the light-tailed core of a filtered lobe (:func:`filtered_ggx_D`) has alpha^2 this many
#: times the widened GGX's, which gives it the same peak
_CORE_ALPHA2 = 3.0


def filtered_ggx_D(h: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor,
                   ax_own: torch.Tensor, ay_own: torch.Tensor, own_axes=None) -> torch.Tensor:
    """D(h) of a GGX lobe seen through the pixel filter (:mod:`pbrfit.pixel_filter`), aniso frame.

    Averaging a GGX lobe over the pixel's spread of normals (a Gaussian in slope space) widens
    its core but leaves its far tails as they were (slope density ``1 / (pi ax ay q^2)``, q =
    sx^2/ax^2 + sy^2/ay^2); the GGX widened to alphas (ax, ay) widens the tails too, by
    ``(ax ay) / (ax_own ay_own)`` and more, which brightens every pixel lit through a tail
    (measured on Suzanne: up to 15% on gold's dim pixels). This keeps the widened core and
    the lobe's own tails: a weight w times the widened GGX plus ``1 - w`` times a light-tailed
    core of the same ellipse (a 2-D Student t of 3 degrees of freedom, slope density
    ``3 / (pi bx by (1 + q_b)^4)``, tails falling as s^-8) with ``b^2 = 3 alpha^2``, so that the
    mixture's peak is the widened GGX's. w, per direction of the slope, is the own tail over
    the widened one, clamped to [0, 1] (where the filter widens a narrow axis much more than a
    wide one the widened tail along the wide axis is lighter than the own: kept as it is).
    Both parts put the same mass in every direction (the same ellipse), so the lobe's energy
    is unchanged.

    Args:
        h: the half vector in the widened lobe's frame (:func:`filtered_lobe`).
        ax, ay: the widened alphas; ax_own, ay_own: the material's own (unfiltered), along
            ``own_axes`` ((cos, sin) of their angle from the widened frame's x; None: the same).
    """
    hz = h[..., 2:3]
    hx2, hy2 = h[..., 0:1] ** 2, h[..., 1:2] ** 2
    h_own = to_frame(h, own_axes)
    q_own = h_own[..., 0:1] ** 2 / (ax_own * ax_own) + h_own[..., 1:2] ** 2 / (ay_own * ay_own)
    q = hx2 / (ax * ax) + hy2 / (ay * ay)
    tiny = 1e-12 * (hx2 + hy2 + hz * hz)
    ratio = (q + tiny) / (q_own + tiny)
    weight = ((ax * ay) / (ax_own * ay_own) * ratio * ratio).clamp(0.0, 1.0)
    bx2, by2 = _CORE_ALPHA2 * ax * ax, _CORE_ALPHA2 * ay * ay
    l2 = hx2 / bx2 + hy2 / by2 + hz * hz
    hz2 = hz * hz
    core = 3.0 * hz2 * hz2 / (math.pi * torch.sqrt(bx2 * by2) * (l2 * l2) * (l2 * l2))
    return weight * ggx_D(h, ax, ay) + (1.0 - weight) * core


def ggx_lambda(v: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor) -> torch.Tensor:
    """Smith Lambda for GGX; v in the aniso frame with v.z > 0."""
    vz2 = (v[..., 2:3] * v[..., 2:3]).clamp_min(_TINY)
    t = ((ax * v[..., 0:1]) ** 2 + (ay * v[..., 1:2]) ** 2) / vz2
    return 0.5 * (torch.sqrt(1.0 + t) - 1.0)


def ggx_G1(v: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor) -> torch.Tensor:
    """Smith masking G1(v) = 1 / (1 + Lambda(v))."""
    return 1.0 / (1.0 + ggx_lambda(v, ax, ay))


def ggx_reflection(wo: torch.Tensor, wi: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor,
                   own: tuple | None = None):
    """Fresnel-free GGX reflection in the aniso frame.

    Args:
        wo: view direction, wo.z > 0 required (callers clamp it).
        wi: light direction.
        own: None for a plain GGX lobe; at a first hit whose alphas the pixel filter widened
            to (ax, ay), ``(ax_own, ay_own, own_axes)`` of the material's own lobe, whose tails
            the lobe keeps (:func:`filtered_ggx_D`). Masking stays the widened GGX's, and so does sampling
            (:func:`sample_vndf`).
    Returns:
        (value, cos_hi): value = D * G2 / (4 * wo.z) = f * max(wi.z, 0) without Fresnel (zero
        for wi.z <= 0); cos_hi = dot(h, wi) = dot(h, wo), the Fresnel cosine. Both (..., 1).
    """
    h = normalize(wo + wi)
    mu_o = wo[..., 2:3]
    above = wi[..., 2:3] > 0.0
    wi_safe = torch.where(above, wi, wo)  # keeps Lambda finite where the value is masked
    g2 = 1.0 / (1.0 + ggx_lambda(wo, ax, ay) + ggx_lambda(wi_safe, ax, ay))
    d = ggx_D(h, ax, ay) if own is None else filtered_ggx_D(h, ax, ay, *own)
    value = d * g2 / (4.0 * mu_o)
    value = torch.where(above, value, torch.zeros_like(value))
    return value, dot(h, wo).clamp(0.0, 1.0)


def _unit(v: torch.Tensor) -> torch.Tensor:
    """``v`` normalized along the last axis, with a finite gradient at zero."""
    return v * torch.rsqrt((v * v).sum(-1, keepdim=True) + 1e-16)


def _sqrt0(x: torch.Tensor) -> torch.Tensor:
    """sqrt with a finite gradient at 0."""
    return torch.sqrt(x.clamp_min(0.0) + 1e-12)


def valid_specular_normal(ng: torch.Tensor, wo: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Cycles' ``ensure_valid_specular_reflection``: the shading normal its glossy closures use.

    A shading normal ``n`` that differs from the geometric normal ``ng`` (interpolated across a
    smooth-shaded mesh, or from a normal map) can mirror a grazing view ``wo`` below the
    surface. Cycles (with the material's Bump Map Correction, on by default) then tilts it
    toward ``ng``, within their plane, until the mirrored view leaves the surface at an
    elevation cosine of ``min(0.9 wo.ng, 0.01)``; where the mirrored view is above that already
    ``n`` is kept. All (N, 3) unit vectors in one frame; ``ng`` on the viewer's side."""
    iz = (wo * ng).sum(-1, keepdim=True).clamp_min(0.0)
    r_z = 2.0 * (n * wo).sum(-1, keepdim=True) * (n * ng).sum(-1, keepdim=True) - iz
    threshold = torch.minimum(0.9 * iz, torch.full_like(iz, 0.01))
    x = _unit(n - (n * ng).sum(-1, keepdim=True) * ng)
    ix = (wo * x).sum(-1, keepdim=True)
    a = (ix * ix + iz * iz).clamp_min(1e-12)
    b = 2.0 * (a + iz * threshold)
    c = (threshold + iz) ** 2
    root = _sqrt0(b * b - 4.0 * a * c)
    nz2 = torch.where(ix < 0, 0.25 * (b + root) / a, 0.25 * (b - root) / a).clamp(0.0, 1.0)
    bent = x * _sqrt0(1.0 - nz2) + ng * _sqrt0(nz2)
    return torch.where(r_z >= threshold, n, bent)


def glossy_frame(ng: torch.Tensor, wo: torch.Tensor) -> torch.Tensor | None:
    """Where Cycles' glossy closures shade with another normal than the shading frame's.

    Args:
        ng: (N, 3) the geometric normal in the local shading frame (+z the interpolated
            shading normal), on the viewer's side.
        wo: (N, 3) the view, local.
    Returns:
        None where no point's normal is bent (:func:`valid_specular_normal`), else (N, 3, 3)
        rotations whose rows are the glossy lobes' tangent, bitangent and normal in the local
        frame: the bent normal, and the local tangent made orthogonal to it (the identity
        where nothing is bent). Diffuse and sheen keep the shading normal, as in Cycles.
    """
    z = torch.zeros_like(wo)
    z[:, 2] = 1.0
    bent = valid_specular_normal(ng, wo, z)
    moved = bent[:, 2] < 1.0 - 1e-7
    if not bool(moved.any()):
        return None
    ex = torch.zeros_like(bent)
    ex[:, 0] = 1.0
    t = _unit(ex - bent * bent[:, 0:1])
    return torch.stack([t, torch.cross(bent, t, dim=-1), bent], 1)


def sample_vndf(wo: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Sample a GGX visible normal (Heitz 2018, JCGT 7(4)), aniso frame.

    Args:
        wo: view direction (..., 3) with wo.z > 0.
        u: (..., 2) uniforms in [0, 1). Uses the polar disk map, smooth in u and alpha, so
            samples are differentiable with respect to alpha (reparameterization).
    Returns:
        the microfacet normal h (..., 3).
    """
    vh = normalize(torch.cat(torch.broadcast_tensors(ax * wo[..., 0:1], ay * wo[..., 1:2], wo[..., 2:3]), -1))
    vx, vy, vz = vh[..., 0:1], vh[..., 1:2], vh[..., 2:3]
    lensq = vx * vx + vy * vy
    inv = torch.rsqrt(lensq.clamp_min(_TINY))
    ok = lensq > 1e-7
    t1x = torch.where(ok, -vy * inv, torch.ones_like(vx))
    t1y = torch.where(ok, vx * inv, torch.zeros_like(vx))
    # T2 = cross(vh, T1) with T1 = (t1x, t1y, 0)
    t2x, t2y, t2z = -vz * t1y, vz * t1x, vx * t1y - vy * t1x
    r = torch.sqrt(u[..., 0:1])
    phi = (2.0 * math.pi) * u[..., 1:2]
    p1 = r * torch.cos(phi)
    p2 = r * torch.sin(phi)
    s = 0.5 * (1.0 + vz)
    p2 = (1.0 - s) * safe_sqrt(1.0 - p1 * p1) + s * p2
    pz = safe_sqrt(1.0 - p1 * p1 - p2 * p2)
    nx = p1 * t1x + p2 * t2x + pz * vx
    ny = p1 * t1y + p2 * t2y + pz * vy
    nz = p2 * t2z + pz * vz
    return normalize(torch.cat(torch.broadcast_tensors(ax * nx, ay * ny, nz.clamp_min(1e-6)), -1))


def vndf_reflection_pdf(wo: torch.Tensor, wi: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor) -> torch.Tensor:
    """Solid-angle density of wi = reflect(wo, h) with h from :func:`sample_vndf`.

    pdf = D(h) * G1(wo) / (4 * wo.z), zero where h or dot(wo, h) is not positive. Defined
    for wi below the horizon too (the sampler produces such directions).
    """
    h = normalize(wo + wi)
    valid = (h[..., 2:3] > 0.0) & (dot(wo, h) > 0.0)
    pdf = ggx_D(h, ax, ay) * ggx_G1(wo, ax, ay) / (4.0 * wo[..., 2:3])
    return torch.where(valid, pdf, torch.zeros_like(pdf))


# --- Fresnel -----------------------------------------------------------------------------


def F0_from_ior(eta: torch.Tensor) -> torch.Tensor:
    """Normal-incidence reflectance ((eta - 1) / (eta + 1))**2."""
    return ((eta - 1.0) / (eta + 1.0)) ** 2


def ior_from_sqrt_F0(sqrt_f0: torch.Tensor) -> torch.Tensor:
    """Cycles' ``ior_from_F0`` written in sqrt(F0), which is clamped to sqrt(0.99)."""
    s = sqrt_f0.clamp(0.0, math.sqrt(0.99))
    return (1.0 + s) / (1.0 - s)


def specular_eta(ior: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """The IOR Cycles' Principled BSDF gives its dielectric specular lobe and its subsurface
    entry: ``ior_from_F0(2 * level * F0(ior))`` ("Apply IOR adjustment" in ``svm/closure.h``;
    level 0.5 leaves ``ior``). For ior >= 1, pbrfit's IOR bounds (Cycles inverts it below 1)."""
    return ior_from_sqrt_F0(((ior - 1.0) / (ior + 1.0)) * safe_sqrt(2.0 * level))


def fresnel_dielectric(cos_i: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    """Unpolarized Fresnel reflectance from the outside of a dielectric with relative IOR
    eta >= 1 (no total internal reflection)."""
    c = cos_i.abs()
    g = safe_sqrt(eta * eta - 1.0 + c * c)
    a = (g - c) / (g + c).clamp_min(_TINY)
    b = (c * (g + c) - 1.0) / (c * (g - c) + 1.0)
    return (0.5 * a * a * (1.0 + b * b)).clamp(0.0, 1.0)


def fresnel_dielectric_Fss(eta: torch.Tensor) -> torch.Tensor:
    """Kulla-Conty fit of the cosine-weighted average dielectric Fresnel, eta >= 1."""
    return (eta - 1.0) / (4.08567 + 1.00071 * eta)


def fresnel_generalized_schlick(cos_i: torch.Tensor, eta: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
    """Principled specular Fresnel (Cycles' generalized Schlick with a negative exponent):
    the real dielectric curve for ``eta`` remapped from F0_real..1 to f0..1 (f90 = 1)."""
    f_real = fresnel_dielectric(cos_i, eta)
    f0_real = F0_from_ior(eta)
    s = ((f_real - f0_real) / (1.0 - f0_real).clamp_min(1e-6)).clamp(0.0, 1.0)
    return f0 + (1.0 - f0) * s


_F82_COS = 1.0 / 7.0  # cos(~82 deg), where the F82 model is pinned


def f82_tint_B(f0: torch.Tensor, tint: torch.Tensor) -> torch.Tensor:
    """Cycles' ``fresnel_f82tint_B``: the b term making F(acos(1/7)) = Schlick * tint."""
    f = 6.0 / 7.0
    f5 = f**5
    schlick = f0 + (1.0 - f0) * f5
    return schlick * (7.0 / (f5 * f)) * (1.0 - tint)


def fresnel_f82(cos_i: torch.Tensor, f0: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """F82-tint metal Fresnel: saturate(Schlick(f0) - b * cos * (1 - cos)**6)."""
    s = (1.0 - cos_i).clamp(0.0, 1.0)
    s5 = s**5
    return (f0 + (1.0 - f0) * s5 - b * cos_i * s5 * s).clamp(0.0, 1.0)


def fresnel_f82_Fss(f0: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Average single-scattering Fresnel of the F82 model (exact for its polynomial)."""
    return f0 + (1.0 - f0) / 21.0 - b / 126.0
