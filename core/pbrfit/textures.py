"""Texture maps: spatially varying parameters on the mesh's UV layout.

A *map* replaces one scalar parameter (``base_color``, ``roughness``, ...) by a grid of
texels looked up at each shading point's texture coordinates. Everything else about the
parameter stays as it is for scalars: its bounds, its reparameterization (each texel lives
in the same unconstrained space, :func:`pbrfit.params.to_unconstrained`), its meaning in
Blender's Principled BSDF (:mod:`pbrfit.bsdf` evaluates the BSDF per shading point with the
texel's values).

Conventions (what Blender, Cycles, MaterialX and USD agree on):

* A map is a tensor ``(H, W, C)`` in the parameter's own units (base colour: linear
  Rec.709), **row 0 at the top of the image** as it is stored in a file. Texture
  coordinate (u, v) = (0, 0) is the image's bottom-left corner, (1, 1) its top-right.
* Lookup is bilinear between texel centres, which sit at ((i + 0.5) / W, (j + 0.5) / H),
  and the image repeats outside [0, 1] (Cycles' Image Texture with Linear interpolation and
  Repeat extension, MaterialX ``<image>`` with ``periodic`` address mode).
* In a material dict (:func:`pbrfit.params.ParameterSpace.material`), a scalar parameter
  is a tensor of shape ``(1,)`` or ``(3,)``; a mapped one is a 3-D tensor ``(H, W, C)``.
  Renderers call :func:`resolve` with their shading points' UVs before the BSDF sees it.

The fit of the maps (:class:`TextureFit`) runs after the scalar fit, from maps that
hold the scalar result everywhere, with Adam on a coarse-to-fine pyramid (1/8, 1/4, 1/2,
full resolution), total variation on every map and a prior toward the scalar value that is
strongest where few pixels see a texel. Texels no train pixel sees are filled from their
neighbours afterwards and reported (:func:`fill_unseen`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError
from .microfacet import valid_specular_normal
from .params import PARAMETERS, from_unconstrained, to_unconstrained

__all__ = ["TEXTURE_MAPS", "TEXTURE_KEYS", "TextureSettings", "check_textures", "is_map", "lookup", "resolve",
           "has_maps", "pyramid", "splat", "total_variation", "texel_weights", "fill_unseen", "map_memory_bytes",
           "MAX_RESOLUTION", "initial_grid", "map_values",
           "NORMAL", "FLAT_NORMAL", "normal_rotation", "valid_reflection", "rotate", "unrotate",
           "map_channels", "variable_channels", "normalized", "slopes"]

#: the material dict's key of a tangent-space normal map (not a Principled parameter: the
#: BSDF never sees it, the renderers turn the shading frame with it)
NORMAL = "normal"
#: what can be fitted as maps: Principled parameters, and the normal map
TEXTURE_MAPS = ("base_color", "roughness", "metallic", "specular_ior_level", "coat_weight", "coat_roughness", NORMAL)
#: keys of a job's ``[textures]`` table
TEXTURE_KEYS = ("maps", "resolution", "uv", "iterations", "tv_weight", "prior_weight", "learning_rate")
#: a flat normal map texel (tangent space (0, 0, 1), encoded)
FLAT_NORMAL = (0.5, 0.5, 1.0)
#: the largest map side allowed (texels)
MAX_RESOLUTION = 8192
#: bytes per texel channel the fit holds (variable, gradient, two Adam moments, values,
#: regularizer and lookup temporaries), measured order of magnitude, float32
_BYTES_PER_CHANNEL = 4 * 10


@dataclass(frozen=True)
class TextureSettings:
    """What maps to fit and how (a job's ``[textures]`` table).

    Attributes:
        maps: parameter names fitted as maps (:data:`TEXTURE_MAPS`), canonical order.
        resolution: texels per side of the final maps, a power of two (8 .. 8192).
        uv: the USD primvar holding the texture coordinates, or None for the mesh's default
            (``st``, then ``UVMap``, then its first texCoord2f primvar).
        iterations: Adam steps in all, shared by the pyramid's levels.
        tv_weight: weight of the total variation of each map (per texel, in the parameter's
            normalized [0, 1] range), against the image loss.
        prior_weight: weight of the pull toward the scalar fit, per texel, divided by
            1 + the number of train pixels that see the texel (a normal map: toward flat).
        learning_rate: Adam's step in the unconstrained space.
    """

    maps: tuple[str, ...]
    resolution: int = 512
    uv: str | None = None
    iterations: int = 160
    tv_weight: float = 0.1
    prior_weight: float = 0.05
    learning_rate: float = 0.05

    def channels(self) -> int:
        return sum(map_channels(n) for n in self.maps)

    def levels(self) -> list[int]:
        """The pyramid: 1/8, 1/4, 1/2 and the full resolution (none below 8 texels)."""
        return sorted({max(8, self.resolution >> k) for k in (3, 2, 1, 0)})


def map_memory_bytes(settings: TextureSettings) -> int:
    """A bound on the memory the map fit holds for its texels (not the renders)."""
    return settings.resolution ** 2 * settings.channels() * _BYTES_PER_CHANNEL


def _available_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # Windows has no sysconf
        return None


def check_textures(table, where: str) -> TextureSettings:
    """Validate a ``[textures]`` table; errors name ``where`` (e.g. ``job /x.toml: [textures]``)."""
    if not isinstance(table, dict):
        raise InputError(f"{where} must be a table, got {table!r}")
    unknown = [k for k in table if k not in TEXTURE_KEYS]
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(TEXTURE_KEYS)}")
    maps = table.get("maps")
    if isinstance(maps, str):
        maps = [maps]
    if not isinstance(maps, list) or not maps or not all(isinstance(m, str) for m in maps):
        raise InputError(f"{where} maps: give a list of parameter names, e.g. maps = [\"base_color\", \"roughness\"]")
    for m in maps:
        if m not in PARAMETERS and m != NORMAL:
            raise InputError(f"{where} maps: '{m}' is not a parameter; maps can be {', '.join(TEXTURE_MAPS)}")
        if m not in TEXTURE_MAPS:
            raise InputError(f"{where} maps: '{m}' cannot be fitted as a map; maps can be {', '.join(TEXTURE_MAPS)}")
    maps = tuple(n for n in TEXTURE_MAPS if n in set(maps))
    kw = {"maps": maps}
    res = table.get("resolution", 512)
    if isinstance(res, bool) or not isinstance(res, int) or res < 8 or res > MAX_RESOLUTION or res & (res - 1):
        raise InputError(f"{where} resolution: must be a power of two from 8 to {MAX_RESOLUTION}, got {res!r}")
    kw["resolution"] = res
    if "uv" in table:
        uv = table["uv"]
        if not isinstance(uv, str) or not uv.strip() or not uv.replace("_", "a").isalnum():
            raise InputError(f"{where} uv: give the name of a texCoord2f primvar, e.g. uv = \"st\", got {uv!r}")
        kw["uv"] = uv.removeprefix("primvars:")
    if "iterations" in table:
        it = table["iterations"]
        if isinstance(it, bool) or not isinstance(it, int) or not 1 <= it <= 100_000:
            raise InputError(f"{where} iterations: a whole number from 1 to 100000, got {it!r}")
        kw["iterations"] = it
    for key in ("tv_weight", "prior_weight", "learning_rate"):
        if key in table:
            v = table[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 \
                    or (key == "learning_rate" and v == 0):
                raise InputError(f"{where} {key}: a finite number >= 0{' (> 0)' if key == 'learning_rate' else ''}, "
                                 f"got {v!r}")
            kw[key] = float(v)
    settings = TextureSettings(**kw)
    need, free = map_memory_bytes(settings), _available_memory()
    if free is not None and need > free:
        raise InputError(f"{where} resolution: {res}x{res} maps of {', '.join(maps)} need about "
                         f"{need / 2**30:.1f} GiB and {free / 2**30:.1f} GiB is free; lower the resolution")
    return settings


# --- lookup ---------------------------------------------------------------------------------

def is_map(value) -> bool:
    """Whether a material value is a map (a 3-D tensor, see the module docstring)."""
    return isinstance(value, torch.Tensor) and value.dim() == 3


def has_maps(material: dict) -> bool:
    return any(is_map(v) for v in material.values())


def lookup(texels: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear, repeating lookup (the module's conventions) of ``texels`` (H, W, C) at
    ``uv`` (N, 2); returns (N, C), differentiable in the texels (each lookup's four texels
    get its gradient: both sides of a UV seam look up, and train, their own texels).

    Written here rather than with ``grid_sample``, which cannot repeat the image."""
    h, w, c = texels.shape
    uv = uv.to(texels.dtype)
    x = uv[:, 0] * w - 0.5
    y = (1.0 - uv[:, 1]) * h - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.long(), y0.long()
    xa, xb = x0 % w, (x0 + 1) % w
    ya, yb = y0 % h, (y0 + 1) % h
    flat = texels.reshape(h * w, c)
    top = flat[ya * w + xa] * (1 - fx) + flat[ya * w + xb] * fx
    bottom = flat[yb * w + xa] * (1 - fx) + flat[yb * w + xb] * fx
    return top * (1 - fy) + bottom * fy


def resolve(material: dict, uv: torch.Tensor | None, extra_dims: int = 0) -> dict:
    """``material`` with every map looked up at the shading points' ``uv`` (N, 2): a map
    becomes (N, *[1] * extra_dims, C), broadcastable against the renderer's per-point
    directions (raster: (N, samples, 3), so ``extra_dims=1``). Without maps, ``material``."""
    if not has_maps(material):
        return material
    if uv is None:
        raise InputError("the material has texture maps but the mesh has no texture coordinates; "
                         "add a UV map to the mesh (Blender: UV > Smart UV Project) and export it")
    out = {}
    for name, v in material.items():
        if is_map(v):
            looked = lookup(v, uv)
            out[name] = looked.reshape(looked.shape[0], *([1] * extra_dims), looked.shape[1])
        else:
            out[name] = v
    return out


# --- normal maps -----------------------------------------------------------------------------


def _unit(v: torch.Tensor) -> torch.Tensor:
    """``v`` normalized along the last axis, with a finite gradient at zero."""
    return v * torch.rsqrt((v * v).sum(-1, keepdim=True) + 1e-16)


def valid_reflection(m: torch.Tensor, wo: torch.Tensor) -> torch.Tensor:
    """Cycles' ``ensure_valid_specular_reflection`` in the local frame (the geometric normal
    taken as the shading normal, +z): a mapped normal ``m`` (N, 3) that would mirror the view
    ``wo`` (N, 3) below the surface is tilted back toward +z until the mirrored view leaves
    the surface at ``min(0.9 wo.z, 0.01)`` (:func:`pbrfit.microfacet.valid_specular_normal`)."""
    z = torch.zeros_like(m)
    z[:, 2] = 1.0
    return valid_specular_normal(z, wo, m)


def normal_rotation(encoded: torch.Tensor, tbn: torch.Tensor, wo: torch.Tensor | None = None) -> torch.Tensor:
    """(N, 3, 3) rotations taking directions in a point's local shading frame to the frame
    of its mapped normal (rows: tangent, bitangent, mapped normal, all in the old frame).

    ``encoded`` (N, 3) is the normal map's texel value, tangent space encoded as colour
    (n = 2 c - 1, OpenGL: +Y along increasing v), ``tbn`` (N, 2, 3) the UV tangent and
    bitangent in the local frame (:func:`pbrfit.gbuffer.tangent_basis`). The mapped normal
    is ``normalize(n.x T + n.y B + n.z N)`` as Cycles' Normal Map node forms it (strength 1);
    the new tangent is the old one (Blender's default tangent, for anisotropy) made
    orthogonal to it. With the view ``wo`` (N, 3), a normal that would reflect it below the
    surface is bent back as Cycles does (:func:`valid_reflection`)."""
    n = encoded * 2.0 - 1.0
    m = n[:, 0:1] * tbn[:, 0] + n[:, 1:2] * tbn[:, 1]
    m = _unit(torch.cat([m[:, :2], m[:, 2:3] + n[:, 2:3]], -1))
    if wo is not None:
        m = valid_reflection(m, wo)
    ex = torch.zeros_like(m)
    ex[:, 0] = 1.0
    x = _unit(ex - m * m[:, 0:1])
    y = torch.cross(m, x, dim=-1)
    return torch.stack([x, y, m], 1)


def rotate(r: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Directions ``v`` (N, 3) or (N, K, 3) in the old local frame, in the frame of ``r``."""
    if v.dim() == 2:
        return torch.einsum("nij,nj->ni", r, v)
    return torch.einsum("nij,nkj->nki", r, v)


def unrotate(r: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`rotate`."""
    if v.dim() == 2:
        return torch.einsum("nji,nj->ni", r, v)
    return torch.einsum("nji,nkj->nki", r, v)


# --- what the fit of maps needs ---------------------------------------------------------------

def pyramid(grid: torch.Tensor, size: int, name: str | None = None) -> torch.Tensor:
    """``grid`` (H, W, C) resampled bilinearly to (size, size, C) (texel centres aligned); a
    normal map's height (``name`` :data:`NORMAL`, texel units) scaled with the texels, so
    its slopes stay the same."""
    if grid.shape[0] == size and grid.shape[1] == size:
        return grid
    g = grid.permute(2, 0, 1)[None]
    out = F.interpolate(g, size=(size, size), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    return out * (size / grid.shape[0]) if name == NORMAL else out


def total_variation(t: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean isotropic-ish total variation of ``t`` (H, W, C) (Charbonnier-smoothed |d|, so
    its gradient is defined at 0), summed over channels, per texel."""
    dx = t[:, 1:] - t[:, :-1]
    dy = t[1:] - t[:-1]
    return ((torch.sqrt(dx * dx + eps * eps) - eps).sum(-1).mean()
            + (torch.sqrt(dy * dy + eps * eps) - eps).sum(-1).mean())


def splat(uvs: list[torch.Tensor], values: list[torch.Tensor], size: int) -> torch.Tensor:
    """(size, size, C) the adjoint of :func:`lookup`: each point's ``values`` (N, C) spread
    onto the texels with its bilinear weights and summed, over every (uv, values) pair."""
    c = values[0].shape[-1]
    grid = torch.zeros(size, size, c, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        total = sum((lookup(grid, uv.double().cpu()) * v.double().cpu()).sum() for uv, v in zip(uvs, values))
        (grad,) = torch.autograd.grad(total, grid)
    return grad


def texel_weights(uvs: list[torch.Tensor], size: int) -> torch.Tensor:
    """(size, size) how much the train pixels see each texel: the sum over every pixel of
    its bilinear weight on the texel (a texel seen by one pixel centred on it reads 1)."""
    return splat(uvs, [torch.ones(len(uv), 1) for uv in uvs], size)[..., 0].float()


#: rings of unseen texels around the seen ones that :func:`fill_unseen` fills with the mean of
#: their filled neighbours (a bilinear lookup just outside a UV island reads one ring; two
#: leave room for a mip level); the texels beyond are filled by a push-pull pyramid
FILL_RINGS = 2


def fill_unseen(values: np.ndarray, seen: np.ndarray, default) -> np.ndarray:
    """``values`` (H, W, C) with the texels not ``seen`` (H, W) filled: the first
    :data:`FILL_RINGS` rings around the seen texels by the mean of their seen (or already
    filled) neighbours, ring by ring with the map repeating at its borders (so a texel just
    outside a UV island gets the island's edge, as a bilinear lookup there needs); every texel
    beyond by push-pull (each unknown texel takes the bilinear upsampling of the next coarser
    level's mean of known texels, recursively: smooth and linear in the texel count, where
    growing rings over a 2048^2 map's empty UV space took 390 s on one core). Nothing seen:
    every texel takes ``default``."""
    v = torch.as_tensor(values, dtype=torch.float32).permute(2, 0, 1)[None].clone()
    known = torch.as_tensor(seen, dtype=torch.float32)[None, None].clone()
    if not bool(known.any()):
        return np.broadcast_to(np.asarray(default, dtype=np.float32), values.shape).copy()
    v = v * known
    kernel = torch.ones(1, 1, 3, 3)
    c = v.shape[1]
    for _ in range(FILL_RINGS):
        if bool(known.all()):
            break
        n = F.conv2d(F.pad(known, (1, 1, 1, 1), mode="circular"), kernel)
        s = F.conv2d(F.pad(v, (1, 1, 1, 1), mode="circular"), kernel.expand(c, 1, 3, 3), groups=c)
        grow = (known == 0) & (n > 0)
        v = torch.where(grow, s / n.clamp_min(1), v)
        known = torch.where(grow, torch.ones_like(known), known)
    if not bool(known.all()):
        v = torch.where(known > 0, v, _pulled(v, known))
    return v[0].permute(1, 2, 0).numpy()


def _pulled(v: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) everywhere the mean of the known texels nearby, from a pyramid of
    known-weighted means: ``v`` is zero where ``known`` (1, 1, H, W) is 0."""
    h, w = v.shape[-2:]
    if h == 1 and w == 1:
        return v / known.clamp_min(1e-12)
    coarse_v = F.avg_pool2d(v, 2, ceil_mode=True)
    coarse_k = F.avg_pool2d(known, 2, ceil_mode=True)
    mean = torch.where(coarse_k > 0, coarse_v / coarse_k.clamp_min(1e-12), _pulled(coarse_v, coarse_k))
    coarse = F.interpolate(mean, size=(h, w), mode="bilinear", align_corners=False)
    return torch.where(known > 0, v / known.clamp_min(1e-12), coarse)


def map_channels(name: str) -> int:
    """Channels of a map's file and values (a normal map: 3, its encoded colour)."""
    return 3 if name == NORMAL else PARAMETERS[name].size


def variable_channels(name: str) -> int:
    """Channels of a map's unconstrained grid: the parameter's size; a normal map's one
    height per texel (:func:`slopes`)."""
    return 1 if name == NORMAL else PARAMETERS[name].size


def initial_grid(name: str, value, size: int, bounds: tuple[float, float] | None) -> torch.Tensor:
    """The unconstrained grid (size, size, C) of a map holding ``value`` everywhere (a
    normal map: flat, whatever ``value``)."""
    if name == NORMAL:
        return torch.zeros(size, size, 1)
    v = torch.as_tensor(value, dtype=torch.float64).reshape(1, 1, PARAMETERS[name].size)
    return to_unconstrained(name, v, bounds).expand(size, size, -1).float().clone()


def slopes(height: torch.Tensor) -> torch.Tensor:
    """(H, W, 2) a normal map's slopes (p, q) = (-dh/du, -dh/dv) per texel, in texel units,
    from its height field ``height`` (H, W, 1) (texel units, row 0 at the top, repeating as
    the lookup does): central differences, so the normals are a height field's (no curl) and
    the map has half the unknowns of free slopes. The texel's normal is normalize(p, q, 1)."""
    h = height[..., 0]
    p = -(torch.roll(h, -1, 1) - torch.roll(h, 1, 1)) / 2
    q = (torch.roll(h, -1, 0) - torch.roll(h, 1, 0)) / 2  # row index grows as v falls
    return torch.stack([p, q], -1)


def map_values(name: str, grid: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    """The map (H, W, C) in the parameter's units (a normal map: encoded colour, the
    tangent-space normal n as (n + 1) / 2) for an unconstrained ``grid``."""
    if name == NORMAL:
        s = slopes(grid)
        return 0.5 * (_unit(torch.cat([s, torch.ones_like(s[..., :1])], -1)) + 1.0)
    return from_unconstrained(name, grid, bounds)


def normalized(name: str, grid: torch.Tensor) -> torch.Tensor:
    """What the regularizers see of a grid: the parameter's [0, 1] range (the logistic of
    the variable); a normal map's slopes (:func:`slopes`)."""
    return slopes(grid) if name == NORMAL else torch.sigmoid(grid)
