"""Directional-albedo tables of the GGX lobe, as Cycles defines them, and their lookup.

Cycles makes its microfacet lobes energy conserving with precomputed tables
(``intern/cycles/app/cycles_precompute.cpp``). This module recomputes the same quantities
independently (``scripts/gen_albedo_tables.py`` writes them to ``pbrfit/data/*.npy``) and
interpolates them exactly as Cycles' ``lookup_table_read_{,2D,3D}`` does: coordinates are
saturated to [0, 1] and interpolated multilinearly on a uniform grid over [0, 1].

Tables (all float32; ``rough`` is perceptual roughness, alpha = rough**2, ``mu`` the cosine of
the view direction; grid point i of n sits at i / (n - 1), with rough and mu clamped to >= 1e-4
when generated):

* ``ggx_E`` (mu 32, rough 32): albedo of the Fresnel-free GGX reflection lobe
  (height-correlated Smith), E = E_h[G2 / G1(wo) * 1(wi above the horizon)] over visible
  normals h. Rough below the mirror threshold (alpha**2 <= 2e-10) counts as a mirror, E = 1.
* ``ggx_Eavg`` (rough 32): cosine-weighted average 2 * int_0^1 mu E(mu) dmu.
* ``ggx_ior_s`` (z 16, mu 16, rough 16): expected Fresnel interpolation factor
  s = E_h[1(above) * saturate((F(h.wo, ior) - F0) / (1 - F0))] for the real dielectric Fresnel of
  ior = ior_from_F0(z**4) (z clamped to [1e-4, 0.99]); the albedo estimate of a generalized-
  Schlick lobe is mix(f0, f90, s) (Cycles' ``ggx_gen_schlick_ior_s``). Samples reflected
  below the horizon count as 0, and s is not weighted by masking, exactly as Cycles'
  precomputation averages it.

Cycles' other tables (glass, generalized Schlick with an exponent, the F82 albedo estimate)
only serve transmission, sampling weights and render passes, which the Principled layering
evaluated here does not use.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .microfacet import F0_from_ior, fresnel_dielectric, ggx_lambda, ior_from_sqrt_F0, sample_vndf

__all__ = [
    "TABLE_NAMES",
    "DATA_DIR",
    "MIRROR_ALPHA2",
    "load_tables",
    "tables_for",
    "interp",
    "compute_tables",
]

TABLE_NAMES = ("ggx_E", "ggx_Eavg", "ggx_ior_s")
DATA_DIR = Path(__file__).parent / "data"
#: Cycles' ``BSDF_ROUGHNESS_SQ_THRESH``: alpha_x * alpha_y at or below it is a mirror.
MIRROR_ALPHA2 = 2e-10


@cache
def load_tables() -> dict[str, np.ndarray]:
    """The tables as float32 numpy arrays, read once from ``DATA_DIR``."""
    out = {}
    for name in TABLE_NAMES:
        path = DATA_DIR / f"{name}.npy"
        if not path.is_file():
            raise InputError(f"{path}: albedo table missing; run scripts/gen_albedo_tables.py to create it")
        out[name] = np.load(path).astype(np.float32)
    return out


_TORCH_CACHE: dict[tuple, dict[str, torch.Tensor]] = {}


def tables_for(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The tables as torch tensors on ``device`` (cached per device and dtype)."""
    key = (str(torch.device(device)), dtype)
    if key not in _TORCH_CACHE:
        _TORCH_CACHE[key] = {k: torch.as_tensor(v, dtype=dtype, device=device) for k, v in load_tables().items()}
    return _TORCH_CACHE[key]


def _axis_weights(c: torch.Tensor, n: int):
    x = c.clamp(0.0, 1.0) * (n - 1)
    i0 = torch.floor(x.detach()).clamp(0, n - 2).long()
    return i0, x - i0.to(x.dtype)


def interp(table: torch.Tensor, coords: list[torch.Tensor]) -> torch.Tensor:
    """Multilinear interpolation of ``table`` at ``coords`` (one tensor per table axis, each in
    [0, 1] over that axis, broadcastable). Differentiable in the coordinates and the table.

    Axes whose coordinate is a single value are reduced first on the small table, so the
    common case (material constants, per-sample cosines) costs one 1-D gather per sample.
    """
    assert table.dim() == len(coords)
    coords = list(coords)
    # 1) reduce axes with a scalar coordinate, last axis first so earlier indices stay valid
    for axis in reversed(range(table.dim())):
        c = coords[axis]
        if c.numel() == 1:
            i0, t = _axis_weights(c.reshape(()), table.shape[axis])
            lo = table.select(axis, int(i0))
            hi = table.select(axis, int(i0) + 1)
            table = lo + t * (hi - lo)
            coords.pop(axis)
    if not coords:
        return table.reshape(())
    # 2) gather the 2**k corners of the remaining per-sample axes
    shape = torch.broadcast_shapes(*(c.shape for c in coords))
    strides = [int(np.prod(table.shape[a + 1:])) for a in range(table.dim())]
    flat = table.reshape(-1)
    parts = [_axis_weights(c, n) for c, n in zip(coords, table.shape)]
    out = None
    for corner in range(1 << len(parts)):
        idx = None
        w = None
        for a, (i0, t) in enumerate(parts):
            bit = (corner >> a) & 1
            term = (i0 + bit) * strides[a]
            idx = term if idx is None else idx + term
            wa = t if bit else 1.0 - t
            w = wa if w is None else w * wa
        # gather (not take/index): its backward is a cheap scatter-add
        v = flat.gather(0, idx.expand(shape).reshape(-1)).reshape(shape) * w
        out = v if out is None else out + v
    return out


# --- generation (used by scripts/gen_albedo_tables.py) ------------------------------------


def _grid(n: int, lo: float = 1e-4, hi: float = 1.0) -> torch.Tensor:
    return (torch.arange(n, dtype=torch.float64) / (n - 1)).clamp(lo, hi)


def _view(mu: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.sqrt(1 - mu * mu), torch.zeros_like(mu), mu], -1)


def _vndf_reflection(wo: torch.Tensor, alpha: torch.Tensor, u: torch.Tensor):
    """Reflect wo about VNDF-sampled normals of isotropic GGX (broadcasting shapes).

    Returns (cos_h, above, G2 / G1(wo)), each (..., 1): the Fresnel cosine, whether the
    reflection leaves above the horizon, and the sample's albedo weight."""
    h = sample_vndf(wo, alpha, alpha, u)
    cos_h = (wo * h).sum(-1, keepdim=True)
    wi = 2 * cos_h * h - wo
    above = (wi[..., 2:3] > 0).to(wo.dtype)
    lo = ggx_lambda(wo, alpha, alpha)
    li = ggx_lambda(torch.where(above > 0, wi, wo), alpha, alpha)
    return cos_h.clamp(0, 1), above, (1 + lo) / (1 + lo + li)


def _cells(rough: torch.Tensor, mu: float, u: torch.Tensor):
    """_vndf_reflection for every roughness in ``rough`` (C,) at one view cosine: (C, S, 1)."""
    alpha = (rough * rough)[:, None, None]
    wo = _view(torch.tensor([mu], dtype=rough.dtype)).expand(rough.shape[0], u.shape[0], 3)
    return _vndf_reflection(wo, alpha, u[None].expand(rough.shape[0], -1, -1))


def _mirror(rough: torch.Tensor) -> torch.Tensor:
    return rough**4 <= MIRROR_ALPHA2


def compute_tables(log2_samples: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Compute all tables by quasi-Monte Carlo (scrambled Sobol) over visible normals, in
    float64. ``2**log2_samples`` samples per table cell; E_avg uses 16x as many.

    Runs single-threaded (restoring the thread count after): torch's float64 transcendental
    kernels are far slower multi-threaded on these small tensors."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _compute_tables(log2_samples, seed)
    finally:
        torch.set_num_threads(threads)


def _compute_tables(log2_samples: int, seed: int) -> dict[str, np.ndarray]:
    n = 1 << log2_samples
    u3 = torch.quasirandom.SobolEngine(3, scramble=True, seed=seed).draw(16 * n, dtype=torch.float64)
    u = u3[:n, :2]
    out = {}

    # ggx_E (mu, rough)
    rough = _grid(32)
    E = torch.empty(32, 32, dtype=torch.float64)
    for j, mu in enumerate(_grid(32).tolist()):
        _, above, g = _cells(rough, mu, u)
        E[j] = (above * g).mean(dim=(1, 2))
    E[:, _mirror(rough)] = 1.0
    out["ggx_E"] = E

    # ggx_Eavg (rough): mu uniform on [0, 1] (third Sobol dimension), weight 2 mu
    mu = u3[:, 2:3].clamp_min(1e-4)
    Eavg = torch.ones(32, dtype=torch.float64)
    for i, r in enumerate(rough.tolist()):
        if not _mirror(torch.tensor(r)):
            _, above, g = _vndf_reflection(_view(mu), torch.tensor(r * r, dtype=torch.float64), u3[:, :2])
            Eavg[i] = (2 * mu * above * g).mean()
    out["ggx_Eavg"] = Eavg

    # ggx_ior_s (z, mu, rough)
    rough16 = _grid(16)
    mirror16 = _mirror(rough16)
    S = torch.empty(16, 16, 16, dtype=torch.float64)
    for k, z in enumerate(_grid(16, 1e-4, 0.99)):
        eta = ior_from_sqrt_F0(torch.tensor(float(z) ** 2, dtype=torch.float64))
        f0 = F0_from_ior(eta)

        def s_of(c, eta=eta, f0=f0):
            return ((fresnel_dielectric(c, eta) - f0) / (1 - f0)).clamp(0, 1)

        for j, mu in enumerate(_grid(16).tolist()):
            cos_h, above, _ = _cells(rough16, mu, u)
            S[k, j] = (above * s_of(cos_h)).mean(dim=(1, 2))
            S[k, j, mirror16] = s_of(torch.tensor(mu, dtype=torch.float64))
    out["ggx_ior_s"] = S

    return {k: v.clamp(0, 1).numpy().astype(np.float32) for k, v in out.items()}
