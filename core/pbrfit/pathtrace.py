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

**Subsurface** (:class:`pbrfit.subsurface_walk.SubsurfaceWalk`): at a vertex whose material
has subsurface weight, the path *splits*: besides its BSDF sample it sends a random walk
into the part (one per colour channel), and each walk's exit continues as a branch of its
own. Each branch accumulates radiance in its own slot, so that path replay knows what lies
ahead of every scattering event.

**Gradients** (material parameters only). Sampling is detached: directions follow the
current material without gradient and each BSDF value f(theta) is divided by its detached
pdf, which is an unbiased estimator of the derivative of the pixel integral. Path replay:
the backward pass first re-traces the paths of its seed without gradient to get each
path's radiance L, then replays them with the same random numbers; at vertex k the
radiance still ahead, ``L - (what vertices before k and k's own emitter sample gave)``,
times ``f_k(theta) / detach(f_k)`` (or a walk's weight over its detached value), plus the
emitter sample's ``f(theta)`` term, is back-propagated at once, so memory does not grow
with path length. The loss's image and
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

from dataclasses import dataclass, fields

import numpy as np
import torch

from . import bsdf, textures
from .envmap import EnvironmentMap
from .gbuffer import ViewGeometry, surface_points, view_geometry
from .lights import sample
from .scene import FitScene
from .scene_renderer import SceneRenderer, flush_subnormals
from .subsurface_walk import Exits, SubsurfaceWalk

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


class PathRenderer(SceneRenderer):
    """Path-traced views of the part for a material; differentiable in the material (PRB).

    Same interface as :class:`pbrfit.render.RasterRenderer` (``prepare``, ``shade``,
    ``render_image``, ``train_subsets``, ``environment``), so the fit's objective, losses
    and optimizers run unchanged on either.

    Args:
        scene: the fit scene.
        settings: samples per pixel and path depth.
        seed: base seed of every random number.
        max_loss_pixels: per view, at most this many pixels enter the training loss.
        device: "cpu" or "cuda": where shading runs (:mod:`pbrfit.scene_renderer`).
    """

    image_chunk = 2048

    def __init__(self, scene: FitScene, settings: PathSettings = PathSettings(), seed: int = 0,
                 max_loss_pixels: int = 4096, device: str = "cpu", block: int = 1):
        super().__init__(scene, seed, max_loss_pixels, device, block=block)
        self.settings = settings
        self.iteration = 0
        self._prepared: dict[int, _PreparedView] = {}

    # --- preparation ------------------------------------------------------------------------
    def prepare(self, view_index: int) -> _PreparedView:
        if view_index not in self._prepared:
            geo = self.geometry_on_device(view_geometry(self.scene.mesh, self.caster, self.scene.views[view_index],
                                                        self.occluder))
            gen = torch.Generator(device="cpu").manual_seed(_mix_seed(self.seed, view_index, 7))
            self.train_subsets[view_index] = self._train_subset(geo, gen)
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
        on_device = self.on_device(material)
        values = [on_device[n] for n in names]
        primal, adjoint = self.seeds(view_index)
        return _PathRadiance.apply(self, view_index, np.asarray(sel), (primal, adjoint), names, *values)

    # --- the integrator ---------------------------------------------------------------------
    def _uniforms(self, seed: int, pixels: int) -> torch.Tensor:
        """(pixels * spp, D) uniforms: Sobol points over a pixel's paths, shifted per pixel
        (drawn on the CPU, so a seed gives the same paths on every device)."""
        spp, dims = self.settings.spp, _DIMS_PER_VERTEX * self.settings.max_depth
        gen = torch.Generator(device="cpu").manual_seed(seed)
        sobol = torch.quasirandom.SobolEngine(dims, scramble=True, seed=_mix_seed(seed, 1))
        sobol = sobol.draw(spp, dtype=torch.float64).cpu()
        shift = torch.rand(pixels, 1, dims, generator=gen, dtype=torch.float64, device="cpu")
        u = ((sobol[None] + shift) % 1.0).clamp(0, 1 - 1e-7).reshape(pixels * spp, dims).float()
        return u.to(self.device)

    def trace(self, view_index: int, material: dict[str, torch.Tensor], sel: np.ndarray, seed: int,
              adjoint: tuple[torch.Tensor, torch.Tensor] | None = None, *, attached: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Trace ``spp`` paths per pixel of ``sel``.

        A path may branch (a subsurface walk beside the BSDF sample, one walk per colour
        channel); each branch accumulates its radiance in its own *slot*.

        Returns:
            (radiance (B, 3) per slot, path (B,) the path, in 0 .. S * spp - 1, of each
            slot); no gradient.
        With ``adjoint = (dL (S * spp, 3), L_slot (B, 3))``: the gradient of the loss with
        respect to each path's radiance and the slot radiance of a primal trace with the
        same seed; replays the paths and back-propagates into the material tensors that
        require grad (path replay). With ``attached``: the same paths with the whole
        computation recorded for torch's autograd (memory grows with path length; the
        reference PRB is tested against).
        """
        with flush_subnormals():
            return _Trace(self, view_index, material, sel, seed, adjoint, attached).run()

    def path_radiance(self, view_index: int, material: dict, sel: np.ndarray, seed: int, *,
                      attached: bool = False) -> torch.Tensor:
        """Each path's radiance (S * spp, 3): its slots summed."""
        slots, path = self.trace(view_index, material, sel, seed, attached=attached)
        return torch.zeros(len(sel) * self.settings.spp, 3, device=slots.device).index_add(0, path, slots)


@dataclass
class _Vertices:
    """The live path vertices of one bounce, one row each (the wavefront)."""

    slot: torch.Tensor        # (V,) the radiance slot each one accumulates into
    position: np.ndarray      # (V, 3) float64 world
    normal_geo: np.ndarray    # (V, 3) float64 geometric normal, on the side the path came from
    frame: torch.Tensor       # (V, 3, 3) float32 rows: tangent, bitangent, shading normal
    wo: torch.Tensor          # (V, 3) float32 local direction back along the path
    lambert: torch.Tensor     # (V,) bool: a subsurface exit, whose BSDF is a unit-albedo Lambert
    beta: torch.Tensor        # (V, 3) the path's throughput up to this vertex
    ancestor: torch.Tensor    # (V,) bool: the path bounced diffusely before (no more walks)
    uv: torch.Tensor          # (V, 2) texture coordinates (zeros where the mesh has none)
    tbn: torch.Tensor         # (V, 2, 3) UV tangent and bitangent in the local frame (normal maps)
    footprint: torch.Tensor | None  # (V, 3) the pixel filter's widening of the lobes; None past the first hit

    def __len__(self) -> int:
        return len(self.slot)

    @staticmethod
    def concat(parts: list[_Vertices]) -> _Vertices:
        def join(values):
            if values[0] is None:  # footprint: only first hits have one, and they are never joined
                return None
            return np.concatenate(values) if isinstance(values[0], np.ndarray) else torch.cat(values)
        return _Vertices(*(join([getattr(p, f.name) for p in parts]) for f in fields(_Vertices)))


@dataclass
class _Bounce:
    """The BSDF samples of a bounce that continue: rows into the vertices, F = f cos, pdf."""

    rows: torch.Tensor        # (C,) vertices whose sample continues
    f: torch.Tensor           # (C, 3) BSDF value times cosine (differentiable in the material)
    pdf: torch.Tensor         # (C,) density of the sampled direction
    direction: torch.Tensor   # (V, 3) world direction of every vertex's sample
    direction_np: np.ndarray  # the same, float64, for the ray caster
    diffuse_lobe: torch.Tensor  # (V,) bool: the sample came from the diffuse lobe


@dataclass
class _Branches:
    """Subsurface exits of a bounce: each starts a branch with a radiance slot of its own."""

    exits: Exits
    parent: torch.Tensor      # (E,) the vertex each exit's walk entered at
    slots: torch.Tensor       # (E,) the new radiance slots


class _Trace:
    """One trace of ``spp`` paths per pixel (:meth:`PathRenderer.trace`), bounce by bounce.

    State across bounces: ``radiance`` per slot, ``slot_path`` (the path of each slot) and,
    when replaying (``adjoint`` given), the PRB ``surrogate`` of the current vertex, whose
    gradient is back-propagated once per bounce.
    """

    def __init__(self, renderer: PathRenderer, view_index: int, material: dict[str, torch.Tensor],
                 sel: np.ndarray, seed: int, adjoint, attached: bool):
        pv = renderer.prepare(view_index)
        self.geo, self.env = pv.geometry, pv.env
        self.lights = renderer.scene.views[view_index].lights
        self.renderer, self.mesh, self.caster = renderer, renderer.scene.mesh, renderer.caster
        self.device = dev = renderer.device
        self.max_depth, self.seed, self.sel = renderer.settings.max_depth, seed, sel
        self.n_paths = len(sel) * renderer.settings.spp
        self.u_all = renderer._uniforms(seed, len(sel))
        self.material = material
        self.m_fixed = {k: v.detach() for k, v in material.items()}
        self.textured = textures.has_maps(material)
        self.replay = adjoint is not None
        if self.replay:
            self.d_loss, self.l_total = adjoint
        self.attached = attached
        self.walk = SubsurfaceWalk.for_material(material)
        self.radiance = torch.zeros(self.n_paths, 3, device=dev)  # per slot; a path starts with one slot
        self.slot_path = torch.arange(self.n_paths, device=dev)
        self.surrogate = torch.zeros((), device=dev)

    def run(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(radiance (B, 3) per slot, path (B,) of each slot)."""
        v = self._primary_vertices()
        for depth in range(self.max_depth):
            if len(v) == 0:
                break
            u = self._bounce_uniforms(v, depth)
            origins = v.position + v.normal_geo * self.caster.epsilon
            self.surrogate = torch.zeros((), device=self.device)
            self._sample_emitter(v, u, origins)
            branches = self._walk_under_surface(v, u, depth)
            bounce = self._sample_bsdf(v, u)
            if self.replay and self.surrogate.requires_grad:
                self.surrogate.backward()  # path replay: this vertex's part of the gradient, now
            throughput, hits = self._follow(v, bounce, origins)
            if depth + 1 == self.max_depth:
                break
            v = self._next_vertices(v, bounce, throughput, hits, branches)
        return self.radiance, self.slot_path

    # --- the steps of a bounce ----------------------------------------------------------------
    def _primary_vertices(self) -> _Vertices:
        """The G-buffer's pixels, ``spp`` paths each; one radiance slot per path."""
        rows = np.repeat(np.asarray(self.sel), self.renderer.settings.spp)
        n, geo, dev = self.n_paths, self.geo, self.device
        rows_t = torch.as_tensor(rows, device=dev)
        return _Vertices(
            slot=torch.arange(n, device=dev), position=geo.position[rows], normal_geo=geo.normal_geo[rows],
            frame=geo.frame[rows_t].to(torch.float32), wo=geo.wo[rows_t],
            lambert=torch.zeros(n, dtype=torch.bool, device=dev), beta=torch.ones(n, 3, device=dev),
            ancestor=torch.zeros(n, dtype=torch.bool, device=dev),
            uv=geo.uv[rows_t] if geo.uv is not None else torch.zeros(n, 2, device=dev),
            tbn=geo.tbn[rows_t] if geo.tbn is not None else torch.zeros(n, 2, 3, device=dev),
            footprint=geo.footprint[rows_t] if geo.footprint is not None else None)

    def _bounce_uniforms(self, v: _Vertices, depth: int) -> torch.Tensor:
        """(V, 5) uniforms of this bounce: lobe, BSDF direction (2), emitter direction (2)."""
        dims = slice(depth * _DIMS_PER_VERTEX, (depth + 1) * _DIMS_PER_VERTEX)
        u = self.u_all[self.slot_path[v.slot], dims]
        branched = v.slot >= self.n_paths  # decorrelate branches of one path (Cranley-Patterson shift)
        if bool(branched.any()):
            shift = (v.slot[:, None].double() * torch.tensor([0.6180339887, 0.7548776662, 0.5698402910,
                                                               0.4301597090, 0.2451223338],
                                                              device=self.device)) % 1.0
            u = torch.where(branched[:, None], (u + shift.float()) % 1.0, u)
        return u

    def _sample_emitter(self, v: _Vertices, u: torch.Tensor, origins: np.ndarray) -> None:
        """Next-event estimation: one environment sample, a shadow ray, the power heuristic;
        then one sample of each analytic light (:mod:`pbrfit.lights`) with its shadow ray (no
        MIS: BSDF directions do not see the lights)."""
        env = self.env
        d_light, pdf_light = env.warp(u[:, 3:5])
        d_light_np = d_light.double().cpu().numpy()
        wi_light = torch.einsum("pij,pj->pi", v.frame, d_light)
        above = (wi_light[:, 2] > 0) & torch.as_tensor((v.normal_geo * d_light_np).sum(-1) > 0, device=self.device)
        vis = torch.zeros(len(v), dtype=torch.bool, device=self.device)
        if bool(above.any()):
            a = above.cpu().numpy()
            vis[above] = ~torch.as_tensor(self.caster.occluded(origins[a], d_light_np[a]), device=self.device)
        if bool(vis.any()):
            idx = torch.nonzero(vis)[:, 0]
            f = self._bsdf_f(v, idx, wi_light[idx])
            p_b = self._bsdf_pdf(v, idx, wi_light[idx])
            p_l = pdf_light[idx]
            w = p_l * p_l / (p_l * p_l + p_b * p_b).clamp_min(1e-30)
            contrib = f * (env.radiance(d_light[idx]) * (w / p_l.clamp_min(1e-30))[:, None]) * v.beta[idx]
            self._add_emitted(v, idx, contrib)
        for light in self.lights:  # analytic lights: one sample each, next-event estimation alone
            wi_w, weight = sample(light, torch.as_tensor(v.position, dtype=torch.float64), u[:, None, 3:5].cpu())
            d = wi_w[:, 0].to(self.device, torch.float32)
            d_np = wi_w[:, 0].numpy()
            wi = torch.einsum("pij,pj->pi", v.frame, d)
            above = (wi[:, 2] > 0) & torch.as_tensor((v.normal_geo * d_np).sum(-1) > 0, device=self.device)
            above &= weight[:, 0].abs().sum(-1).to(self.device) > 0
            if not bool(above.any()):
                continue
            a = above.cpu().numpy()
            lit = torch.zeros(len(v), dtype=torch.bool, device=self.device)
            lit[above] = ~torch.as_tensor(self.caster.occluded(origins[a], d_np[a]), device=self.device)
            if bool(lit.any()):
                idx = torch.nonzero(lit)[:, 0]
                contrib = (self._bsdf_f(v, idx, wi[idx]) * weight[:, 0].to(self.device, torch.float32)[idx]
                           * v.beta[idx])
                self._add_emitted(v, idx, contrib)

    def _add_emitted(self, v: _Vertices, idx: torch.Tensor, contrib: torch.Tensor) -> None:
        """Light from an emitter sample into the vertices' slots (and the replay surrogate)."""
        if self.replay:
            self.surrogate = self.surrogate + (self.d_loss[self.slot_path[v.slot[idx]]] * contrib).sum()
        self.radiance = self.radiance.index_add(0, v.slot[idx], self._keep_grad(contrib))

    def _walk_under_surface(self, v: _Vertices, u: torch.Tensor, depth: int) -> _Branches | None:
        """Subsurface splitting: every vertex that can sends walks into the part, beside its
        BSDF sample; each exit gets a radiance slot of its own."""
        walking = self._walks_here(v, torch.arange(len(v), device=self.device))
        if not bool(walking.any()):
            return None
        w_idx = torch.nonzero(walking)[:, 0]
        w_np = w_idx.cpu().numpy()
        # the material at the entry points (maps looked up there); the entry uses the surface's
        # frame, not a normal map's
        material, _ = self._at(self.material, v, w_idx)
        m_fixed, _ = self._at(self.m_fixed, v, w_idx)
        exits = self.walk.run(self.renderer, material, m_fixed, v.position[w_np],
                              v.normal_geo[w_np], v.frame[w_idx], v.wo[w_idx], u[w_idx][:, [0, 3]],
                              _mix_seed(self.seed, depth, 11))
        if exits is None:
            return None
        parent = w_idx[exits.path]
        slots = torch.arange(len(self.radiance), len(self.radiance) + len(parent), device=self.device)
        self.slot_path = torch.cat([self.slot_path, self.slot_path[v.slot[parent]]])
        self.radiance = torch.cat([self.radiance, torch.zeros(len(parent), 3, device=self.device)])
        if self.replay:
            self.surrogate = self.surrogate + self._scatter_surrogate(slots, exits.weight)
        return _Branches(exits, parent, slots)

    def _sample_bsdf(self, v: _Vertices, u: torch.Tensor) -> _Bounce:
        """One direction from the BSDF's lobe mixture (cosine at subsurface exits)."""
        m_fixed, r = self._at(self.m_fixed, v, None)
        wo = v.wo if r is None else textures.rotate(r, v.wo)
        wi, _ = bsdf.sample_principled(m_fixed, wo, u[:, 0], u[:, 1:3])
        wi = wi if r is None else textures.unrotate(r, wi)
        wi = torch.where(v.lambert[:, None], bsdf.cosine_hemisphere(u[:, 1:3]), wi)
        p_diffuse = bsdf.lobe_probabilities(m_fixed, wo)[..., 0].expand(len(v.wo))
        diffuse_lobe = v.lambert | (u[:, 0] < p_diffuse)
        pdf = self._bsdf_pdf(v, torch.arange(len(v), device=self.device), wi)
        d = torch.einsum("pij,pi->pj", v.frame, wi)
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        d_np = d.double().cpu().numpy()
        ok = (wi[:, 2] > 0) & (pdf > 0) & torch.as_tensor((v.normal_geo * d_np).sum(-1) > 0, device=self.device)
        idx = torch.nonzero(ok)[:, 0]
        f = self._bsdf_f(v, idx, wi[idx])
        keep = (f.detach() > 0).any(-1)
        idx, f, pdf_s = idx[keep], f[keep], pdf[idx[keep]]
        if self.replay and len(idx):
            self.surrogate = self.surrogate + self._scatter_surrogate(v.slot[idx], f)
        return _Bounce(idx, f, pdf_s, d, d_np, diffuse_lobe)

    def _follow(self, v: _Vertices, bounce: _Bounce, origins: np.ndarray):
        """Trace the BSDF samples: one that escapes picks up the environment (power heuristic
        against the emitter sample). Returns (throughput (C, 3), hits)."""
        env = self.env
        throughput = v.beta[bounce.rows] * self._keep_grad(bounce.f) / bounce.pdf[:, None]
        rows = bounce.rows.cpu().numpy()
        hits = self.caster.intersect(origins[rows], bounce.direction_np[rows])
        miss = ~hits.hit
        if miss.any():
            mi = torch.as_tensor(np.nonzero(miss)[0], device=self.device)
            dm = bounce.direction[bounce.rows[mi]]
            p_l = env.pdf(dm)
            p_b = bounce.pdf[mi]
            w = p_b * p_b / (p_b * p_b + p_l * p_l).clamp_min(1e-30)
            self.radiance = self.radiance.index_add(0, v.slot[bounce.rows[mi]],
                                                    throughput[mi] * env.radiance(dm) * w[:, None])
        return throughput, hits

    def _next_vertices(self, v: _Vertices, bounce: _Bounce, throughput: torch.Tensor, hits,
                       branches: _Branches | None) -> _Vertices:
        """Where the BSDF samples hit the part, then the subsurface exits."""
        hit = np.nonzero(hits.hit)[0]
        dev = self.device
        hit_t = torch.as_tensor(hit, dtype=torch.long, device=dev)
        surf = surface_points(self.mesh, hits.triangle[hit], hits.barycentric[hit],
                              -bounce.direction_np[bounce.rows.cpu().numpy()[hit]])
        hit_rows = bounce.rows[hit_t]
        parts = [_Vertices(
            slot=v.slot[hit_rows], position=surf.position, normal_geo=surf.normal_geo,
            frame=torch.as_tensor(surf.frame, dtype=torch.float32, device=dev),
            wo=torch.as_tensor(surf.wo, dtype=torch.float32, device=dev),
            lambert=torch.zeros(len(hit), dtype=torch.bool, device=dev), beta=throughput[hit_t],
            ancestor=v.ancestor[hit_rows] | bounce.diffuse_lobe[hit_rows],
            uv=(torch.as_tensor(surf.uv, dtype=torch.float32, device=dev) if surf.uv is not None
                else torch.zeros(len(hit), 2, device=dev)),
            tbn=(torch.as_tensor(surf.tbn, dtype=torch.float32, device=dev) if surf.tbn is not None
                 else torch.zeros(len(hit), 2, 3, device=dev)),
            footprint=None)]
        if branches is not None:
            exits, n = branches.exits, len(branches.slots)
            parts.append(_Vertices(
                slot=branches.slots, position=exits.position, normal_geo=exits.normal_geo, frame=exits.frame,
                wo=exits.wo, lambert=torch.ones(n, dtype=torch.bool, device=dev),
                beta=v.beta[branches.parent] * self._keep_grad(exits.weight),
                ancestor=torch.ones(n, dtype=torch.bool, device=dev), uv=torch.zeros(n, 2, device=dev),
                tbn=torch.zeros(n, 2, 3, device=dev), footprint=None))
        return _Vertices.concat(parts)

    # --- the vertex's BSDF and the PRB terms ------------------------------------------------
    def _keep_grad(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.attached else t.detach()

    def _walks_here(self, v: _Vertices, idx: torch.Tensor) -> torch.Tensor:
        """Vertices whose subsurface share is transported by a walk (not folded into Lambert)."""
        if self.walk is None:
            return torch.zeros(len(idx), dtype=torch.bool, device=self.device)
        return (~v.lambert[idx]) & (~v.ancestor[idx])

    def _bsdf_f(self, v: _Vertices, idx: torch.Tensor, wi: torch.Tensor) -> torch.Tensor:
        """BSDF value * cos of the vertices ``idx`` (the Principled BSDF, or Lambert at exits)."""
        lam, walks = v.lambert[idx], self._walks_here(v, idx)
        f = torch.zeros(len(idx), 3, device=self.device)
        for sub_rows, transport in ((walks, True), ((~lam) & (~walks), False)):
            if bool(sub_rows.any()):
                sub = torch.nonzero(sub_rows)[:, 0]
                m, r = self._at(self.material, v, idx[sub])
                wo_s, wi_s = v.wo[idx[sub]], wi[sub]
                if r is not None:
                    wo_s, wi_s = textures.rotate(r, wo_s), textures.rotate(r, wi_s)
                out = bsdf.principled_eval(m, wo_s, wi_s, subsurface_transport=transport)
                f = f.index_put((sub,), out[0] if transport else out)
        if bool(lam.any()):
            sub = torch.nonzero(lam)[:, 0]
            f = f.index_put((sub,), (wi[sub, 2:3].clamp_min(0) / np.pi).expand(-1, 3))
        return f

    def _bsdf_pdf(self, v: _Vertices, idx: torch.Tensor, wi: torch.Tensor) -> torch.Tensor:
        """Density of the vertices' BSDF sampling (lobe mixture, or cosine at exits)."""
        cos_pdf = wi[:, 2].clamp_min(0) / np.pi
        m, r = self._at(self.m_fixed, v, idx)
        wo = v.wo[idx]
        if r is not None:
            wo, wi = textures.rotate(r, wo), textures.rotate(r, wi)
        return torch.where(v.lambert[idx], cos_pdf, bsdf.pdf_principled(m, wo, wi))

    def _at(self, material: dict, v: _Vertices, idx: torch.Tensor | None) -> tuple[dict, torch.Tensor | None]:
        """``material`` at the vertices ``idx`` (all if None), its maps looked up at their UVs,
        and the rotation into the shading frame of its normal map there (None without one); at
        first hits, the pixel filter's widening of the lobes (:mod:`pbrfit.pixel_filter`);
        without a normal map, the glossy lobes' bent normals (:meth:`_glossy_frame`)."""
        if v.footprint is not None:
            footprint = v.footprint if idx is None else v.footprint[idx]
            material = dict(material, **{bsdf.FOOTPRINT: footprint})
        normal = None
        if self.textured:
            material = dict(textures.resolve(material, v.uv if idx is None else v.uv[idx]))
            normal = material.pop(textures.NORMAL, None)
        if normal is not None:
            return material, textures.normal_rotation(normal, v.tbn if idx is None else v.tbn[idx],
                                                      v.wo if idx is None else v.wo[idx])
        glossy = self._glossy_frame(v)
        if glossy is not None:
            material = dict(material, **{bsdf.GLOSSY_FRAME: glossy if idx is None else glossy[idx]})
        return material, None

    def _glossy_frame(self, v: _Vertices) -> torch.Tensor | None:
        """(V, 3, 3) where the vertices' glossy lobes shade with a bent normal, as Cycles'
        (:func:`pbrfit.microfacet.glossy_frame`), or None where none is; computed once per
        wavefront."""
        if not hasattr(v, "glossy_frame"):
            v.glossy_frame = bsdf.glossy_frames(v.frame, v.normal_geo, v.wo)
        return v.glossy_frame

    def _scatter_surrogate(self, slots: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """PRB term of a scattering event: radiance still ahead of it times F / detach(F)."""
        f_fixed = f.detach()
        ahead = self.l_total[slots] - self.radiance[slots].detach()
        ratio = torch.where(f_fixed > 0, ahead / f_fixed.clamp_min(1e-30), torch.zeros_like(ahead))
        return (self.d_loss[self.slot_path[slots]] * ratio * f).sum()


class _PathRadiance(torch.autograd.Function):
    """Pixel radiance as a torch op: forward traces with the primal seed; backward runs
    path replay with the gradient seed."""

    @staticmethod
    def forward(ctx, renderer: PathRenderer, view_index: int, sel: np.ndarray, seeds: tuple[int, int],
                names: list[str], *values: torch.Tensor) -> torch.Tensor:
        material = dict(zip(names, (v.detach() for v in values)))
        with torch.no_grad():
            paths = renderer.path_radiance(view_index, material, sel, seeds[0])
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
            slots, _ = r.trace(ctx.view_index, {k: v.detach() for k, v in material.items()}, ctx.sel, ctx.seed)
        d_path = (grad_output / r.settings.spp).repeat_interleave(r.settings.spp, 0)
        with torch.enable_grad():
            r.trace(ctx.view_index, material, ctx.sel, ctx.seed, adjoint=(d_path, slots))
        grads = tuple(leaf.grad if leaf.requires_grad else None for leaf in leaves)
        return (None, None, None, None, None) + grads
