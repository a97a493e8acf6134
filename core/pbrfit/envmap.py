"""Lat-long environment lighting: radiance lookups, prefiltered levels, importance sampling.

Frames follow :mod:`pbrfit.scene`: the image lives in the dome frame (+Y pole at row 0,
image centre toward +Z, u = 0.25 toward +X, u grows to the right) and ``world_from_dome``
rotates dome directions into world space. For a dome-frame unit direction (x, y, z)::

    u = 0.5 - atan2(x, z) / (2 pi)          in [0, 1), left to right
    v = acos(y) / pi                        in [0, 1], top to bottom

Radiance is in the image's linear units times ``Environment.scale``.

Sampling draws texels with probability proportional to luminance * sin(theta), mixed with
a uniform-sphere floor (``uniform_fraction``) so that dim directions keep a non-zero pdf,
then jitters uniformly inside the texel. All pdfs are per unit solid angle.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .color import environment_white
from .scene import Environment

__all__ = ["EnvironmentMap", "environment_map", "directions_to_uv", "uv_to_directions"]

_LUMA = (0.2126, 0.7152, 0.0722)


def directions_to_uv(d: torch.Tensor) -> torch.Tensor:
    """Dome-frame unit directions (..., 3) -> (u, v) in [0, 1] (..., 2)."""
    u = 0.5 - torch.atan2(d[..., 0], d[..., 2]) / (2 * math.pi)
    v = torch.acos(d[..., 1].clamp(-1 + 1e-7, 1 - 1e-7)) / math.pi
    return torch.stack([u % 1.0, v], dim=-1)


def uv_to_directions(uv: torch.Tensor) -> torch.Tensor:
    """(u, v) (..., 2) -> dome-frame unit directions (..., 3); inverse of directions_to_uv."""
    phi = (0.5 - uv[..., 0]) * 2 * math.pi
    theta = uv[..., 1] * math.pi
    s = torch.sin(theta)
    return torch.stack([s * torch.sin(phi), torch.cos(theta), s * torch.cos(phi)], dim=-1)


class EnvironmentMap:
    """An environment ready for rendering.

    Args:
        env: the environment (image, rotation, scale).
        uniform_fraction: share of the sampling pdf spread uniformly over the sphere.
        yaw_spread: radians; > 0 spreads the sampling pdf evenly over the map turned by any yaw
            within +-yaw_spread (a circular box filter along u), so that renders of the map turned
            by such yaws (``radiance(yaw=)``, :mod:`pbrfit.calibration`) are equally noisy:
            sampling matched to one orientation would make that orientation read best.
        dtype: torch dtype of lookups.
        device: where its tensors live; directions passed in must be there too.
    """

    def __init__(self, env: Environment, uniform_fraction: float = 0.1, dtype=torch.float32,
                 device: torch.device | str = "cpu", yaw_spread: float = 0.0):
        img = np.asarray(env.image, dtype=np.float64) * np.asarray(env.scale, dtype=np.float64).reshape(1, 1, 3)
        img = np.nan_to_num(np.maximum(img, 0.0))
        self.height, self.width = img.shape[:2]
        self.dtype = dtype
        self.device = device = torch.device(device)
        self.world_from_dome = torch.as_tensor(np.asarray(env.world_from_dome, dtype=np.float64), dtype=dtype,
                                               device=device)
        # prefiltered levels: 2x2 box filter, each level padded by one column on both sides
        # so that bilinear lookups wrap around in u.
        levels = [torch.as_tensor(img, dtype=dtype, device=device).permute(2, 0, 1)[None]]
        while min(levels[-1].shape[-2:]) > 4:
            levels.append(F.avg_pool2d(levels[-1], 2))
        self._levels = [torch.cat([lv[..., -1:], lv, lv[..., :1]], dim=-1) for lv in levels]
        self.num_levels = len(levels)

        # texel sampling distribution
        theta = (np.arange(self.height) + 0.5) / self.height * np.pi
        sin_t = np.sin(theta)[:, None]
        lum = (img * np.array(_LUMA)).sum(-1)
        # Radiance lookups are bilinear, so a direction in a dim texel next to the sun can
        # read part of the sun. Sampling from the 3x3 maximum keeps radiance / pdf bounded
        # there (no fireflies) at the cost of spreading a few samples around bright texels.
        padded = np.pad(lum, ((1, 1), (0, 0)), mode="edge")
        padded = np.concatenate([padded[:, -1:], padded, padded[:, :1]], axis=1)
        lum = np.max([padded[1 + dy:1 + dy + self.height, 1 + dx:1 + dx + self.width]
                      for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
        w_img = lum * sin_t
        w_uni = np.broadcast_to(sin_t, lum.shape)
        half = int(round(yaw_spread / (2 * np.pi) * self.width))
        if half > 0:  # circular box filter of 2 half + 1 columns (running sums)
            wrapped = np.concatenate([w_img[:, -half:], w_img, w_img[:, :half]], axis=1)
            c = np.concatenate([np.zeros((self.height, 1)), np.cumsum(wrapped, axis=1)], axis=1)
            w_img = (c[:, 2 * half + 1:] - c[:, :-2 * half - 1]) / (2 * half + 1)
        if w_img.sum() > 0:
            p = (1 - uniform_fraction) * w_img / w_img.sum() + uniform_fraction * w_uni / w_uni.sum()
        else:  # a black environment (a studio rig of analytic lights only): uniform
            p = w_uni / w_uni.sum()
        self._texel_prob = torch.as_tensor(p.ravel(), dtype=torch.float64, device=device)
        # the sampling CDFs (rows; texels in row-major order), built once for :meth:`warp`
        self._row_mass = self._texel_prob.reshape(self.height, self.width).sum(1)
        self._row_cdf = torch.cumsum(self._row_mass, 0)
        self._flat_cdf = torch.cumsum(self._texel_prob, 0)
        self._texel_prob_img = torch.as_tensor(p, dtype=dtype, device=device)
        # mean radiance over the sphere (solid-angle weighted), per channel
        self.mean_radiance = (img * sin_t[..., None]).sum((0, 1)) / (sin_t.sum() * self.width)
        self.mean_luminance = environment_white(img)  # pbrfit's HDR white for this lighting

    # --- frames ---------------------------------------------------------------------------
    def to_dome(self, d_world: torch.Tensor) -> torch.Tensor:
        return d_world @ self.world_from_dome  # R^T d, row-vector form

    def to_world(self, d_dome: torch.Tensor) -> torch.Tensor:
        return d_dome @ self.world_from_dome.T

    # --- lookups --------------------------------------------------------------------------
    def _lookup_level(self, level: int, uv: torch.Tensor) -> torch.Tensor:
        img = self._levels[level]
        w = img.shape[-1] - 2
        # padded image: column c of the original sits at c + 1; normalized x over padded width
        x = (uv[..., 0] * w + 1.0) / (w + 2) * 2 - 1
        y = uv[..., 1] * 2 - 1
        grid = torch.stack([x, y], dim=-1).reshape(1, -1, 1, 2).to(img.dtype)
        out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out[0, :, :, 0].T.reshape(*uv.shape[:-1], 3)

    def radiance(self, d_world: torch.Tensor, lod: torch.Tensor | float | None = None,
                 yaw: torch.Tensor | float | None = None) -> torch.Tensor:
        """Radiance arriving from world directions ``d_world`` (..., 3) -> (..., 3).

        Args:
            lod: prefilter level (0 = full resolution), a tensor broadcastable to the
                directions' batch shape or a float; fractional levels blend linearly.
                Differentiable with respect to the directions (bilinear) and the level
                (linear between levels), so blur that grows with roughness has a gradient.
            yaw: radians the environment is turned about its pole on top of ``world_from_dome``
                (the lookup of ``world_from_dome @ pbrfit.calibration.pole_rotation(yaw)``),
                differentiable (:mod:`pbrfit.calibration`). The sampling pdf stays the unturned
                map's.
        """
        uv = directions_to_uv(self.to_dome(d_world))
        if yaw is not None:  # turning the dome by yaw about +Y moves every lookup's u by yaw / 2 pi
            yaw = torch.as_tensor(yaw, device=uv.device).to(uv.dtype)
            uv = torch.stack([(uv[..., 0] + yaw / (2 * math.pi)) % 1.0, uv[..., 1]], dim=-1)
        if lod is None:
            return self._lookup_level(0, uv)
        lod = torch.as_tensor(lod, dtype=uv.dtype, device=uv.device).clamp(0, self.num_levels - 1)
        lod = lod.expand(uv.shape[:-1])
        out = torch.zeros(*uv.shape[:-1], 3, dtype=uv.dtype, device=uv.device)
        lo = lod.detach().floor()
        frac = (lod - lo)[..., None]
        for level in range(self.num_levels):
            w = torch.where((lo == level)[..., None], 1 - frac, torch.zeros_like(frac)) + \
                torch.where((lo + 1 == level)[..., None], frac, torch.zeros_like(frac))
            if bool((w > 0).any()):
                out = out + w * self._lookup_level(level, uv)
        return out

    # --- sampling -------------------------------------------------------------------------
    def pdf(self, d_world: torch.Tensor) -> torch.Tensor:
        """Sampling pdf per unit solid angle of world directions (..., 3) -> (...)."""
        d = self.to_dome(d_world)
        uv = directions_to_uv(d)
        col = (uv[..., 0] * self.width).long().clamp(0, self.width - 1)
        row = (uv[..., 1] * self.height).long().clamp(0, self.height - 1)
        p = self._texel_prob_img[row, col]
        sin_t = torch.sqrt((1 - d[..., 1] ** 2).clamp_min(1e-8))
        return p * (self.width * self.height) / (2 * math.pi * math.pi * sin_t)

    def sample(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``count`` world directions (``generator`` a CPU generator); returns
        (directions (count, 3), pdf (count,)) on this map's device."""
        u = torch.rand(count, 2, generator=generator, dtype=torch.float64, device="cpu")
        return self.warp(u.to(self.device))

    def warp(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map uniforms ``u`` (..., 2) in [0, 1) to directions by inverting the texel CDF
        (rows, then columns within the row); stratified uniforms stay stratified.

        Returns:
            world directions (..., 3) and their pdf (...).
        """
        shape = u.shape[:-1]
        u = u.reshape(-1, 2).to(torch.float64)
        h, w = self.height, self.width
        row_mass, row_cdf, flat_cdf = self._row_mass, self._row_cdf, self._flat_cdf
        row = torch.searchsorted(row_cdf, u[:, 0].contiguous() * row_cdf[-1], right=True).clamp(max=h - 1)
        row_lo = row_cdf[row] - row_mass[row]
        fv = ((u[:, 0] * row_cdf[-1] - row_lo) / row_mass[row].clamp_min(1e-300)).clamp(0, 1 - 1e-9)
        target = row_lo + u[:, 1] * row_mass[row]
        idx = torch.searchsorted(flat_cdf, target.contiguous(), right=True)
        idx = torch.minimum(torch.maximum(idx, row * w), row * w + w - 1)
        cell_lo = flat_cdf[idx] - self._texel_prob[idx]
        fu = ((target - cell_lo) / self._texel_prob[idx].clamp_min(1e-300)).clamp(0, 1 - 1e-9)
        col = idx - row * w
        uv = torch.stack([(col + fu) / w, (row + fv) / h], -1)
        d = self.to_world(uv_to_directions(uv).to(self.dtype))
        return d.reshape(*shape, 3), self.pdf(d).reshape(shape)


#: EnvironmentMaps built in this process, by content (see :func:`environment_map`)
_MAPS: dict[tuple, EnvironmentMap] = {}
_MAPS_KEPT = 8


def environment_map(env: Environment, device: torch.device | str = "cpu", yaw_spread: float = 0.0) -> EnvironmentMap:
    """The :class:`EnvironmentMap` of ``env`` on ``device``, built once per process for equal
    content (the image, rotation and scale): views lit by the same HDRI, and every renderer of
    a run, share one (building one costs about 0.3 s for a 2k HDRI). The last
    :data:`_MAPS_KEPT` are kept."""
    import hashlib

    image = np.ascontiguousarray(env.image)
    key = (hashlib.sha1(image.view(np.uint8)).hexdigest(), image.shape, str(image.dtype),
           np.asarray(env.world_from_dome, np.float64).tobytes(), np.asarray(env.scale, np.float64).tobytes(),
           str(torch.device(device)), float(yaw_spread))
    if key not in _MAPS:
        while len(_MAPS) >= _MAPS_KEPT:
            _MAPS.pop(next(iter(_MAPS)))
        _MAPS[key] = EnvironmentMap(env, device=device, yaw_spread=yaw_spread)
    return _MAPS[key]
