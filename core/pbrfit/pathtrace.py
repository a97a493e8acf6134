"""The path backend: Monte Carlo path tracing with path replay backpropagation (PRB).

Where the raster backend (:mod:`pbrfit.render`) shades only light arriving straight from the
environment, this backend follows light along paths that bounce off the part any number
of times (up to ``max_depth`` surface vertices): glossy and diffuse interreflection,
light reflected under a coat onto a neighbouring face, and the part occluding itself.

**One material model.** Every BSDF value, sample and pdf comes from :mod:`pbrfit.bsdf`, the
same torch functions the raster backend calls; nothing here restates the material.

**Ray tracing** runs on Mitsuba 3 / Dr.Jit through :class:`pbrfit.raycast.RayCaster`
(``llvm_ad_rgb`` on CPU, ``cuda_ad_rgb`` with ``--device cuda``): closest hits of the
bounce rays and shadow rays of next-event estimation. Geometry, cameras and lighting are
fixed during a material fit, so ray queries carry no gradient. Mitsuba's own ``prb``
integrator cannot be used as is: it would need the material as a Mitsuba BSDF, and a
Python BSDF that calls torch would have to run with Dr.Jit's symbolic calls and loops
switched off, under which Mitsuba 3.9 / Dr.Jit 1.5 abort in the adjoint pass
("schedule contains variable ... of kind bitcast with incompatible size"). The estimator
below implements the same algorithm (Vicini, Speierer and Jakob 2021) on the same ray
tracer, wavefront style.

**Estimator.** Primary hits are the raster backend's G-buffer (one ray through each pixel
centre), so both backends see exactly the same surface points. At each vertex: one
next-event-estimation sample of the environment (importance sampled from the HDRI,
:class:`pbrfit.envmap.EnvironmentMap`) with a shadow ray, and one direction sampled from
the BSDF's lobe mixture (:func:`pbrfit.bsdf.sample_principled`), combined with the power
heuristic. A BSDF direction that escapes picks up the environment; one that hits the part
continues the path. Random numbers are a scrambled Sobol sequence over the samples of a
pixel, shifted per pixel (Cranley-Patterson), 5 dimensions per vertex.

**Gradients** (material parameters only). Sampling is detached: directions follow the
current material without gradient and each BSDF value f(theta) is divided by its detached
pdf, which is an unbiased estimator of the derivative of the pixel integral. Path replay:
the backward pass first re-traces the paths of its seed without gradient to get each
path's radiance L, then replays them with the same random numbers; at vertex k the
radiance still ahead, ``L - (what vertices before k and k's own emitter sample gave)``,
times ``f_k(theta) / detach(f_k)``, plus the emitter sample's ``f(theta)`` term, is
back-propagated at once, so memory does not grow with path length. The loss's image and
the gradient's paths use different seeds (decorrelated primal and adjoint, as Mitsuba's
``seed`` and ``seed_grad``), so the gradient of a squared error is unbiased.

**Seeds.** Seeds are a pure function of (renderer seed, iteration, view, pass): a run with
the same job and options reproduces bit for bit on the same machine. The fit advances the
iteration (:meth:`PathRenderer.next_iteration`); renderers used for validation and metrics
never do, so their comparisons across iterations use common random numbers.

Units and frames follow :mod:`pbrfit.render`: linear Rec.709 radiance in the HDRI's units,
world-space directions, local shading frames with +z the shading normal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import bsdf
from .envmap import EnvironmentMap
from .raycast import RayCaster
from .render import ViewGeometry, _view_geometry, flush_subnormals, surface_points
from .scene import FitScene

__all__ = ["PathSettings", "PathRenderer"]

_DIMS_PER_VERTEX = 5  # lobe, BSDF direction (2), emitter direction (2)


@dataclass(frozen=True)
class PathSettings:
    """How the path backend samples.

    Attributes:
        spp: paths per pixel.
        max_depth: surface vertices per path (1 = direct lighting only, like the raster
            backend; Cycles' default allows 12 bounces, of which past the 4th almost
            nothing reaches a camera looking at one part).
    """

    spp: int = 16
    max_depth: int = 4


@dataclass
class _PreparedView:
    geometry: ViewGeometry
    env: EnvironmentMap


def _mix_seed(*parts: int) -> int:
    """A 31-bit seed from integers (splitmix-style), the same on every platform."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h ^= (int(p) + 0x9E3779B97F4A7C15 + ((h << 6) & 0xFFFFFFFFFFFFFFFF) + (h >> 2)) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return int(h & 0x7FFFFFFF)


class PathRenderer:
    """Path-traced views of the part for a material; differentiable in the material (PRB).

    Same interface as :class:`pbrfit.render.RasterRenderer` (``prepare``, ``shade``,
    ``render_image``, ``train_subsets``, ``environment``), so the fit's objective, losses
    and optimizers run unchanged on either.

    Args:
        scene: the fit scene.
        settings: samples per pixel and path depth.
        seed: base seed of every random number.
        max_loss_pixels: per view, at most this many pixels enter the training loss.
        device: "cpu" or "cuda" (ray tracing; shading runs in torch on CPU).
    """

    def __init__(self, scene: FitScene, settings: PathSettings = PathSettings(), seed: int = 0,
                 max_loss_pixels: int = 4096, device: str = "cpu"):
        self.scene = scene
        self.settings = settings
        self.seed = seed
        self.max_loss_pixels = max_loss_pixels
        self.caster = RayCaster(scene.mesh, device=device)
        self.iteration = 0
        self._prepared: dict[int, _PreparedView] = {}
        self._env_cache: dict[int, EnvironmentMap] = {}
        self.train_subsets: dict[int, np.ndarray] = {}

    # --- preparation ------------------------------------------------------------------------
    def environment(self, view_index: int) -> EnvironmentMap:
        env = self.scene.views[view_index].environment
        if id(env) not in self._env_cache:
            self._env_cache[id(env)] = EnvironmentMap(env)
        return self._env_cache[id(env)]

    def prepare(self, view_index: int) -> _PreparedView:
        if view_index not in self._prepared:
            geo = _view_geometry(self.scene.mesh, self.caster, self.scene.views[view_index])
            q = geo.loss_pixels
            if len(q) > self.max_loss_pixels:
                gen = torch.Generator().manual_seed(_mix_seed(self.seed, view_index, 7))
                q = np.sort(q[torch.randperm(len(q), generator=gen)[: self.max_loss_pixels].numpy()])
            self.train_subsets[view_index] = q
            self._prepared[view_index] = _PreparedView(geo, self.environment(view_index))
        return self._prepared[view_index]

    def next_iteration(self) -> None:
        """Move the seed schedule on: the next ``shade`` draws fresh paths."""
        self.iteration += 1

    def seeds(self, view_index: int) -> tuple[int, int]:
        """(primal seed, gradient seed) of the current iteration for a view."""
        return (_mix_seed(self.seed, self.iteration, view_index, 0),
                _mix_seed(self.seed, self.iteration, view_index, 1))

    # --- shading ----------------------------------------------------------------------------
    def shade(self, view_index: int, material: dict[str, torch.Tensor], sel: np.ndarray | None = None) -> torch.Tensor:
        """Pixel radiance (S, 3) of the covered pixels ``sel`` (all if None), the mean of
        ``spp`` paths each. Differentiable in the material tensors by path replay."""
        pv = self.prepare(view_index)
        if sel is None:
            sel = np.arange(len(pv.geometry.pixels))
        names = sorted(material)
        values = [torch.as_tensor(material[n]) for n in names]
        primal, adjoint = self.seeds(view_index)
        return _PathRadiance.apply(self, view_index, np.asarray(sel), (primal, adjoint), names, *values)

    def render_image(self, view_index: int, material: dict[str, torch.Tensor], chunk: int = 2048) -> np.ndarray:
        """Full image (H, W, 3) float32, zero where the part is not; no gradients."""
        geo = self.prepare(view_index).geometry
        out = np.zeros((geo.height * geo.width, 3), np.float32)
        with torch.no_grad():
            for s in range(0, len(geo.pixels), chunk):
                sel = np.arange(s, min(s + chunk, len(geo.pixels)))
                out[geo.pixels[sel]] = self.shade(view_index, material, sel).numpy()
        return out.reshape(geo.height, geo.width, 3)

    # --- the integrator ---------------------------------------------------------------------
    def _uniforms(self, seed: int, pixels: int) -> torch.Tensor:
        """(pixels * spp, D) uniforms: Sobol points over a pixel's paths, shifted per pixel."""
        spp, dims = self.settings.spp, _DIMS_PER_VERTEX * self.settings.max_depth
        gen = torch.Generator().manual_seed(seed)
        sobol = torch.quasirandom.SobolEngine(dims, scramble=True, seed=_mix_seed(seed, 1)).draw(spp, dtype=torch.float64)
        shift = torch.rand(pixels, 1, dims, generator=gen, dtype=torch.float64)
        return ((sobol[None] + shift) % 1.0).clamp(0, 1 - 1e-7).reshape(pixels * spp, dims).float()

    def trace(self, view_index: int, material: dict[str, torch.Tensor], sel: np.ndarray, seed: int,
              adjoint: tuple[torch.Tensor, torch.Tensor] | None = None, *, attached: bool = False) -> torch.Tensor:
        """Trace ``spp`` paths per pixel of ``sel``.

        Without ``adjoint``: returns each path's radiance (S * spp, 3), no gradient.
        With ``adjoint = (dL_path (S * spp, 3), L_path (S * spp, 3))``, the gradient of the
        loss with respect to each path's radiance and that radiance from a primal trace
        with the same seed: replays the paths and back-propagates into the material
        tensors that require grad (path replay); returns the same radiance.
        With ``attached``: the same paths with the whole computation recorded for torch's
        autograd (memory grows with path length; the reference PRB is tested against).
        """
        with flush_subnormals():
            return self._trace(view_index, material, sel, seed, adjoint, attached)

    def _trace(self, view_index, material, sel, seed, adjoint, attached):
        pv = self.prepare(view_index)
        geo, env = pv.geometry, pv.env
        mesh, caster = self.scene.mesh, self.caster
        spp = self.settings.spp
        n_paths = len(sel) * spp
        u_all = self._uniforms(seed, len(sel))
        rows = np.repeat(np.asarray(sel), spp)
        m_fixed = {k: v.detach() for k, v in material.items()}
        replay = adjoint is not None
        if replay:
            d_loss, l_total = adjoint
        walk = SubsurfaceWalk.for_material(material)
        p_walk = walk.probability(m_fixed) if walk is not None else 0.0

        def keep_grad(t: torch.Tensor) -> torch.Tensor:
            return t if attached else t.detach()

        # path state (alive paths only); index = path ids into the (S * spp) batch
        index = torch.arange(n_paths)
        position = geo.position[rows]
        normal_geo = geo.normal_geo[rows]
        frame = geo.frame[torch.as_tensor(rows)].to(torch.float32)
        wo = geo.wo[torch.as_tensor(rows)]
        lambert = torch.zeros(n_paths, dtype=torch.bool)  # subsurface exits: unit-albedo Lambert
        beta = torch.ones(n_paths, 3)
        radiance = torch.zeros(n_paths, 3)
        eps = caster.epsilon

        def surface_f(idx, wi):
            """BSDF value * cos of the vertices ``idx`` (the Principled BSDF, or Lambert at exits)."""
            lam = lambert[idx]
            f = torch.zeros(len(idx), 3)
            if bool((~lam).any()):
                sub = torch.nonzero(~lam)[:, 0]
                out = bsdf.principled_eval(material, wo[idx[sub]], wi[sub], subsurface_transport=walk is not None)
                f = f.index_put((sub,), out[0] if walk is not None else out)
            if bool(lam.any()):
                sub = torch.nonzero(lam)[:, 0]
                f = f.index_put((sub,), (wi[sub, 2:3].clamp_min(0) / np.pi).expand(-1, 3))
            return f

        def surface_pdf(idx, wi):
            """Density of the vertices' BSDF sampling (lobe mixture, or cosine at exits)."""
            cos_pdf = wi[:, 2].clamp_min(0) / np.pi
            pdf = bsdf.pdf_principled(m_fixed, wo[idx], wi) * (1 - p_walk)
            return torch.where(lambert[idx], cos_pdf, pdf)

        for depth in range(self.settings.max_depth):
            if len(index) == 0:
                break
            u = u_all[index, depth * _DIMS_PER_VERTEX:(depth + 1) * _DIMS_PER_VERTEX]
            origins = position + normal_geo * eps
            all_rows = torch.arange(len(index))
            surrogate = torch.zeros(())

            # next-event estimation: one environment sample, shadow ray, power heuristic
            d_light, pdf_light = env.warp(u[:, 3:5])
            wi_light = torch.einsum("pij,pj->pi", frame, d_light)
            above = (wi_light[:, 2] > 0) & torch.as_tensor((normal_geo * d_light.double().numpy()).sum(-1) > 0)
            vis = torch.zeros(len(index), dtype=torch.bool)
            if bool(above.any()):
                a = above.numpy()
                vis[above] = ~torch.as_tensor(caster.occluded(origins[a], d_light.double().numpy()[a]))
            if bool(vis.any()):
                idx = torch.nonzero(vis)[:, 0]
                f = surface_f(idx, wi_light[idx])
                p_b = surface_pdf(idx, wi_light[idx])
                p_l = pdf_light[idx]
                w = p_l * p_l / (p_l * p_l + p_b * p_b).clamp_min(1e-30)
                contrib = f * (env.radiance(d_light[idx]) * (w / p_l.clamp_min(1e-30))[:, None]) * beta[idx]
                if replay:
                    surrogate = surrogate + (d_loss[index[idx]] * contrib).sum()
                radiance = radiance.index_add(0, index[idx], keep_grad(contrib))

            # scatter: into the part (subsurface random walk) or off the surface (BSDF sample)
            into = (~lambert) & (u[:, 0] < p_walk)
            u_lobe = torch.where(lambert, u[:, 0], (u[:, 0] - p_walk) / max(1 - p_walk, 1e-12))
            wi, _ = bsdf.sample_principled(m_fixed, wo, u_lobe, u[:, 1:3])
            wi = torch.where(lambert[:, None], bsdf._cosine_hemisphere(u[:, 1:3]), wi)
            pdf = surface_pdf(all_rows, wi)
            d = torch.einsum("pij,pi->pj", frame, wi)
            d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            d_np = d.double().numpy()
            ok = (~into) & (wi[:, 2] > 0) & (pdf > 0) & torch.as_tensor((normal_geo * d_np).sum(-1) > 0)
            idx = torch.nonzero(ok)[:, 0]
            f = surface_f(idx, wi[idx])
            keep = (f.detach() > 0).any(-1)
            idx, f, pdf_s = idx[keep], f[keep], pdf[idx[keep]]

            exits = None
            if bool(into.any()):
                w_idx = torch.nonzero(into)[:, 0]
                exits = walk.run(self, material, m_fixed, position[w_idx.numpy()], normal_geo[w_idx.numpy()],
                                 frame[w_idx], wo[w_idx], u[w_idx, 1:3], _mix_seed(seed, depth, 11))
            # per scattered path: F(theta) (BSDF value or walk weight) over its detached pdf
            scattered = [(idx, f, pdf_s)]
            if exits is not None:
                w_ok = w_idx[exits.path]
                scattered.append((w_ok, exits.weight, torch.full((len(w_ok),), p_walk)))
            if replay:
                for s_idx, s_f, _ in scattered:
                    if len(s_idx):
                        # radiance still ahead of this vertex along the scattered path
                        f_fixed = s_f.detach()
                        ahead = l_total[index[s_idx]] - radiance[index[s_idx]].detach()
                        ratio = torch.where(f_fixed > 0, ahead / f_fixed.clamp_min(1e-30), torch.zeros_like(ahead))
                        surrogate = surrogate + (d_loss[index[s_idx]] * ratio * s_f).sum()
                if surrogate.requires_grad:
                    surrogate.backward()

            throughput = beta[idx] * keep_grad(f) / pdf_s[:, None]
            idx_np = idx.numpy()
            hits = caster.intersect(origins[idx_np], d_np[idx_np])
            miss = ~hits.hit
            if miss.any():
                mi = torch.as_tensor(np.nonzero(miss)[0])
                dm = d[idx[mi]]
                p_l = env.pdf(dm)
                p_b = pdf_s[mi]
                w = p_b * p_b / (p_b * p_b + p_l * p_l).clamp_min(1e-30)
                radiance = radiance.index_add(0, index[idx[mi]], throughput[mi] * env.radiance(dm) * w[:, None])
            if depth + 1 == self.settings.max_depth:
                break
            hit = np.nonzero(hits.hit)[0]
            surf = surface_points(mesh, hits.triangle[hit], hits.barycentric[hit], -d_np[idx_np[hit]])
            next_index = [index[idx[torch.as_tensor(hit, dtype=torch.long)]]]
            parts = [(surf.position, surf.normal_geo, torch.as_tensor(surf.frame, dtype=torch.float32),
                      torch.as_tensor(surf.wo, dtype=torch.float32), torch.zeros(len(hit), dtype=torch.bool),
                      throughput[torch.as_tensor(hit, dtype=torch.long)])]
            if exits is not None and len(w_ok):
                next_index.append(index[w_ok])
                thr = beta[w_ok] * keep_grad(exits.weight) / p_walk
                parts.append((exits.position, exits.normal_geo, exits.frame, exits.wo,
                              torch.ones(len(w_ok), dtype=torch.bool), thr))
            index = torch.cat(next_index)
            position = np.concatenate([q[0] for q in parts])
            normal_geo = np.concatenate([q[1] for q in parts])
            frame = torch.cat([q[2] for q in parts])
            wo = torch.cat([q[3] for q in parts])
            lambert = torch.cat([q[4] for q in parts])
            beta = torch.cat([q[5] for q in parts])
        return radiance


#: Cycles' fit of the single-scattering albedo that gives a semi-infinite slab of
#: isotropic medium the multiple-scattering albedo A (Chiang, Kutz & Burley 2016, refitted in
#: Cycles for anisotropy; these are its g = 0 coefficients)
_ALBEDO_FIT = (1.8260523782, 4.98511194385 + 0.127355959438, 1.09686102424,
               0.496310210422, 4.23190299701 + 0.00310603949088, 2.40602999408)
_MIN_ALPHA = 0.2


@dataclass
class _Exits:
    path: torch.Tensor        # indices (into the walkers) of walks that left the part
    weight: torch.Tensor      # (E, 3) F(theta): closure weight / albedo * walk throughput
    position: np.ndarray
    normal_geo: np.ndarray    # outward
    frame: torch.Tensor
    wo: torch.Tensor


class SubsurfaceWalk:
    """Random-walk subsurface scattering, as Cycles' "Random Walk" BSSRDF is built.

    Light enters through a Lambertian interface (cosine-distributed into the part), walks
    through a homogeneous isotropic medium with per-channel extinction
    ``sigma_t = 1 / (subsurface_radius * subsurface_scale)`` (scene units) and
    single-scattering albedo inverted from Base Color with Cycles' fit (so that a thick slab
    reflects Base Color), and leaves where the walk crosses the surface, through a
    unit-albedo Lambertian interface. Distances are sampled in one colour channel chosen in
    proportion to throughput * albedo and weighted by the balance heuristic over the
    three (spectral MIS). The closure's weight is ``subsurface_weight * base_color`` under the
    layers above (:func:`pbrfit.bsdf.principled_eval` with ``subsurface_transport``).

    Differences from Cycles 4/5: its "Random Walk" method refracts through the Principled's
    IOR at entry and exit instead of a Lambertian interface, and guides walks (Dwivedi
    sampling) to lower the noise; anisotropy (``subsurface_anisotropy``) is 0 here.
    Walks longer than ``max_steps`` are dropped (Cycles allows 256).
    """

    max_steps = 128

    @staticmethod
    def for_material(m: dict) -> "SubsurfaceWalk | None":
        w = m.get("subsurface_weight")
        if w is None:
            return None
        w = torch.as_tensor(w)
        return SubsurfaceWalk() if (w.requires_grad or bool((w > 0).any())) else None

    @staticmethod
    def probability(m_fixed: dict) -> float:
        """Probability of entering the part rather than sampling the surface BSDF."""
        ref = torch.zeros(1, 3)
        diffuse = float(bsdf.lobe_probabilities(m_fixed, ref)[..., 0].reshape(-1)[0])
        w = float(torch.as_tensor(m_fixed.get("subsurface_weight", 0.0)).clamp(0, 1).reshape(-1)[0])
        return min(max(diffuse * w, 0.05 if w > 0 else 0.0), 0.95)

    @staticmethod
    def coefficients(m: dict):
        """(sigma_t, alpha, throughput scale) per channel, differentiable."""
        base = torch.as_tensor(m["base_color"]).clamp(1e-4, 1.0)
        radius = torch.as_tensor(m.get("subsurface_radius", [1.0, 0.2, 0.1]))
        scale = torch.as_tensor(m.get("subsurface_scale", 0.05))
        sigma_t = 1.0 / (radius * scale).clamp_min(1e-8)
        a, b, c, d, e, f = _ALBEDO_FIT
        blend = base ** 0.25
        alpha = ((1 - blend) * a * torch.atan(b * base) ** c + blend * d * torch.atan(e * base) ** f).clamp(0, 0.999999)
        # Cycles raises a low albedo to 0.2 and lowers the throughput to compensate
        low = alpha < _MIN_ALPHA
        scale_thr = torch.where(low, alpha / _MIN_ALPHA, torch.ones_like(alpha))
        alpha = torch.where(low, torch.full_like(alpha, _MIN_ALPHA), alpha)
        return sigma_t, alpha, scale_thr

    def run(self, renderer: PathRenderer, material: dict, m_fixed: dict, position, normal_geo, frame, wo,
            u_entry: torch.Tensor, seed: int) -> _Exits | None:
        caster, mesh = renderer.caster, renderer.scene.mesh
        n = len(position)
        out = bsdf.principled_eval(material, wo, wo, subsurface_transport=True)[1]
        base = torch.as_tensor(material["base_color"]).clamp(1e-4, 1.0)
        sigma_t, alpha, scale_thr = self.coefficients(material)
        sigma_t_fixed, alpha_fixed = sigma_t.detach(), alpha.detach()
        weight = (out / base) * scale_thr * torch.ones(n, 3)
        # entry: cosine about the inward shading normal, below the geometric surface
        d_local = bsdf._cosine_hemisphere(u_entry)
        d_local = torch.stack([d_local[:, 0], d_local[:, 1], -d_local[:, 2]], -1)
        d = torch.einsum("pij,pi->pj", frame, d_local).double().numpy()
        alive = np.nonzero((normal_geo * d).sum(-1) < 0)[0]
        x = position[alive] - normal_geo[alive] * caster.epsilon
        d = d[alive]
        gen = torch.Generator().manual_seed(seed)
        rand = torch.rand(self.max_steps, n, 4, generator=gen, dtype=torch.float64)[:, alive]
        walker = torch.as_tensor(alive)
        thr = weight[walker]
        exited = []
        for step in range(self.max_steps):
            if len(walker) == 0:
                break
            r = rand[step][_positions(walker, alive)]
            # channel by throughput * albedo, distance in that channel
            probs = (thr.detach() * alpha_fixed).clamp_min(0)
            probs = probs / probs.sum(-1, keepdim=True).clamp_min(1e-30)
            cdf = torch.cumsum(probs, -1)
            channel = (r[:, 0:1].float() >= cdf[:, :2]).sum(-1)
            st = sigma_t_fixed.expand(len(walker), 3).gather(1, channel[:, None])[:, 0].double()
            t = -torch.log1p(-r[:, 1]) / st
            hits = caster.intersect(x, d)
            leave = hits.hit & (hits.t < t.numpy())
            dist = torch.as_tensor(np.where(leave, hits.t, t.numpy()), dtype=torch.float32)
            trans = torch.exp(-sigma_t * dist[:, None])
            trans_fixed = trans.detach()
            leave_t = torch.as_tensor(leave)
            pdf = torch.where(leave_t, (probs * trans_fixed).sum(-1), (probs * sigma_t_fixed * trans_fixed).sum(-1))
            factor = torch.where(leave_t[:, None], trans, sigma_t * alpha * trans) / pdf.clamp_min(1e-30)[:, None]
            thr = thr * factor
            if leave.any():
                li = np.nonzero(leave)[0]
                surf = surface_points(mesh, hits.triangle[li], hits.barycentric[li], d[li])
                exited.append((walker[torch.as_tensor(li)], thr[torch.as_tensor(li)], surf))
            stay = np.nonzero(~leave)[0]
            x = x[stay] + d[stay] * dist.numpy()[stay, None].astype(np.float64)
            # isotropic phase function
            z = 1 - 2 * r[stay, 2].numpy()
            phi = 2 * np.pi * r[stay, 3].numpy()
            s_ = np.sqrt(np.maximum(0.0, 1 - z * z))
            d = np.stack([s_ * np.cos(phi), s_ * np.sin(phi), z], -1)
            stay_t = torch.as_tensor(stay)
            walker, thr = walker[stay_t], thr[stay_t]
        if not exited:
            return None
        path = torch.cat([e[0] for e in exited])
        return _Exits(path, torch.cat([e[1] for e in exited]),
                      np.concatenate([e[2].position for e in exited]),
                      np.concatenate([e[2].normal_geo for e in exited]),
                      torch.as_tensor(np.concatenate([e[2].frame for e in exited]), dtype=torch.float32),
                      torch.tensor([[0.0, 0.0, 1.0]]).expand(len(path), 3))


def _positions(walker: torch.Tensor, alive: np.ndarray) -> torch.Tensor:
    """Column of each current walker in the per-step random table (built over ``alive``)."""
    return torch.as_tensor(np.searchsorted(alive, walker.numpy()))


class _PathRadiance(torch.autograd.Function):
    """Pixel radiance as a torch op: forward traces with the primal seed; backward runs
    path replay with the gradient seed."""

    @staticmethod
    def forward(ctx, renderer: PathRenderer, view_index: int, sel: np.ndarray, seeds: tuple[int, int],
                names: list[str], *values: torch.Tensor) -> torch.Tensor:
        material = dict(zip(names, (v.detach() for v in values)))
        with torch.no_grad():
            paths = renderer.trace(view_index, material, sel, seeds[0])
        ctx.renderer, ctx.view_index, ctx.sel, ctx.seed, ctx.names = renderer, view_index, sel, seeds[1], names
        ctx.save_for_backward(*values)
        return paths.reshape(len(sel), renderer.settings.spp, 3).mean(1)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        values = ctx.saved_tensors
        r = ctx.renderer
        leaves = [v.detach().clone().requires_grad_(need) for v, need in zip(values, ctx.needs_input_grad[5:])]
        material = dict(zip(ctx.names, leaves))
        with torch.no_grad():
            paths = r.trace(ctx.view_index, {k: v.detach() for k, v in material.items()}, ctx.sel, ctx.seed)
        d_path = (grad_output / r.settings.spp).repeat_interleave(r.settings.spp, 0)
        with torch.enable_grad():
            r.trace(ctx.view_index, material, ctx.sel, ctx.seed, adjoint=(d_path, paths))
        grads = tuple(leaf.grad if leaf.requires_grad else None for leaf in leaves)
        return (None, None, None, None, None) + grads
