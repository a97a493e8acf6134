"""Random-walk subsurface scattering for the path backend (:mod:`pbrfit.pathtrace`).

Built as Cycles' "Random Walk" BSSRDF (Blender 4/5); :class:`SubsurfaceWalk` says how and
where it differs. Units: world (scene) units for distances; the mean free path is
``subsurface_radius * subsurface_scale / (4 pi)`` per channel, as in Cycles
(:data:`RADIUS_TO_MEAN_FREE_PATH`); colours linear Rec.709.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import bsdf
from .gbuffer import surface_points
from .microfacet import sample_vndf, specular_eta
from .scene_renderer import SceneRenderer

__all__ = ["Exits", "SubsurfaceWalk"]

#: Cycles' fit of the single-scattering albedo that gives a semi-infinite slab of
#: isotropic medium the multiple-scattering albedo A (Chiang, Kutz & Burley 2016, refitted in
#: Cycles for anisotropy; these are its g = 0 coefficients)
_ALBEDO_FIT = (1.8260523782, 4.98511194385 + 0.127355959438, 1.09686102424,
               0.496310210422, 4.23190299701 + 0.00310603949088, 2.40602999408)
_MIN_ALPHA = 0.2
#: Cycles' mean free path is ``subsurface_radius * subsurface_scale / (4 pi)``:
#: ``bssrdf_setup_radius`` scales the radius by ``0.25 / pi`` for Random Walk (and Burley) "so
#: it gives similar looking result to older Cubic, Gaussian and Burley models". Without it the
#: wax on Suzanne rendered its red 0.81x Cycles' on the lit side and 1.25x on the shadowed side
#: (light carried 12.6x too far: through the ears and away).
RADIUS_TO_MEAN_FREE_PATH = 0.25 / np.pi
#: how deep the walks start under the surface (Cycles starts them on it, the entry triangle
#: excluded from the first query): a share of the shortest mean free path, floored at a few
#: float32 steps of the part's largest coordinate (the ray caster's origins are float32; this
#: floor wins) and otherwise capped at the caster's epsilon. A floor of 0.05 epsilon (11 % of
#: the short wax's blue mean free path) read that blue 5 % dark against Cycles; a start at the
#: epsilon itself, 15 %.
ENTRY_DEPTH_SHARE = 0.01
ENTRY_DEPTH_ULPS = 16
#: the refracted entry's GGX alpha is the Principled roughness squared (``bssrdf->alpha =
#: sqr(roughness)`` in Cycles' Principled closure; the fixed alpha 1 is Random Walk (Skin)'s):
#: floored so a mirror-smooth part still samples a finite lobe
ENTRY_MIN_ALPHA = 1e-4


def _tensor(v) -> torch.Tensor:
    """``v`` itself when a tensor (on its device), else a CPU tensor of it."""
    return v if isinstance(v, torch.Tensor) else torch.as_tensor(v, device="cpu")


def _per_point(v, n: int, device) -> torch.Tensor:
    """A scalar parameter as (n, 1): one value broadcast, or the n values of a map looked up
    at the walks' entry points."""
    t = torch.as_tensor(v, device=device).reshape(-1, 1)
    return t.expand(n, 1) if len(t) == 1 else t


@dataclass
class Exits:
    """Where a batch of walks left the part: each exit continues as a path vertex whose BSDF
    is a unit-albedo Lambert, weighted by its walk's throughput."""

    path: torch.Tensor        # index (into the walk's entry points) of each exit
    weight: torch.Tensor      # (E, 3) F(theta), non-zero in the walk's channel only
    position: np.ndarray
    normal_geo: np.ndarray    # outward
    frame: torch.Tensor
    wo: torch.Tensor


class SubsurfaceWalk:
    """Random-walk subsurface scattering, built as Cycles' "Random Walk" BSSRDF (Blender 4/5).

    Entry (as Cycles' Random Walk in Blender 5.0, ``subsurface_entry_bounce``): refraction
    through a GGX interface of alpha roughness^2 and the Principled IOR (after Specular IOR
    Level), sampled from the visible normals of the view direction; only the direction is
    sampled (no Fresnel or BSDF weight). The 50 % cosine entry and alpha 1 in that function
    are Random Walk (Skin)'s; a cosine half here read the long-mean-free-path wax's blue 3.4 %
    bright against Cycles. Inside: a homogeneous isotropic
    medium with per-channel extinction ``sigma_t = 1 / (subsurface_radius *
    subsurface_scale * RADIUS_TO_MEAN_FREE_PATH)`` (world units; Cycles' 1/(4 pi)) and
    single-scattering albedo inverted from Base Color
    with Cycles' fit (so a thick slab reflects about Base Color; a low albedo is raised to
    0.2 with the throughput lowered to match). Exit: where the walk crosses the surface,
    through a unit-albedo Lambertian BSDF. The closure's weight is ``subsurface_weight *
    base_color`` under the layers above (:func:`pbrfit.bsdf.principled_eval` with
    ``subsurface_transport``), divided by the albedo (the walk supplies the colour). As in
    Cycles, a path that has already bounced diffusely renders subsurface as diffuse.

    Differences from Cycles: each colour channel walks separately (three analog walks per
    entry, weights alpha**k, no ratios) instead of one walk with spectral MIS, and walks are
    not guided (Cycles uses Dwivedi sampling): with one walk for all channels, products of
    hundreds of per-channel MIS ratios gave heavy-tailed colour noise. Walks longer than
    ``max_steps`` scattering events are dropped, as in Cycles (``BSSRDF_MAX_BOUNCES``, 256);
    the energy they carry is not small near Base Color 1: at 0.9 (single-scattering albedo
    0.9992) a semi-infinite slab loses 3.3% of its light between 128 and 256 steps, and a
    cap at 128 made the wax's fitted red read 0.93 for 0.9. Anisotropy is 0.

    Gradients: detached sampling; each free flight contributes ``sigma_s T(t) / detach(...)``
    or ``T(t) / detach(T(t))`` at the exit, so radius, scale and base colour get gradients
    through the transport itself. In a homogeneous medium their product depends only on the
    walk's scattering count and total distance, so the steps track those two numbers and the
    weight is formed once per exit (the same values and gradients as the per-step product; a
    per-step autograd product made a wax render with its gradient 3.3x slower:
    scripts/benchmark_walk_speed.py).
    """

    max_steps = 256

    @staticmethod
    def for_material(m: dict) -> SubsurfaceWalk | None:
        w = m.get("subsurface_weight")
        if w is None:
            return None
        w = _tensor(w)
        return SubsurfaceWalk() if (w.requires_grad or bool((w > 0).any())) else None

    @staticmethod
    def coefficients(m: dict):
        """(sigma_t, alpha, throughput scale) per channel, differentiable."""
        base = _tensor(m["base_color"]).clamp(1e-4, 1.0)
        radius = torch.as_tensor(m.get("subsurface_radius", [1.0, 0.2, 0.1]), device=base.device)
        scale = torch.as_tensor(m.get("subsurface_scale", 0.05), device=base.device)
        sigma_t = 1.0 / (RADIUS_TO_MEAN_FREE_PATH * radius * scale).clamp_min(1e-8)
        a, b, c, d, e, f = _ALBEDO_FIT
        blend = base ** 0.25
        alpha = ((1 - blend) * a * torch.atan(b * base) ** c + blend * d * torch.atan(e * base) ** f).clamp(0, 0.999999)
        low = alpha < _MIN_ALPHA
        scale_thr = torch.where(low, alpha / _MIN_ALPHA, torch.ones_like(alpha))
        alpha = torch.where(low, torch.full_like(alpha, _MIN_ALPHA), alpha)
        return sigma_t, alpha, scale_thr

    @staticmethod
    def depth_floor(mesh) -> float:
        """The shallowest start under the surface that float32 origins keep below it:
        :data:`ENTRY_DEPTH_ULPS` float32 steps at the part's largest coordinate."""
        largest = np.float32(np.abs(mesh.positions).max())
        return float(ENTRY_DEPTH_ULPS * np.spacing(largest))

    @staticmethod
    def _entry(m_fixed: dict, frame: torch.Tensor, wo: torch.Tensor, u: torch.Tensor) -> np.ndarray:
        """World directions into the part: refraction through a GGX interface of alpha
        roughness^2 and the Principled IOR (adjusted by Specular IOR Level, as Cycles' ``eta``),
        from the visible normals of the view direction, as Cycles' ``subsurface_entry_bounce``
        for Random Walk (its 50 % cosine entry and alpha 1 are Random Walk (Skin)'s)."""
        n = len(wo)
        ior = _per_point(m_fixed.get("ior", 1.5), n, wo.device)
        level = _per_point(m_fixed.get("specular_ior_level", 0.5), n, wo.device)
        ior = specular_eta(ior, level).clamp(1.01, 3.8)  # bssrdf_setup's clamp
        roughness = _per_point(m_fixed.get("roughness", 0.5), n, wo.device)
        view = torch.cat([wo[:, :2], wo[:, 2:3].clamp_min(1e-4)], -1)
        view = view / view.norm(dim=-1, keepdim=True)
        a = (roughness * roughness).clamp(ENTRY_MIN_ALPHA, 1.0)
        h = sample_vndf(view, a, a, torch.stack([u[:, 0].clamp(0, 1 - 1e-7), u[:, 1]], -1))
        cos_hi = (h * view).sum(-1, keepdim=True)
        eta = 1.0 / ior
        k = torch.sqrt((1 - eta * eta * (1 - cos_hi * cos_hi)).clamp_min(1e-14))
        local = -eta * view + (eta * cos_hi - k) * h
        d = torch.einsum("pij,pi->pj", frame, local)
        return (d / d.norm(dim=-1, keepdim=True)).double().cpu().numpy()

    def run(self, renderer: SceneRenderer, material: dict, m_fixed: dict, position, normal_geo, frame, wo,
            u_entry: torch.Tensor, seed: int) -> Exits | None:
        """Walks from the vertices at ``position`` (their tensors on the renderer's device). The
        walks run on the CPU (their steps are ray queries, one per scattering event); the exits
        come back on the renderer's device."""
        caster, mesh, device, cpu = renderer.caster, renderer.scene.mesh, renderer.device, torch.device("cpu")

        def host(m: dict) -> dict:
            return {k: v.to(cpu) if isinstance(v, torch.Tensor) else torch.as_tensor(v, device=cpu)
                    for k, v in m.items()}

        material, m_fixed = host(material), host(m_fixed)
        frame, wo, u_entry = frame.to(cpu), wo.to(cpu), u_entry.to(cpu)
        n = len(position)
        closure = bsdf.principled_eval(material, wo, wo, subsurface_transport=True)[1]
        base = material["base_color"].clamp(1e-4, 1.0)
        # per entry point and channel (a map's values differ between points)
        sigma_t, alpha, scale_thr = (c.expand(n, 3) for c in self.coefficients(material))
        sigma_fixed = sigma_t.detach()
        start = (closure / base) * scale_thr  # (n, 3) F at entry
        d_in = self._entry(m_fixed, frame, wo, u_entry)
        ok = np.nonzero((normal_geo * d_in).sum(-1) < 0)[0]
        # one analog walk per entry and channel; the walk's weight is a closed form of how many
        # times it scattered (k) and how far it went (distance), both tracked as plain arrays:
        # start * alpha^k * (sigma_t / detach(sigma_t))^k * exp(-(sigma_t - detach(sigma_t)) distance),
        # the product of the per-flight factors sigma_s T / detach(sigma_t T) (scatter) and
        # T / detach(T) (exit), without an autograd node per step
        depth = max(min(caster.epsilon, ENTRY_DEPTH_SHARE / float(sigma_fixed.max())), self.depth_floor(mesh))
        # the walks' state, one row per walk, packed so that dropping the walks that left is one
        # gather per step (a gather per array was a sixth of the walk's time): position (0:3),
        # direction (3:6), the detached sigma_t of its channel (6) and the distance it went (7);
        # entry point, channel and scattering count
        state = np.empty((3 * len(ok), 8))
        state[:, 0:3] = np.repeat(position[ok] - normal_geo[ok] * depth, 3, axis=0)
        state[:, 3:6] = np.repeat(d_in[ok], 3, axis=0)
        state[:, 7] = 0.0
        ids = np.stack([np.repeat(ok, 3), np.tile(np.arange(3), len(ok)), np.zeros(3 * len(ok), np.int64)], -1)
        state[:, 6] = sigma_fixed.double().numpy()[ids[:, 0], ids[:, 1]]
        x, d, travelled = state[:, 0:3], state[:, 3:6], state[:, 7]
        gen = torch.Generator(device=cpu).manual_seed(seed)
        exited = []
        for _ in range(self.max_steps):
            if len(state) == 0:
                break
            r = torch.rand(len(state), 3, generator=gen, dtype=torch.float64, device=cpu).numpy()
            t = -np.log1p(-r[:, 0]) / state[:, 6]
            hits = caster.intersect(x, d, t)  # bounded by the flight: the traversal stops there
            leave = hits.hit & (hits.t < t)
            dist = np.where(leave, hits.t, t)
            travelled += dist
            li = np.nonzero(leave)[0]
            if len(li):
                exited.append((ids[li], travelled[li], hits.triangle[li], hits.barycentric[li], d[li]))
            x += d * dist[:, None]  # every walk moves and turns; those that left are dropped after
            ids[:, 2] += 1
            d[:, 2] = 1 - 2 * r[:, 1]  # the isotropic phase function's new direction
            s_ = np.sqrt(np.maximum(0.0, 1 - d[:, 2] * d[:, 2]))
            phi = 2 * np.pi * r[:, 2]
            np.multiply(s_, np.cos(phi), out=d[:, 0])
            np.multiply(s_, np.sin(phi), out=d[:, 1])
            if len(li):
                stay = np.nonzero(~leave)[0]
                state, ids = state[stay], ids[stay]
                x, d, travelled = state[:, 0:3], state[:, 3:6], state[:, 7]
        if not exited:
            return None
        who = np.concatenate([e[0] for e in exited])
        entry = torch.as_tensor(who[:, 0], device=cpu)
        ch = torch.as_tensor(who[:, 1], device=cpu)
        k = torch.as_tensor(who[:, 2], dtype=torch.float32, device=cpu)
        dist = torch.as_tensor(np.concatenate([e[1] for e in exited]), dtype=torch.float32, device=cpu)
        sig = sigma_t[entry, ch]
        thr = (start[entry, ch] * alpha[entry, ch] ** k * (sig / sig.detach()) ** k
               * torch.exp(-(sig - sig.detach()) * dist))
        weight = torch.zeros(len(entry), 3, device=cpu).index_put((torch.arange(len(entry), device=cpu), ch), thr)
        # the exit points' geometry once for all steps (per step it cost as much as the ray queries)
        surf = surface_points(mesh, *(np.concatenate([e[i] for e in exited]) for i in (2, 3, 4)))
        return Exits(entry.to(device), weight.to(device), surf.position, surf.normal_geo,
                     torch.as_tensor(surf.frame, dtype=torch.float32, device=device),
                     torch.tensor([[0.0, 0.0, 1.0]], device=device).expand(len(entry), 3))
