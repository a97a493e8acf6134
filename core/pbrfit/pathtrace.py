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

**Subsurface** (:class:`SubsurfaceWalk`): at a vertex whose material has subsurface weight,
the path *splits*: besides its BSDF sample it sends a random walk into the part (one per
colour channel), and each walk's exit continues as a branch of its own. Each branch
accumulates radiance in its own slot, so that path replay knows what lies ahead of every
scattering event.

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

from dataclasses import dataclass

import numpy as np
import torch

from . import bsdf
from .envmap import EnvironmentMap
from .render import SceneRenderer, ViewGeometry, _view_geometry, flush_subnormals, surface_points
from .microfacet import sample_vndf
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
        device: "cpu" or "cuda" (ray tracing; shading runs in torch on CPU).
    """

    image_chunk = 2048

    def __init__(self, scene: FitScene, settings: PathSettings = PathSettings(), seed: int = 0,
                 max_loss_pixels: int = 4096, device: str = "cpu"):
        super().__init__(scene, seed, max_loss_pixels, device)
        self.settings = settings
        self.iteration = 0
        self._prepared: dict[int, _PreparedView] = {}

    # --- preparation ------------------------------------------------------------------------
    def prepare(self, view_index: int) -> _PreparedView:
        if view_index not in self._prepared:
            geo = _view_geometry(self.scene.mesh, self.caster, self.scene.views[view_index])
            gen = torch.Generator().manual_seed(_mix_seed(self.seed, view_index, 7))
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
        values = [torch.as_tensor(material[n]) for n in names]
        primal, adjoint = self.seeds(view_index)
        return _PathRadiance.apply(self, view_index, np.asarray(sel), (primal, adjoint), names, *values)

    # --- the integrator ---------------------------------------------------------------------
    def _uniforms(self, seed: int, pixels: int) -> torch.Tensor:
        """(pixels * spp, D) uniforms: Sobol points over a pixel's paths, shifted per pixel."""
        spp, dims = self.settings.spp, _DIMS_PER_VERTEX * self.settings.max_depth
        gen = torch.Generator().manual_seed(seed)
        sobol = torch.quasirandom.SobolEngine(dims, scramble=True, seed=_mix_seed(seed, 1)).draw(spp, dtype=torch.float64)
        shift = torch.rand(pixels, 1, dims, generator=gen, dtype=torch.float64)
        return ((sobol[None] + shift) % 1.0).clamp(0, 1 - 1e-7).reshape(pixels * spp, dims).float()

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
            return self._trace(view_index, material, sel, seed, adjoint, attached)

    def path_radiance(self, view_index: int, material: dict, sel: np.ndarray, seed: int, *,
                      attached: bool = False) -> torch.Tensor:
        """Each path's radiance (S * spp, 3): its slots summed."""
        slots, path = self.trace(view_index, material, sel, seed, attached=attached)
        return torch.zeros(len(sel) * self.settings.spp, 3).index_add(0, path, slots)

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

        def keep_grad(t: torch.Tensor) -> torch.Tensor:
            return t if attached else t.detach()

        # live vertices; ``slot`` = the radiance slot each one accumulates into
        slot = torch.arange(n_paths)
        slot_path = torch.arange(n_paths)
        position = geo.position[rows]
        normal_geo = geo.normal_geo[rows]
        frame = geo.frame[torch.as_tensor(rows)].to(torch.float32)
        wo = geo.wo[torch.as_tensor(rows)]
        lambert = torch.zeros(n_paths, dtype=torch.bool)  # subsurface exits: unit-albedo Lambert
        ancestor = torch.zeros(n_paths, dtype=torch.bool)  # bounced diffusely before: no more walks
        beta = torch.ones(n_paths, 3)
        radiance = torch.zeros(n_paths, 3)
        eps = caster.epsilon

        def split(idx):
            """Vertices whose subsurface share is transported by a walk (not folded into Lambert)."""
            return (~lambert[idx]) & (~ancestor[idx]) if walk is not None else torch.zeros(len(idx), dtype=torch.bool)

        def surface_f(idx, wi):
            """BSDF value * cos of the vertices ``idx`` (the Principled BSDF, or Lambert at exits)."""
            lam, sp = lambert[idx], split(idx)
            f = torch.zeros(len(idx), 3)
            for sub_rows, transport in ((sp, True), ((~lam) & (~sp), False)):
                if bool(sub_rows.any()):
                    sub = torch.nonzero(sub_rows)[:, 0]
                    out = bsdf.principled_eval(material, wo[idx[sub]], wi[sub], subsurface_transport=transport)
                    f = f.index_put((sub,), out[0] if transport else out)
            if bool(lam.any()):
                sub = torch.nonzero(lam)[:, 0]
                f = f.index_put((sub,), (wi[sub, 2:3].clamp_min(0) / np.pi).expand(-1, 3))
            return f

        def surface_pdf(idx, wi):
            """Density of the vertices' BSDF sampling (lobe mixture, or cosine at exits)."""
            cos_pdf = wi[:, 2].clamp_min(0) / np.pi
            return torch.where(lambert[idx], cos_pdf, bsdf.pdf_principled(m_fixed, wo[idx], wi))

        def scatter_surrogate(s_slot, s_f):
            """PRB term of a scattering event: radiance still ahead of it times F / detach(F)."""
            f_fixed = s_f.detach()
            ahead = l_total[s_slot] - radiance[s_slot].detach()
            ratio = torch.where(f_fixed > 0, ahead / f_fixed.clamp_min(1e-30), torch.zeros_like(ahead))
            return (d_loss[slot_path[s_slot]] * ratio * s_f).sum()

        for depth in range(self.settings.max_depth):
            if len(slot) == 0:
                break
            dims = slice(depth * _DIMS_PER_VERTEX, (depth + 1) * _DIMS_PER_VERTEX)
            u = u_all[slot_path[slot], dims]
            branched = slot >= n_paths  # decorrelate branches of one path (Cranley-Patterson shift)
            if bool(branched.any()):
                shift = (slot[:, None].double() * torch.tensor([0.6180339887, 0.7548776662, 0.5698402910,
                                                                  0.4301597090, 0.2451223338])) % 1.0
                u = torch.where(branched[:, None], (u + shift.float()) % 1.0, u)
            origins = position + normal_geo * eps
            all_rows = torch.arange(len(slot))
            surrogate = torch.zeros(())

            # next-event estimation: one environment sample, shadow ray, power heuristic
            d_light, pdf_light = env.warp(u[:, 3:5])
            d_light_np = d_light.double().numpy()
            wi_light = torch.einsum("pij,pj->pi", frame, d_light)
            above = (wi_light[:, 2] > 0) & torch.as_tensor((normal_geo * d_light_np).sum(-1) > 0)
            vis = torch.zeros(len(slot), dtype=torch.bool)
            if bool(above.any()):
                a = above.numpy()
                vis[above] = ~torch.as_tensor(caster.occluded(origins[a], d_light_np[a]))
            if bool(vis.any()):
                idx = torch.nonzero(vis)[:, 0]
                f = surface_f(idx, wi_light[idx])
                p_b = surface_pdf(idx, wi_light[idx])
                p_l = pdf_light[idx]
                w = p_l * p_l / (p_l * p_l + p_b * p_b).clamp_min(1e-30)
                contrib = f * (env.radiance(d_light[idx]) * (w / p_l.clamp_min(1e-30))[:, None]) * beta[idx]
                if replay:
                    surrogate = surrogate + (d_loss[slot_path[slot[idx]]] * contrib).sum()
                radiance = radiance.index_add(0, slot[idx], keep_grad(contrib))

            # subsurface: every vertex that can walks (splitting), beside its BSDF sample
            exits = None
            can_walk = split(all_rows)
            if bool(can_walk.any()):
                w_idx = torch.nonzero(can_walk)[:, 0]
                exits = walk.run(self, material, m_fixed, position[w_idx.numpy()], normal_geo[w_idx.numpy()],
                                 frame[w_idx], wo[w_idx], u[w_idx][:, [0, 3]], _mix_seed(seed, depth, 11))
            new_slots = None
            if exits is not None:
                parent = w_idx[exits.path]
                new_slots = torch.arange(len(radiance), len(radiance) + len(parent))
                slot_path = torch.cat([slot_path, slot_path[slot[parent]]])
                radiance = torch.cat([radiance, torch.zeros(len(parent), 3)])
                if replay:
                    surrogate = surrogate + scatter_surrogate(new_slots, exits.weight)

            # BSDF sample
            wi, _ = bsdf.sample_principled(m_fixed, wo, u[:, 0], u[:, 1:3])
            wi = torch.where(lambert[:, None], bsdf.cosine_hemisphere(u[:, 1:3]), wi)
            diffuse_lobe = lambert | (u[:, 0] < bsdf.lobe_probabilities(m_fixed, wo)[..., 0].expand(len(wo)))
            pdf = surface_pdf(all_rows, wi)
            d = torch.einsum("pij,pi->pj", frame, wi)
            d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            d_np = d.double().numpy()
            ok = (wi[:, 2] > 0) & (pdf > 0) & torch.as_tensor((normal_geo * d_np).sum(-1) > 0)
            idx = torch.nonzero(ok)[:, 0]
            f = surface_f(idx, wi[idx])
            keep = (f.detach() > 0).any(-1)
            idx, f, pdf_s = idx[keep], f[keep], pdf[idx[keep]]
            if replay and len(idx):
                surrogate = surrogate + scatter_surrogate(slot[idx], f)
            if replay and surrogate.requires_grad:
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
                radiance = radiance.index_add(0, slot[idx[mi]], throughput[mi] * env.radiance(dm) * w[:, None])
            if depth + 1 == self.settings.max_depth:
                break
            hit = np.nonzero(hits.hit)[0]
            surf = surface_points(mesh, hits.triangle[hit], hits.barycentric[hit], -d_np[idx_np[hit]])
            hit_rows = idx[torch.as_tensor(hit, dtype=torch.long)]
            parts = [(slot[hit_rows], surf.position, surf.normal_geo, torch.as_tensor(surf.frame, dtype=torch.float32),
                      torch.as_tensor(surf.wo, dtype=torch.float32), torch.zeros(len(hit), dtype=torch.bool),
                      throughput[torch.as_tensor(hit, dtype=torch.long)], ancestor[hit_rows] | diffuse_lobe[hit_rows])]
            if new_slots is not None:
                parts.append((new_slots, exits.position, exits.normal_geo, exits.frame, exits.wo,
                              torch.ones(len(new_slots), dtype=torch.bool), beta[parent] * keep_grad(exits.weight),
                              torch.ones(len(new_slots), dtype=torch.bool)))
            slot = torch.cat([q[0] for q in parts])
            position = np.concatenate([q[1] for q in parts])
            normal_geo = np.concatenate([q[2] for q in parts])
            frame = torch.cat([q[3] for q in parts])
            wo = torch.cat([q[4] for q in parts])
            lambert = torch.cat([q[5] for q in parts])
            beta = torch.cat([q[6] for q in parts])
            ancestor = torch.cat([q[7] for q in parts])
        return radiance, slot_path


#: Cycles' fit of the single-scattering albedo that gives a semi-infinite slab of
#: isotropic medium the multiple-scattering albedo A (Chiang, Kutz & Burley 2016, refitted in
#: Cycles for anisotropy; these are its g = 0 coefficients)
_ALBEDO_FIT = (1.8260523782, 4.98511194385 + 0.127355959438, 1.09686102424,
               0.496310210422, 4.23190299701 + 0.00310603949088, 2.40602999408)
_MIN_ALPHA = 0.2


@dataclass
class _Exits:
    path: torch.Tensor        # index (into the walk's entry points) of each exit
    weight: torch.Tensor      # (E, 3) F(theta), non-zero in the walk's channel only
    position: np.ndarray
    normal_geo: np.ndarray    # outward
    frame: torch.Tensor
    wo: torch.Tensor


class SubsurfaceWalk:
    """Random-walk subsurface scattering, built as Cycles' "Random Walk" BSSRDF (Blender 4/5).

    Entry (as Cycles): half of the walks enter along a cosine-distributed direction into the
    part, the other half by refraction through a GGX interface of roughness 1 and the
    Principled IOR, sampled from the visible normals of the view direction; either way only
    the direction is sampled (no Fresnel or BSDF weight). Inside: a homogeneous isotropic
    medium with per-channel extinction ``sigma_t = 1 / (subsurface_radius *
    subsurface_scale)`` (world units) and single-scattering albedo inverted from Base Color
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
    ``max_steps`` scattering events are dropped (about 0.3 % of the energy at 128 for an
    albedo of 0.999; Cycles allows 256). Anisotropy is 0.

    Gradients: detached sampling; each free flight contributes ``sigma_s T(t) / detach(...)``
    or ``T(t) / detach(T(t))`` at the exit, so radius, scale and base colour get gradients
    through the transport itself.
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
    def coefficients(m: dict):
        """(sigma_t, alpha, throughput scale) per channel, differentiable."""
        base = torch.as_tensor(m["base_color"]).clamp(1e-4, 1.0)
        radius = torch.as_tensor(m.get("subsurface_radius", [1.0, 0.2, 0.1]))
        scale = torch.as_tensor(m.get("subsurface_scale", 0.05))
        sigma_t = 1.0 / (radius * scale).clamp_min(1e-8)
        a, b, c, d, e, f = _ALBEDO_FIT
        blend = base ** 0.25
        alpha = ((1 - blend) * a * torch.atan(b * base) ** c + blend * d * torch.atan(e * base) ** f).clamp(0, 0.999999)
        low = alpha < _MIN_ALPHA
        scale_thr = torch.where(low, alpha / _MIN_ALPHA, torch.ones_like(alpha))
        alpha = torch.where(low, torch.full_like(alpha, _MIN_ALPHA), alpha)
        return sigma_t, alpha, scale_thr

    @staticmethod
    def _entry(m_fixed: dict, frame: torch.Tensor, wo: torch.Tensor, u: torch.Tensor) -> np.ndarray:
        """World directions into the part: cosine or rough (alpha 1) refraction, 50/50."""
        down = bsdf.cosine_hemisphere(torch.stack([(2 * u[:, 0]) % 1.0, u[:, 1]], -1))
        down = down * down.new_tensor([1.0, 1.0, -1.0])
        ior = torch.as_tensor(m_fixed.get("ior", 1.5)).clamp(1.01, 3.8).reshape(-1)[0]
        view = torch.cat([wo[:, :2], wo[:, 2:3].clamp_min(1e-4)], -1)
        view = view / view.norm(dim=-1, keepdim=True)
        one = torch.ones(1)
        h = sample_vndf(view, one, one, torch.stack([(2 * u[:, 0] - 1).clamp(0, 1 - 1e-7), u[:, 1]], -1))
        cos_hi = (h * view).sum(-1, keepdim=True)
        eta = 1.0 / ior
        k = torch.sqrt((1 - eta * eta * (1 - cos_hi * cos_hi)).clamp_min(1e-14))
        refr = -eta * view + (eta * cos_hi - k) * h
        local = torch.where((u[:, 0] < 0.5)[:, None], down, refr)
        d = torch.einsum("pij,pi->pj", frame, local)
        return (d / d.norm(dim=-1, keepdim=True)).double().numpy()

    def run(self, renderer: PathRenderer, material: dict, m_fixed: dict, position, normal_geo, frame, wo,
            u_entry: torch.Tensor, seed: int) -> _Exits | None:
        caster, mesh = renderer.caster, renderer.scene.mesh
        n = len(position)
        closure = bsdf.principled_eval(material, wo, wo, subsurface_transport=True)[1]
        base = torch.as_tensor(material["base_color"]).clamp(1e-4, 1.0)
        sigma_t, alpha, scale_thr = self.coefficients(material)
        sigma_fixed = sigma_t.detach()
        start = (closure / base) * scale_thr * torch.ones(n, 3)  # (n, 3) F at entry
        d_in = self._entry(m_fixed, frame, wo, u_entry)
        ok = np.nonzero((normal_geo * d_in).sum(-1) < 0)[0]
        # one analog walk per entry and channel
        walker_entry = torch.as_tensor(np.repeat(ok, 3))
        channel = torch.arange(3).repeat(len(ok))
        x = np.repeat(position[ok] - normal_geo[ok] * caster.epsilon, 3, axis=0)
        d = np.repeat(d_in[ok], 3, axis=0)
        sig = sigma_t[channel]
        sig_fixed = sigma_fixed[channel].double().numpy()
        alb = alpha[channel]
        thr = start[walker_entry, channel]
        gen = torch.Generator().manual_seed(seed)
        exited = []
        for step in range(self.max_steps):
            if len(walker_entry) == 0:
                break
            r = torch.rand(len(walker_entry), 3, generator=gen, dtype=torch.float64)
            t = -np.log1p(-r[:, 0].numpy()) / sig_fixed
            hits = caster.intersect(x, d)
            leave = hits.hit & (hits.t < t)
            dist = torch.as_tensor(np.where(leave, hits.t, t), dtype=torch.float32)
            trans = torch.exp(-sig * dist)
            leave_t = torch.as_tensor(leave)
            # exit: T / detach(T); scatter: sigma_s T / detach(sigma_t T) = alpha at the sample
            factor = torch.where(leave_t, trans / trans.detach(), alb * sig * trans / (sig * trans).detach())
            thr = thr * factor
            if leave.any():
                li = np.nonzero(leave)[0]
                li_t = torch.as_tensor(li)
                surf = surface_points(mesh, hits.triangle[li], hits.barycentric[li], d[li])
                weight = torch.zeros(len(li), 3).index_put((torch.arange(len(li)), channel[li_t]), thr[li_t])
                exited.append((walker_entry[li_t], weight, surf))
            stay = np.nonzero(~leave)[0]
            st = torch.as_tensor(stay)
            x = x[stay] + d[stay] * dist.numpy()[stay, None].astype(np.float64)
            z = 1 - 2 * r[st, 1].numpy()  # isotropic phase function
            phi = 2 * np.pi * r[st, 2].numpy()
            s_ = np.sqrt(np.maximum(0.0, 1 - z * z))
            d = np.stack([s_ * np.cos(phi), s_ * np.sin(phi), z], -1)
            walker_entry, channel = walker_entry[st], channel[st]
            sig, sig_fixed, alb, thr = sig[st], sig_fixed[stay], alb[st], thr[st]
        if not exited:
            return None
        path = torch.cat([e[0] for e in exited])
        return _Exits(path, torch.cat([e[1] for e in exited]),
                      np.concatenate([e[2].position for e in exited]),
                      np.concatenate([e[2].normal_geo for e in exited]),
                      torch.as_tensor(np.concatenate([e[2].frame for e in exited]), dtype=torch.float32),
                      torch.tensor([[0.0, 0.0, 1.0]]).expand(len(path), 3))


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
