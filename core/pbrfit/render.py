"""The raster backend: deferred, differentiable shading of the part under an HDRI.

Each view's G-buffer (position, normals, tangent frame, view direction of every covered
pixel; :mod:`pbrfit.gbuffer`) is computed once. Shading is then a pure torch function of the
material parameters:

    L_o(x, w_o) = sum over samples  f(w_o, w_i) cos(theta_i) L_env(w_i) V(x, w_i)
                                    / sum_s n_s p_s(w_i)

a multi-sample estimator with the balance heuristic over four strategies: environment
importance sampling (``light``), cosine hemisphere (``cosine``), GGX visible-normal sampling
of the base specular lobe (``specular``) and of the coat (``coat``). Directions of the first
two do not depend on the material, so their radiance and visibility (self-shadowing, shadow
rays against the part) are computed once. Specular and coat directions move with roughness
(reparameterized through fixed uniforms); their radiance is a bilinear lookup of the
full-resolution environment and their visibility is recomputed, without gradient, at each
evaluation. (Prefiltered lookups would lower the noise but, combined by MIS with the light
samples' sharp lookups, count a small bright source twice: tests/test_render_vs_cycles.py.)
All random numbers are drawn once from a seeded generator, so the objective is a
deterministic, smooth function of the parameters.

What this backend leaves out: light reflected from the part onto itself (interreflection)
and transport under the surface (subsurface is approximated in :mod:`pbrfit.bsdf`). The
path backend covers those.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from . import bsdf, pixel_filter, textures
from .envmap import EnvironmentMap
from .gbuffer import ViewGeometry, view_geometry
from .lights import sample
from .scene import FitScene
from .scene_renderer import SceneRenderer, flush_subnormals

__all__ = ["SampleCounts", "RasterRenderer", "apply_taps"]


@dataclass(frozen=True)
class SampleCounts:
    """Samples per pixel of each strategy (see module docstring)."""

    light: int = 32
    cosine: int = 8
    specular: int = 16
    coat: int = 8
    #: per analytic light (:mod:`pbrfit.lights`), points sampled on it (next-event estimation)
    analytic: int = 16


def _stratified(pixels: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """(pixels, count, 2) uniforms on the CPU: the first ``count`` points of a scrambled 2-D
    Sobol sequence, shifted per pixel by a random offset modulo 1 (Cranley-Patterson
    rotation), so each pixel's samples are stratified and pixels are decorrelated."""
    if count == 0:
        return torch.zeros(pixels, 0, 2, dtype=torch.float64, device="cpu")
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device="cpu"))
    points = torch.quasirandom.SobolEngine(2, scramble=True, seed=seed).draw(count, dtype=torch.float64)
    shift = torch.rand(pixels, 1, 2, generator=generator, dtype=torch.float64, device="cpu")
    return ((points.cpu()[None] + shift) % 1.0).clamp(0, 1 - 1e-7)


@dataclass
class _FixedSamples:
    """Material-independent samples of one view (light + cosine strategies)."""

    wi: torch.Tensor        # (P, N, 3) local directions
    lv: torch.Tensor        # (P, N, 3) radiance * visibility
    p_fixed: torch.Tensor   # (P, N) n_light * p_env + n_cos * p_cos
    vis: torch.Tensor       # (P, N) bool: their visibility (a calibrated render looks their radiance up again)
    #: analytic lights' samples (None without lights): local directions (P, M, 3) and
    #: radiance / pdf * visibility / samples per light (P, M, 3)
    lights_wi: torch.Tensor | None = None
    lights_w: torch.Tensor | None = None
    lights_vis: torch.Tensor | None = None  # (P, M) their visibility (a light moved by calibration is sampled again)


#: a value not computed yet (None is a result: no normal bent)
_UNSET = object()


@dataclass
class _PreparedView:
    """One view's G-buffer and samples. The material-independent samples (:class:`_FixedSamples`:
    directions, radiance, shadow rays) are costly, so they are computed for the pixels
    shaded so far only: the loss pixels at first, every covered pixel when a shade call
    asks for others (a full image). Their uniforms are drawn for every pixel up front, so
    a pixel's samples do not depend on which pixels were prepared."""

    geometry: ViewGeometry
    env: EnvironmentMap
    u_light: torch.Tensor     # (P, Nl, 2) float64
    u_cosine: torch.Tensor    # (P, Nc, 2)
    u_specular: torch.Tensor  # (P, Ns, 2)
    u_coat: torch.Tensor      # (P, Nc, 2)
    origins: np.ndarray       # (P, 3) shadow-ray origins
    lights: tuple = ()  # the view's analytic lights (pbrfit.lights)
    u_analytic: torch.Tensor | None = None  # (P, lights x Na, 2) float64; None without lights
    fixed: _FixedSamples | None = None
    row_of: np.ndarray | None = None  # (P,) row of each pixel in ``fixed``, -1 where not computed
    glossy_frame: object = _UNSET  # the glossy lobes' bent frames (RasterRenderer._glossy_frame), once computed


#: pixel sets whose filter neighbourhood a filtering renderer remembers (a fit's gradient
#: chunks: views x chunks per view)
NEIGHBOURHOODS_KEPT = 64
#: pixels whose fixed samples :meth:`RasterRenderer._fix` computes at once: the temporaries of
#: a block (~160 directions a pixel at the final metrics' sample counts) stay in the caches,
#: and a view's peak memory is bounded (the embossed panel's final-metrics preparation took
#: ~0.6x the time of whole views at once; the samples are the same)
FIX_BLOCK = 4096


def apply_taps(centres: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(S, 3) each pixel the filter's weighted sum of its taps: ``centres`` (N, 3) the shaded
    pixel centres, ``index``/``weights`` (S, 9) from :meth:`RasterRenderer.filter_taps` (a
    tap off the part, weight 0, adds nothing)."""
    taps = centres[index] * weights[..., None]
    return torch.where(weights[..., None] > 0, taps, torch.zeros_like(taps)).sum(1)


class RasterRenderer(SceneRenderer):
    """Renders the part's views for a material; differentiable in the material.

    Args:
        scene: the fit scene (mesh and views).
        samples: samples per pixel per strategy.
        seed: seed of every random number used (the objective is deterministic).
        max_loss_pixels: per view, at most this many pixels enter the training loss
            (a fixed random subset); metrics always use all usable pixels.
        device: where shading runs (:mod:`pbrfit.scene_renderer`).
        pixels_from: another raster renderer of the scene whose loss pixels this one uses
            (with its own samples): two such renderers give independent estimates of the
            same pixels (:func:`pbrfit.objective.unbiased_relative_error`).
        yaw_spread: radians: environments sampled evenly for any yaw within it (the
            calibration's renderer: :class:`pbrfit.envmap.EnvironmentMap`).
        filter_pixels: each pixel is the camera's pixel filter over its own and its 8
            neighbours' centres (:func:`pbrfit.pixel_filter.image_taps`), as Cycles and a
            camera render detail finer than the pixels (a normal map's bumps), instead of its
            centre with widened lobes (:func:`pbrfit.pixel_filter.footprint`, which sees the
            mesh's normals only; both at once count the filter twice: a 0.1-rough metal sphere
            then reads as 0.04). For renders of whole views (texture maps), where every
            neighbour is shaded anyway (with a few random pixels per view, it would shade 9
            times as many).

    Attributes:
        held_directions: the directions sampled from the BSDF and every sampling density
            are held (no gradient flows through them), the gradient flowing through the BSDF's
            values alone (and the normal map's turn of the directions). Its expectation over the
            samples is the true gradient (the directions' mixture density only weighs them), but it
            is not the gradient of this render's fixed samples: for stochastic steps (Adam over
            texture maps), never for L-BFGS. It back-propagates through a third of the shading.
    """

    def __init__(self, scene: FitScene, samples: SampleCounts = SampleCounts(), seed: int = 0,
                 max_loss_pixels: int = 4096, device: str = "cpu", pixels_from: RasterRenderer | None = None,
                 yaw_spread: float = 0.0, filter_pixels: bool = False):
        super().__init__(scene, seed, max_loss_pixels, device, yaw_spread)
        self.samples = samples
        self.pixels_from = pixels_from
        self.filter_pixels = filter_pixels
        self.held_directions = False
        self._prepared: dict[int, _PreparedView] = {}
        self._neighbourhoods: OrderedDict = OrderedDict()  # the filter's, of the pixel sets shaded lately
        self._neighbourhoods_lock = threading.Lock()  # views shade on threads of their own

    # --- preparation ------------------------------------------------------------------------
    def prepare(self, view_index: int) -> _PreparedView:
        """The view's G-buffer, its loss pixels (``train_subsets``) and their fixed samples."""
        if view_index in self._prepared:
            return self._prepared[view_index]
        view = self.scene.views[view_index]
        geo = self.geometry_on_device(view_geometry(self.scene.mesh, self.caster, view, self.occluder))
        env = self.environment(view_index)
        gen = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + view_index)
        n = self.samples
        p = len(geo.pixels)
        origins = geo.position + geo.normal_geo * self.caster.epsilon
        dev = self.device
        u_light = _stratified(p, n.light, gen).to(dev)
        u_cosine = _stratified(p, n.cosine, gen).float().to(dev)
        prepared = _PreparedView(geo, env, u_light, u_cosine, _stratified(p, n.specular, gen).float().to(dev),
                                 _stratified(p, n.coat, gen).float().to(dev), origins)
        self.train_subsets[view_index] = self._train_subset(geo, gen)
        lights = self.scene.views[view_index].lights
        if lights:  # drawn last: a scene without lights keeps every other sample
            prepared.lights = tuple(lights)
            prepared.u_analytic = _stratified(p, n.analytic * len(lights), gen)
        if self.pixels_from is not None:
            self.pixels_from.prepare(view_index)
            self.train_subsets[view_index] = self.pixels_from.train_subsets[view_index]
        rows = self.train_subsets[view_index]
        if self.filter_pixels:  # and the loss pixels' neighbours
            rows = pixel_filter.neighbourhood(geo.coverage, geo.pixels, rows)[0]
        self._fix(prepared, rows)
        self._prepared[view_index] = prepared
        return prepared

    def prepared_share(self) -> float:
        """The share of the prepared views' covered pixels whose fixed samples are computed
        (1.0 when no view is prepared): what a full-image render would still have to prepare."""
        covered = sum(len(pv.geometry.pixels) for pv in self._prepared.values())
        fixed = sum(int((pv.row_of >= 0).sum()) for pv in self._prepared.values() if pv.row_of is not None)
        return fixed / covered if covered and fixed else 1.0

    def _fix(self, pv: _PreparedView, rows: np.ndarray) -> None:
        """Compute the fixed samples (light + cosine strategies) of pixels ``rows``, in blocks of
        :data:`FIX_BLOCK` pixels."""
        geo, n = pv.geometry, self.samples
        blocks = [self._environment_samples(pv, rows[s:s + FIX_BLOCK]) for s in range(0, max(len(rows), 1), FIX_BLOCK)]
        pv.fixed = _FixedSamples(*(torch.cat(parts) for parts in zip(*blocks)))
        lights = pv.lights
        if lights:
            rows_t = torch.as_tensor(rows, dtype=torch.long, device=self.device)
            frame = geo.frame[rows_t]
            na = n.analytic
            points = torch.as_tensor(geo.position[rows], dtype=torch.float64)
            wis, ws, viss = [], [], []
            for k, light in enumerate(lights):
                wi_l, w_l = sample(light, points, pv.u_analytic[rows_t.cpu(), k * na:(k + 1) * na])
                vis = self._visible(pv, rows, wi_l.float()).to(self.device)
                wis.append(torch.einsum("pnj,pij->pni", wi_l.float().to(self.device), frame))
                ws.append(w_l.float().to(self.device) * vis[..., None] / na)
                viss.append(vis)
            pv.fixed.lights_wi, pv.fixed.lights_w = torch.cat(wis, 1).contiguous(), torch.cat(ws, 1).contiguous()
            pv.fixed.lights_vis = torch.cat(viss, 1).contiguous()
        pv.row_of = np.full(len(geo.pixels), -1, np.int64)
        pv.row_of[rows] = np.arange(len(rows))

    def _environment_samples(self, pv: _PreparedView, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The environment's fixed samples of pixels ``rows``: (local directions, radiance *
        visibility, p_fixed, visibility), as :class:`_FixedSamples` holds them."""
        geo, env, n = pv.geometry, pv.env, self.samples
        rows_t = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        frame = geo.frame[rows_t]
        d_light, pdf_light = env.warp(pv.u_light[rows_t])  # the pdf, as env.pdf(d_light) would give it
        u = pv.u_cosine[rows_t]
        r, phi = torch.sqrt(u[..., 0]), 2 * math.pi * u[..., 1]
        wi_cos = torch.stack([r * torch.cos(phi), r * torch.sin(phi), torch.sqrt((1 - u[..., 0]).clamp_min(0))], -1)
        d_cos = torch.einsum("pni,pij->pnj", wi_cos, frame)
        d_all = torch.cat([d_light, d_cos], 1)  # (R, N, 3) world
        wi_all = torch.einsum("pnj,pij->pni", d_all, frame)
        radiance = env.radiance(d_all)  # full resolution: light samples follow texels
        visible = self._visible(pv, rows, d_all)
        p_cos = wi_all[..., 2].clamp_min(0) / math.pi
        p_fixed = n.light * torch.cat([pdf_light, env.pdf(d_cos)], 1) + n.cosine * p_cos
        return wi_all.contiguous(), (radiance * visible[..., None]).contiguous(), p_fixed, visible > 0.5

    def _blocked_counts(self, view_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Per loss pixel of the view (``train_subsets`` order): how many of its fixed sample
        directions (light and cosine) are above the surface, and how many of those are blocked."""
        pv = self.prepare(view_index)
        rows = torch.as_tensor(pv.row_of[self.train_subsets[view_index]], dtype=torch.long, device=self.device)
        above = pv.fixed.wi[rows][..., 2] > 0
        blocked = ~pv.fixed.vis[rows] & above
        return above.sum(1).cpu().numpy(), blocked.sum(1).cpu().numpy()

    def self_occlusion(self, view_index: int) -> float:
        """The share of the view's loss pixels' sample directions above the surface that the part
        itself blocks: 0 for a convex part; where it is large, light between parts of the part
        (which this renderer leaves out) matters."""
        above, blocked = self._blocked_counts(view_index)
        return float(blocked.sum()) / max(int(above.sum()), 1)

    def blocked_share(self, view_index: int) -> np.ndarray:
        """Per loss pixel of the view (``train_subsets`` order), the share of its fixed sample
        directions above the surface that something blocks: the part or, with
        ``scene.known``, the other objects. Light those reflect onto the pixel is not rendered
        here, so a known object's pixels facing the part are left out of a calibration."""
        above, blocked = self._blocked_counts(view_index)
        return blocked / np.maximum(above, 1)

    def _visible(self, pv: _PreparedView, pixels: np.ndarray, d: torch.Tensor) -> torch.Tensor:
        """(P, N) float visibility of world directions d (P, N, 3) from the view's covered
        pixels ``pixels`` (P,), on ``d``'s device. The pixels the part itself cannot shadow
        (:attr:`pbrfit.gbuffer.ViewGeometry.clear`) do not trace their rays against it."""
        geo = pv.geometry
        origins, normal_geo = pv.origins[pixels], geo.normal_geo[pixels]
        clear = None if geo.clear is None else geo.clear[pixels]
        dn = d.detach().double().cpu().numpy()
        vis = (normal_geo[:, None, :] * dn).sum(-1) > 0  # above the surface
        traced = vis if clear is None else vis & ~clear[:, None]
        rows, cols = np.nonzero(traced)
        if len(rows):
            vis[rows, cols] = ~self.caster.occluded(origins[rows], dn[rows, cols])
        if self.occluder is not None:  # the known objects' shadows (pbrfit.scene.FitScene.known)
            rows, cols = np.nonzero(vis)
            if len(rows):
                vis[rows, cols] = ~self.occluder.occluded(origins[rows], dn[rows, cols])
        return torch.as_tensor(vis, dtype=torch.float32, device=d.device)

    def _moved_lights(self, pv: _PreparedView, rows_t: torch.Tensor, sel: np.ndarray, poses: list
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """The analytic lights' samples of pixels ``sel`` (prepared rows ``rows_t``) with each
        light moved by its (rotation, translation) in ``poses`` (None: not moved): the same
        uniform numbers, the visibility the unmoved samples had (calibration's deltas are
        small), differentiable in the poses."""
        geo, na = pv.geometry, self.samples.analytic
        points = torch.as_tensor(geo.position[sel], dtype=torch.float64)
        frame = geo.frame[torch.as_tensor(sel, dtype=torch.long, device=self.device)]
        pixels = torch.as_tensor(sel, dtype=torch.long)  # u_analytic is per covered pixel (as in _fix)
        wis, ws = [], []
        for k, light in enumerate(pv.lights):
            rotation, translation = poses[k]
            wi_l, w_l = sample(light, points, pv.u_analytic[pixels, k * na:(k + 1) * na], rotation, translation)
            vis = pv.fixed.lights_vis[rows_t, k * na:(k + 1) * na]
            wis.append(torch.einsum("pnj,pij->pni", wi_l.float().to(self.device), frame))
            ws.append(w_l.float().to(self.device) * vis[..., None] / na)
        return torch.cat(wis, 1), torch.cat(ws, 1)

    # --- shading --------------------------------------------------------------------------
    def shade(self, view_index: int, material: dict[str, torch.Tensor], sel: np.ndarray | None = None,
              calibration=None) -> torch.Tensor:
        """Outgoing radiance (S, 3) of the covered pixels ``sel`` (indices into P; all if None).

        Args:
            calibration: a :class:`pbrfit.calibration.ViewCalibration` to render the view with
                its environment turned and scaled, its lights scaled and the photo's gains
                applied, differentiably in those terms (the same samples).
        """
        with flush_subnormals():
            if not self.filter_pixels:
                return self._shade(view_index, material, sel, calibration)
            need, index_t, weights_t = self.filter_taps(view_index, sel)
            return apply_taps(self._shade(view_index, material, need, calibration), index_t, weights_t)

    def shade_centres(self, view_index: int, material: dict[str, torch.Tensor], sel: np.ndarray) -> torch.Tensor:
        """Outgoing radiance (S, 3) at the centres of the covered pixels ``sel``, as the pixel
        filter (``filter_pixels``) averages them: ``shade`` of pixels ``sel`` is
        :func:`apply_taps` of this over :meth:`filter_taps`' ``need``."""
        with flush_subnormals():
            return self._shade(view_index, material, sel)

    def filter_taps(self, view_index: int, sel: np.ndarray | None = None):
        """(need, index, weights): :func:`pbrfit.pixel_filter.neighbourhood` of the covered
        pixels ``sel`` (all if None; index and weights as tensors on this renderer's device),
        remembered for the last :data:`NEIGHBOURHOODS_KEPT` pixel sets: a fit shades the same
        sets (its gradient chunks) at every step."""
        geo = self.prepare(view_index).geometry
        sel = np.arange(len(geo.pixels)) if sel is None else np.asarray(sel)
        key = (view_index, sel.astype(np.int64).tobytes())
        with self._neighbourhoods_lock:
            found = self._neighbourhoods.get(key)
            if found is not None:
                self._neighbourhoods.move_to_end(key)
                return found
        need, index, weights = pixel_filter.neighbourhood(geo.coverage, geo.pixels, sel)
        found = (need, torch.as_tensor(index, device=self.device), torch.as_tensor(weights, device=self.device))
        with self._neighbourhoods_lock:
            self._neighbourhoods[key] = found
            if len(self._neighbourhoods) > NEIGHBOURHOODS_KEPT:
                self._neighbourhoods.popitem(last=False)
        return found

    @staticmethod
    def _glossy_frame(pv: _PreparedView) -> torch.Tensor | None:
        """(P, 3, 3) where the view's glossy lobes shade with a bent normal, as Cycles'
        (:func:`pbrfit.microfacet.glossy_frame`), or None where none is; computed once."""
        if pv.glossy_frame is _UNSET:
            geo = pv.geometry
            pv.glossy_frame = bsdf.glossy_frames(geo.frame, geo.normal_geo, geo.wo)
        return pv.glossy_frame

    def _shade(self, view_index, material, sel, cal=None):
        material = self.on_device(material)
        pv = self.prepare(view_index)
        geo, env, fx, n = pv.geometry, pv.env, pv.fixed, self.samples
        if sel is None:
            sel = np.arange(len(geo.pixels))
        sel_t = torch.as_tensor(sel, dtype=torch.long, device=self.device)
        wo = geo.wo[sel_t][:, None, :]
        material = dict(textures.resolve(material, None if geo.uv is None else geo.uv[sel_t], extra_dims=1))
        if geo.footprint is not None and not self.filter_pixels:  # the filter's widening of the lobes
            material[bsdf.FOOTPRINT] = geo.footprint[sel_t][:, None, :]
        normal = material.pop(textures.NORMAL, None)
        if normal is not None:  # a normal map turns each pixel's shading frame (textures.normal_rotation)
            r = textures.normal_rotation(normal[:, 0], geo.tbn[sel_t], wo[:, 0])
            to_shading, from_shading = (lambda w: textures.rotate(r, w)), (lambda w: textures.unrotate(r, w))
            wo = to_shading(wo[:, 0])[:, None, :]
        else:
            to_shading = from_shading = (lambda w: w)
            glossy = self._glossy_frame(pv)
            if glossy is not None:  # Cycles' glossy lobes bend their normal at grazing views
                material[bsdf.GLOSSY_FRAME] = glossy[sel_t][:, None]
        use_coat = n.coat > 0 and bool((material["coat_weight"] > 0).any() or material["coat_weight"].requires_grad)

        held = self.held_directions
        holding = torch.no_grad if held else nullcontext  # around what the gradient does not pass

        def denominator(wi, p_fixed):
            with holding():
                den = p_fixed + n.specular * bsdf.pdf_specular(material, wo, wi)
                if use_coat:
                    den = den + n.coat * bsdf.pdf_coat(material, wo, wi)
                return den.clamp_min(1e-12)

        # material-independent directions
        rows = pv.row_of[sel]
        if (rows < 0).any():  # pixels outside the loss pixels: prepare them all
            self._fix(pv, np.arange(len(geo.pixels)))
            fx, rows = pv.fixed, pv.row_of[sel]
        rows_t = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        yaw = env_gain = None
        if cal is not None:
            yaw = cal.yaw
            env_gain = None if cal.environment_gain is None else cal.environment_gain.to(self.device, torch.float32)

        def environment(d):  # the environment's radiance from world directions d, as calibrated
            radiance = env.radiance(d, yaw=yaw)
            return radiance if env_gain is None else radiance * env_gain

        wi = to_shading(fx.wi[rows_t])
        f = bsdf.principled_eval(material, wo, wi)
        lv = fx.lv[rows_t] if yaw is None and env_gain is None else \
            environment(torch.einsum("pni,pij->pnj", fx.wi[rows_t], geo.frame[sel_t])) * fx.vis[rows_t][..., None]
        out = (f * lv / denominator(wi, fx.p_fixed[rows_t])[..., None]).sum(1)
        if fx.lights_wi is not None:  # analytic lights: next-event estimation alone (pbrfit.lights)
            if cal is not None and cal.light_poses is not None:  # moved: sampled again, visibility held
                lights_wi, lights_w = self._moved_lights(pv, rows_t, sel, cal.light_poses)
            else:
                lights_wi, lights_w = fx.lights_wi[rows_t], fx.lights_w[rows_t]
            if cal is not None and cal.light_gains is not None:
                per_sample = cal.light_gains.to(self.device, torch.float32).repeat_interleave(self.samples.analytic, 0)
                lights_w = lights_w * per_sample[None]
            out = out + (bsdf.principled_eval(material, wo, to_shading(lights_wi)) * lights_w).sum(1)

        # directions sampled from the BSDF's lobes (in the shading frame)
        strategies = [(bsdf.sample_specular, pv.u_specular, n.specular)]
        if use_coat:
            strategies.append((bsdf.sample_coat, pv.u_coat, n.coat))
        frame = geo.frame[sel_t]
        for sampler, u, count in strategies:
            if count == 0:
                continue
            with holding():
                wi, _ = sampler(material, wo.expand(-1, count, -1), u[sel_t])
                wi_local = from_shading(wi)
                d = torch.einsum("pni,pij->pnj", wi_local, frame)
                d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                radiance = environment(d)
            if held:  # the direction held in the part's frame, turned by the normal map again
                wi = to_shading(wi_local)
            vis = self._visible(pv, sel, d)
            p_fixed = n.light * env.pdf(d.detach()) + n.cosine * wi_local[..., 2].detach().clamp_min(0) / math.pi
            f = bsdf.principled_eval(material, wo, wi)
            out = out + (f * radiance * vis[..., None] / denominator(wi, p_fixed)[..., None]).sum(1)
        if cal is not None and cal.view_gain is not None:
            out = out * cal.view_gain.to(self.device, torch.float32)
        return out

