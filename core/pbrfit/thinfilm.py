"""Thin-film interference on a Fresnel interface (Blender 4.2+ Thin Film Thickness / IOR).

Follows Cycles' ``fresnel_iridescence`` (Belcour & Barla 2017, "A Practical Extension to
Microfacet Theory for the Modeling of Varying Iridescence"), re-derived:

* Ambient IOR 1, a film of thickness ``d`` (nm) and IOR ``n_f`` over a substrate (a dielectric
  of relative IOR ``eta`` >= 1, or a conductor n + ik). For each polarization, with signed
  amplitudes r12 (ambient->film) and r23 (film->substrate), energies R = r**2, T = 1 - R12 and
  the optical path difference OPD = 2 n_f d cos(theta_film), the Airy reflectance is the
  Fourier series in the phase delta = 2 pi OPD / lambda

      R(delta) = C0 + 2 sum_{m>=1} Re(C_m exp(i m delta)),
      C0 = R12 + Rs,  Rs = T**2 R23 / (1 - R12 R23),  C_m = (Rs - T) (-r12 r23)**m,

  (exact: it is the expansion of |(r12 + r23 e^{i delta}) / (1 + r12 r23 e^{i delta})|**2),
  truncated after m = 3 like Cycles.
* Spectral integration is analytic per harmonic: R_rgb = C0 + 2 sum_m Re(C_m S(m OPD)) with the
  sensitivity S_c(x) = int cmf_c(l) exp(2 pi i x / l) dl / int cmf_c(l) dl, c in linear
  Rec.709 RGB. The colour matching functions are the CIE 1931 2-degree observer in the
  multi-lobe Gaussian fit of Wyman, Sloan & Shirley (JCGT 2013), integrated over wavelength
  (360-830 nm), converted with Cycles' XYZ(D65)->Rec.709 matrix, and normalized per channel
  so that a spectrally flat reflectance of 1 maps to RGB (1, 1, 1) (Cycles normalizes the DC
  term the same way). S is tabulated once per process (4 nm steps up to 40 um) and linearly
  interpolated, so the result is differentiable in thickness, IORs and angle.
* Films under 1 nm blend the film IOR toward the ambient one (smoothstep), as Cycles does;
  callers apply the film only above ``THICKNESS_CUTOFF`` (0.1 nm), where Cycles switches it on.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from .microfacet import fresnel_f82, safe_sqrt

__all__ = [
    "THICKNESS_CUTOFF",
    "XYZ_TO_REC709",
    "cie_1931_xyz",
    "sensitivity",
    "gather_rows",
    "thin_film_dielectric",
    "thin_film_f82",
]

THICKNESS_CUTOFF = 0.1  # nm, Cycles' THINFILM_THICKNESS_CUTOFF

XYZ_TO_REC709 = np.array([
    [3.2404542, -1.5371385, -0.4985314],
    [-0.9692660, 1.8760108, 0.0415560],
    [0.0556434, -0.2040259, 1.0572252],
])

_SENS_STEP = 4.0  # nm of OPD between table entries
_SENS_MAX = 40000.0  # nm; beyond this the sensitivity is ~0 (coherence is lost)
_HARMONICS = 3


def _lobe(lam, mu, s1, s2):
    s = np.where(lam < mu, s1, s2)
    return np.exp(-0.5 * ((lam - mu) / s) ** 2)


def cie_1931_xyz(lam_nm: np.ndarray) -> np.ndarray:
    """CIE 1931 2-degree colour matching functions (Wyman-Sloan-Shirley multi-lobe fit).

    Args:
        lam_nm: wavelengths in nm, any shape.
    Returns:
        (..., 3) x-bar, y-bar, z-bar.
    """
    lam = np.asarray(lam_nm, dtype=np.float64)
    x = 1.056 * _lobe(lam, 599.8, 37.9, 31.0) + 0.362 * _lobe(lam, 442.0, 16.0, 26.7) \
        - 0.065 * _lobe(lam, 501.1, 20.4, 26.2)
    y = 0.821 * _lobe(lam, 568.8, 46.9, 40.5) + 0.286 * _lobe(lam, 530.9, 16.3, 31.1)
    z = 1.217 * _lobe(lam, 437.0, 11.8, 36.0) + 0.681 * _lobe(lam, 459.0, 26.0, 13.8)
    return np.stack([x, y, z], -1)


@cache
def _sensitivity_table() -> np.ndarray:
    lam = np.arange(360.0, 830.5, 1.0)
    rgb = cie_1931_xyz(lam) @ XYZ_TO_REC709.T  # (L, 3)
    rgb = rgb / rgb.sum(0)  # DC term of each channel = 1
    x = np.arange(0.0, _SENS_MAX + _SENS_STEP, _SENS_STEP)
    phase = 2.0 * np.pi * x[:, None] / lam[None, :]  # (X, L)
    re = np.cos(phase) @ rgb
    im = np.sin(phase) @ rgb
    table = np.concatenate([re, im], -1)
    table[-1] = 0.0  # fully incoherent beyond the table
    return table.astype(np.float32)


_TORCH_SENS: dict[tuple, torch.Tensor] = {}


def sensitivity(x: torch.Tensor):
    """Normalized RGB sensitivity S(x) for an optical path difference x (nm), shape (..., 1).

    Returns:
        (re, im), each (..., 3). S(0) = (1, 1, 1).
    """
    key = (str(x.device), x.dtype)
    if key not in _TORCH_SENS:
        _TORCH_SENS[key] = torch.as_tensor(_sensitivity_table(), dtype=x.dtype, device=x.device)
    table = _TORCH_SENS[key]
    n = table.shape[0]
    f = (x / _SENS_STEP).clamp(0.0, n - 1.0)
    i0 = torch.floor(f.detach()).clamp(0, n - 2).long()
    t = f - i0.to(f.dtype)
    lo, hi = gather_rows(table, i0), gather_rows(table, i0 + 1)
    v = lo + t * (hi - lo)
    return v[..., :3], v[..., 3:]


def gather_rows(table: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """table[i] for a (L, C) table and (..., 1) indices -> (..., C), via gather (whose
    backward is a fast scatter-add, unlike indexing's)."""
    c = table.shape[1]
    flat = i.reshape(-1, 1).expand(-1, c)
    return table.gather(0, flat).reshape(i.shape[:-1] + (c,))


def _dielectric_amplitudes(cos_i: torch.Tensor, eta: torch.Tensor):
    """Signed amplitude reflection coefficients (r_s, r_p) and cos_t for relative IOR eta."""
    cos_t = safe_sqrt(1.0 - (1.0 - cos_i * cos_i) / (eta * eta))
    r_s = (cos_i - eta * cos_t) / (cos_i + eta * cos_t)
    r_p = (eta * cos_i - cos_t) / (eta * cos_i + cos_t)
    return r_s, r_p, cos_t


def _film_ior(thickness: torch.Tensor, film_ior: torch.Tensor) -> torch.Tensor:
    x = thickness.clamp(0.0, 1.0)
    return 1.0 + (film_ior - 1.0) * (x * x * (3.0 - 2.0 * x))


def _airy(r12: torch.Tensor, b_re: torch.Tensor, b_im: torch.Tensor, sens) -> torch.Tensor:
    """Spectrally integrated Airy reflectance of one polarization.

    r12: signed real amplitude (..., 1); b = r23 as complex (b_re, b_im), (..., 1) or (..., 3);
    sens: list of (re, im) sensitivities at m * opd for m = 1.._HARMONICS.
    """
    R12 = r12 * r12
    R23 = b_re * b_re + b_im * b_im
    T = 1.0 - R12
    Rs = T * T * R23 / (1.0 - R12 * R23).clamp_min(1e-6)
    out = R12 + Rs
    # q = -r12 * b, the round-trip amplitude; accumulate q**m
    q_re, q_im = -r12 * b_re, -r12 * b_im
    a_re, a_im = q_re, q_im
    coef = 2.0 * (Rs - T)
    for m in range(_HARMONICS):
        s_re, s_im = sens[m]
        out = out + coef * (a_re * s_re - a_im * s_im)
        if m + 1 < _HARMONICS:
            a_re, a_im = a_re * q_re - a_im * q_im, a_re * q_im + a_im * q_re
    return out


def _top(cos1, thickness, film_ior):
    n_f = _film_ior(thickness, film_ior)
    r12_s, r12_p, cos2 = _dielectric_amplitudes(cos1, n_f)
    opd = 2.0 * n_f * thickness * cos2
    sens = [sensitivity((m + 1) * opd) for m in range(_HARMONICS)]
    return n_f, r12_s, r12_p, cos2, sens


def thin_film_dielectric(cos1: torch.Tensor, thickness: torch.Tensor, film_ior: torch.Tensor,
                         eta: torch.Tensor) -> torch.Tensor:
    """Reflectance of a film over a dielectric, linear Rec.709 RGB in [0, 1], (..., 3).

    Args:
        cos1: cosine of the incidence angle in the ambient medium (IOR 1), (..., 1).
        thickness: film thickness in nm; film_ior: its IOR; eta: substrate IOR >= 1.
    """
    n_f, r12_s, r12_p, cos2, sens = _top(cos1, thickness, film_ior)
    r23_s, r23_p, _ = _dielectric_amplitudes(cos2, eta / n_f)
    zero = torch.zeros_like(r23_s)
    R_s = _airy(r12_s, r23_s, zero, sens)
    R_p = _airy(r12_p, r23_p, zero, sens)
    return (0.5 * (R_s + R_p)).clamp(0.0, 1.0)


def _conductor_phasors(cos_i, n_amb, n, k):
    """Unit phasors of r_s and r_p at an (ambient n_amb) -> (n + ik) interface."""
    sin2 = 1.0 - cos_i * cos_i
    t1 = n * n - k * k - n_amb * n_amb * sin2
    t2 = torch.sqrt(t1 * t1 + (2.0 * n * k) ** 2 + 1e-20)
    u = safe_sqrt(0.5 * (t2 + t1))
    v = safe_sqrt(0.5 * (t2 - t1))
    c = n_amb * cos_i
    s_re = c * c - u * u - v * v
    s_im = -2.0 * c * v
    p_re = ((n * n + k * k) * cos_i) ** 2 - n_amb * n_amb * (u * u + v * v)
    p_im = 2.0 * c * (2.0 * n * k * u - (n * n - k * k) * v)
    s_inv = torch.rsqrt(s_re * s_re + s_im * s_im + 1e-20)
    p_inv = torch.rsqrt(p_re * p_re + p_im * p_im + 1e-20)
    return s_re * s_inv, s_im * s_inv, p_re * p_inv, p_im * p_inv


def thin_film_f82(cos1: torch.Tensor, thickness: torch.Tensor, film_ior: torch.Tensor,
                  f0: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Reflectance of a film over an F82-tint metal (f0, b per channel), RGB (..., 3).

    As in Cycles: n and k are estimated from F0 and F82 with Gulbrandsen's "artist friendly"
    mapping; the film->metal reflectance magnitude is the F82 model re-based to the film's IOR
    and its phase comes from n + ik.
    """
    n_f, r12_s, r12_p, cos2, sens = _top(cos1, thickness, film_ior)
    r = f0.clamp(max=0.999)
    g = fresnel_f82(torch.full_like(f0, 1.0 / 7.0), f0, b)
    sqrt_r = safe_sqrt(r)
    n = (1.0 + sqrt_r) / (1.0 - sqrt_r) * (1.0 - g) + (1.0 - r) / (1.0 + r) * g
    k = safe_sqrt((r * (n + 1.0) ** 2 - (n - 1.0) ** 2) / (1.0 - r))
    # F82 magnitude relative to the film
    nn, kk = n / n_f, k / n_f
    f0_film = ((nn - 1.0) ** 2 + kk * kk) / ((nn + 1.0) ** 2 + kk * kk)
    f = 6.0 / 7.0
    f5 = f**5
    b_film = (7.0 / (f5 * f)) * (f0_film + (1.0 - f0_film) * f5 - g)
    R23 = fresnel_f82(cos2, f0_film, b_film)
    mag = safe_sqrt(R23)
    ps_re, ps_im, pp_re, pp_im = _conductor_phasors(cos2, n_f, n, k)
    R_s = _airy(r12_s, mag * ps_re, mag * ps_im, sens)
    R_p = _airy(r12_p, mag * pp_re, mag * pp_im, sens)
    return (0.5 * (R_s + R_p)).clamp(0.0, 1.0)

