"""The raster backend: deferred, differentiable shading of the part under an HDRI.

Geometry and cameras are fixed during a material fit, so each view's surface data
(position, normals, tangent frame, view direction: a G-buffer) is computed once by ray
casting one ray through each pixel centre (:mod:`pbrfit.raycast`). Shading is then a pure
torch function of the material parameters:

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
samples' sharp lookups, count a small bright source twice: tests/test_render_vs_cycles.py.) All random numbers are drawn once from a seeded generator,
so the objective is a deterministic, smooth function of the parameters.

What this backend leaves out: light reflected from the part onto itself (interreflection)
and transport under the surface (subsurface is approximated in :mod:`pbrfit.bsdf`). The
path backend covers those.

Tangents follow Blender's default for an unconnected Tangent input: radial around the
mesh object's local Z axis, over the object's bounding box (Cycles' TangentNode, radial, Z),
then made orthogonal to the shading normal. ``anisotropic_rotation`` turns it about the
normal (handled by the BSDF).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import bsdf
from .envmap import EnvironmentMap
from .errors import InputError
from .raycast import RayCaster
from .scene import Camera, FitScene, Mesh, View

__all__ = ["SampleCounts", "ViewGeometry", "SceneRenderer", "RasterRenderer", "SurfacePoints", "camera_rays", "flush_subnormals",
           "surface_points"]


@dataclass(frozen=True)
class SampleCounts:
    """Samples per pixel of each strategy (see module docstring)."""

    light: int = 32
    cosine: int = 8
    specular: int = 16
    coat: int = 8


def camera_rays(camera: Camera, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """World-space rays through pixel centres, row-major from the top-left pixel.

    Returns:
        origins (H*W, 3) and unit directions (H*W, 3), float64.
    """
    j = (np.arange(width) + 0.5) / width * 2 - 1
    i = 1 - (np.arange(height) + 0.5) / height * 2
    x = j[None, :] * camera.horizontal_aperture / 2 + camera.horizontal_aperture_offset
    y = i[:, None] * camera.vertical_aperture / 2 + camera.vertical_aperture_offset
    x, y = np.broadcast_arrays(x, y)
    d = np.stack([x, y, -np.full_like(x, camera.focal_length)], -1).reshape(-1, 3)
    m = np.asarray(camera.world_from_camera, dtype=np.float64)
    d = d @ m[:3, :3].T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    o = np.broadcast_to(m[:3, 3], d.shape).copy()
    return o, d


def _stratified(pixels: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """(pixels, count, 2) uniforms: the first ``count`` points of a scrambled 2-D Sobol
    sequence, shifted per pixel by a random offset modulo 1 (Cranley-Patterson rotation), so
    each pixel's samples are stratified and pixels are decorrelated."""
    if count == 0:
        return torch.zeros(pixels, 0, 2)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    points = torch.quasirandom.SobolEngine(2, scramble=True, seed=seed).draw(count, dtype=torch.float64)
    shift = torch.rand(pixels, 1, 2, generator=generator, dtype=torch.float64)
    return ((points[None] + shift) % 1.0).clamp(0, 1 - 1e-7)


_FLUSH_DEPTH = 0


@contextlib.contextmanager
def flush_subnormals():
    """Flush subnormal floats to zero while shading, and only then.

    Underflowing GGX tails and Fresnel powers produce subnormals that make x86 arithmetic
    up to 100x slower; flushing them changes no result that matters here. The switch is
    process-wide state shared with other libraries (OpenImageIO's half floats, a host
    application), so it is restored on the way out.
    """
    global _FLUSH_DEPTH
    np.finfo(np.float32), np.finfo(np.float64)  # cache numpy's limits before the switch
    _FLUSH_DEPTH += 1
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        _FLUSH_DEPTH -= 1
        if _FLUSH_DEPTH == 0:
            torch.set_flush_denormal(False)


def _erode(mask: np.ndarray, pixels: int = 1) -> np.ndarray:
    m = torch.as_tensor(mask.astype(np.float32))[None, None]
    for _ in range(pixels):
        m = -F.max_pool2d(-F.pad(m, (1, 1, 1, 1), value=0.0), 3, stride=1)
    return m[0, 0].numpy() > 0.5


_TANGENT_FRAMES: dict[int, tuple] = {}


def _tangent_frame(mesh: Mesh):
    """(mesh, object_from_world, bbox low, bbox size, normal matrix) of a mesh, cached: the
    path backend asks for tangents at every bounce."""
    cached = _TANGENT_FRAMES.get(id(mesh))
    if cached is not None and cached[0] is mesh:
        return cached
    if mesh.world_from_object is not None:
        m = np.asarray(mesh.world_from_object, dtype=np.float64)
        inv = np.linalg.inv(m)
        lin = m[:3, :3]
    else:
        inv, lin = np.eye(4), np.eye(3)
    obj_pts = mesh.positions @ inv[:3, :3].T + inv[:3, 3]
    lo, hi = obj_pts.min(0), obj_pts.max(0)
    size = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    normal_matrix = np.linalg.inv(lin).T  # Cycles transforms this tangent like a normal
    if len(_TANGENT_FRAMES) > 64:
        _TANGENT_FRAMES.clear()
    _TANGENT_FRAMES[id(mesh)] = cached = (mesh, inv, lo, size, normal_matrix)
    return cached


def _default_tangents(mesh: Mesh, position: np.ndarray) -> np.ndarray:
    """Blender's default tangent (radial about object Z over the bounding box), world space."""
    _, inv, lo, size, normal_matrix = _tangent_frame(mesh)
    p_obj = position @ inv[:3, :3].T + inv[:3, 3]
    g = (p_obj - lo) / size  # Blender's "generated" coordinates
    t_obj = np.stack([-(g[:, 1] - 0.5), g[:, 0] - 0.5, np.zeros(len(g))], -1)
    return t_obj @ normal_matrix.T


@dataclass
class ViewGeometry:
    """Per-view surface data, for the P pixels the part covers (pixel centres hit).

    Attributes:
        height, width: image size.
        pixels: (P,) flat indices into the H*W image.
        coverage: (H, W) bool, the part's silhouette through pixel centres.
        loss_pixels: (Q,) indices into the P covered pixels used by losses and metrics:
            covered by the part and by the reference mask, one pixel away from either edge.
        position, normal_geo: (P, 3) float64 world space; normal_geo faces the camera.
        frame: (P, 3, 3) float32 rows = tangent, bitangent, shading normal (world).
        wo: (P, 3) float32 direction toward the camera in the local frame.
        mask_iou: intersection over union of the silhouette and the reference mask (1 if none).
    """

    height: int
    width: int
    pixels: np.ndarray
    coverage: np.ndarray
    loss_pixels: np.ndarray
    position: np.ndarray
    normal_geo: np.ndarray
    frame: torch.Tensor
    wo: torch.Tensor
    mask_iou: float


@dataclass
class SurfacePoints:
    """Shading data of surface points hit by rays (world space).

    Attributes:
        position: (N, 3) float64.
        normal_geo: (N, 3) float64 geometric normal, turned toward the ray's origin (the
            part is two-sided, as Cycles shades back faces with the flipped normal).
        frame: (N, 3, 3) float64 rows = tangent, bitangent, shading normal.
        wo: (N, 3) float64 direction back along the ray, in the local frame.
    """

    position: np.ndarray
    normal_geo: np.ndarray
    frame: np.ndarray
    wo: np.ndarray


def surface_points(mesh: Mesh, triangle: np.ndarray, barycentric: np.ndarray, towards: np.ndarray) -> SurfacePoints:
    """Interpolate position, normals and Blender's default tangent frame at ray hits.

    Args:
        triangle: (N,) hit triangle indices; barycentric: (N, 2) (b1, b2) (see
            :mod:`pbrfit.raycast`); towards: (N, 3) unit directions from the hit back to
            the ray's origin.
    """
    tri = mesh.triangles[triangle]
    b1, b2 = barycentric[:, 0:1], barycentric[:, 1:2]
    b0 = 1 - b1 - b2
    p0, p1, p2 = (mesh.positions[tri[:, k]] for k in range(3))
    position = b0 * p0 + b1 * p1 + b2 * p2
    ng = np.cross(p1 - p0, p2 - p0)
    ng /= np.maximum(np.linalg.norm(ng, axis=-1, keepdims=True), 1e-30)
    flip = np.sign(np.sum(ng * towards, -1, keepdims=True))
    flip[flip == 0] = 1
    ng = ng * flip
    if mesh.normals is not None:
        nc = mesh.normals[triangle]
        ns = b0 * nc[:, 0] + b1 * nc[:, 1] + b2 * nc[:, 2]
        # keep the shading normal on the viewer's side of the surface, whatever the winding
        ns = ns * np.where(np.sum(ns * ng, -1, keepdims=True) < 0, -1.0, 1.0)
        ns /= np.maximum(np.linalg.norm(ns, axis=-1, keepdims=True), 1e-30)
        bad = ~np.isfinite(ns).all(-1) | (np.linalg.norm(ns, axis=-1) < 0.5)
        ns[bad] = ng[bad]
    else:
        ns = ng
    t = _default_tangents(mesh, position)
    t = np.cross(ns, np.cross(t, ns))  # Cycles: T = cross(N, normalize(cross(T, N)))
    tn = np.linalg.norm(t, axis=-1, keepdims=True)
    # on the Z axis itself the radial tangent vanishes: fall back to any tangent
    fallback = np.cross(ns, np.where(np.abs(ns[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]]))
    t = np.where(tn > 1e-9, t / np.maximum(tn, 1e-30), fallback / np.linalg.norm(fallback, axis=-1, keepdims=True))
    b = np.cross(ns, t)
    frame = np.stack([t, b, ns], axis=1)
    wo = np.einsum("pij,pj->pi", frame, towards)
    return SurfacePoints(position, ng, frame, wo)


def _view_geometry(mesh: Mesh, caster: RayCaster, view: View) -> ViewGeometry:
    h, w = view.resolution
    o, d = camera_rays(view.camera, h, w)
    hits = caster.intersect(o, d)
    pix = np.nonzero(hits.hit)[0]
    if len(pix) == 0:
        raise InputError(
            f"view '{view.name}': the part {mesh.prim_path or ''} is not visible from camera "
            f"{view.camera.prim_path}; check the camera's transform and the target prim")
    surf = surface_points(mesh, hits.triangle[pix], hits.barycentric[pix], -d[pix])
    position, ng, frame, wo = surf.position, surf.normal_geo, surf.frame, surf.wo

    coverage = np.zeros(h * w, bool)
    coverage[pix] = True
    coverage = coverage.reshape(h, w)
    usable = _erode(coverage)
    iou = 1.0
    if view.mask is not None:
        ref = view.mask > 0.5
        union = np.logical_or(ref, coverage).sum()
        iou = float(np.logical_and(ref, coverage).sum() / max(union, 1))
        usable &= _erode(view.mask >= 0.99)
    loss_pixels = np.nonzero(usable.reshape(-1)[pix])[0]
    if len(loss_pixels) == 0:
        raise InputError(
            f"view '{view.name}': no pixel is covered by both the part and the mask of "
            f"{view.image_path}; check the camera calibration and the mask")
    return ViewGeometry(h, w, pix, coverage, loss_pixels, position, ng,
                        torch.as_tensor(frame, dtype=torch.float32),
                        torch.as_tensor(wo, dtype=torch.float32), iou)


@dataclass
class _FixedSamples:
    """Material-independent samples of one view (light + cosine strategies)."""

    wi: torch.Tensor        # (P, N, 3) local directions
    lv: torch.Tensor        # (P, N, 3) radiance * visibility
    p_fixed: torch.Tensor   # (P, N) n_light * p_env + n_cos * p_cos


@dataclass
class _PreparedView:
    geometry: ViewGeometry
    env: EnvironmentMap
    fixed: _FixedSamples
    u_specular: torch.Tensor  # (P, Ns, 2)
    u_coat: torch.Tensor      # (P, Nc, 2)
    origins: np.ndarray       # (P, 3) shadow-ray origins


class SceneRenderer:
    """What every renderer of a fit scene shares: the scene, its ray caster, one
    :class:`EnvironmentMap` per distinct environment, and the per-view train subsets."""

    def __init__(self, scene: FitScene, seed: int, max_loss_pixels: int, device: str):
        self.scene = scene
        self.seed = seed
        self.max_loss_pixels = max_loss_pixels
        self.caster = RayCaster(scene.mesh, device=device)
        self._env_cache: dict[int, EnvironmentMap] = {}
        self.train_subsets: dict[int, np.ndarray] = {}

    #: pixels shaded per call by :meth:`render_image`
    image_chunk = 4096

    def environment(self, view_index: int) -> EnvironmentMap:
        env = self.scene.views[view_index].environment
        if id(env) not in self._env_cache:
            self._env_cache[id(env)] = EnvironmentMap(env)
        return self._env_cache[id(env)]

    def _train_subset(self, geo: ViewGeometry, generator: torch.Generator) -> np.ndarray:
        """The view's loss pixels, or a random ``max_loss_pixels`` of them (sorted)."""
        q = geo.loss_pixels
        if len(q) > self.max_loss_pixels:
            q = np.sort(q[torch.randperm(len(q), generator=generator)[: self.max_loss_pixels].numpy()])
        return q

    def render_image(self, view_index: int, material: dict[str, torch.Tensor]) -> np.ndarray:
        """Full image (H, W, 3) float32, zero where the part is not; no gradients."""
        geo = self.prepare(view_index).geometry
        out = np.zeros((geo.height * geo.width, 3), np.float32)
        with torch.no_grad():
            for s in range(0, len(geo.pixels), self.image_chunk):
                sel = np.arange(s, min(s + self.image_chunk, len(geo.pixels)))
                out[geo.pixels[sel]] = self.shade(view_index, material, sel).numpy()
        return out.reshape(geo.height, geo.width, 3)


class RasterRenderer(SceneRenderer):
    """Renders the part's views for a material; differentiable in the material.

    Args:
        scene: the fit scene (mesh and views).
        samples: samples per pixel per strategy.
        seed: seed of every random number used (the objective is deterministic).
        max_loss_pixels: per view, at most this many pixels enter the training loss
            (a fixed random subset); metrics always use all usable pixels.
    """

    def __init__(self, scene: FitScene, samples: SampleCounts = SampleCounts(), seed: int = 0,
                 max_loss_pixels: int = 4096, device: str = "cpu"):
        super().__init__(scene, seed, max_loss_pixels, device)
        self.samples = samples
        self._prepared: dict[int, _PreparedView] = {}

    # --- preparation ------------------------------------------------------------------------
    def prepare(self, view_index: int) -> _PreparedView:
        if view_index in self._prepared:
            return self._prepared[view_index]
        view = self.scene.views[view_index]
        geo = _view_geometry(self.scene.mesh, self.caster, view)
        env = self.environment(view_index)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + view_index)
        n = self.samples
        p = len(geo.pixels)
        origins = geo.position + geo.normal_geo * self.caster.epsilon

        # light samples (per pixel, drawn from the environment) and cosine samples
        d_light, _ = env.warp(_stratified(p, n.light, gen))
        u = _stratified(p, n.cosine, gen).float()
        r, phi = torch.sqrt(u[..., 0]), 2 * math.pi * u[..., 1]
        wi_cos = torch.stack([r * torch.cos(phi), r * torch.sin(phi), torch.sqrt((1 - u[..., 0]).clamp_min(0))], -1)
        d_cos = torch.einsum("pni,pij->pnj", wi_cos, geo.frame)
        d_all = torch.cat([d_light, d_cos], 1)  # (P, N, 3) world
        wi_all = torch.einsum("pnj,pij->pni", d_all, geo.frame)
        radiance = env.radiance(d_all)  # full resolution: light samples follow texels
        visible = self._visible(origins, geo.normal_geo, d_all)
        p_cos = wi_all[..., 2].clamp_min(0) / math.pi
        p_fixed = n.light * env.pdf(d_all) + n.cosine * p_cos
        fixed = _FixedSamples(wi_all.contiguous(), (radiance * visible[..., None]).contiguous(), p_fixed)

        prepared = _PreparedView(
            geo, env, fixed,
            _stratified(p, n.specular, gen).float(), _stratified(p, n.coat, gen).float(), origins)
        self.train_subsets[view_index] = self._train_subset(geo, gen)
        self._prepared[view_index] = prepared
        return prepared

    def _visible(self, origins: np.ndarray, normal_geo: np.ndarray, d: torch.Tensor) -> torch.Tensor:
        """(P, N) float visibility of world directions d (P, N, 3) from the surface points."""
        p, n = d.shape[:2]
        dn = d.detach().double().numpy().reshape(-1, 3)
        o = np.repeat(origins, n, axis=0)
        above = (np.repeat(normal_geo, n, axis=0) * dn).sum(-1) > 0
        vis = np.zeros(len(dn), bool)
        if above.any():
            vis[above] = ~self.caster.occluded(o[above], dn[above])
        return torch.as_tensor(vis.reshape(p, n), dtype=torch.float32)

    # --- shading --------------------------------------------------------------------------
    def shade(self, view_index: int, material: dict[str, torch.Tensor], sel: np.ndarray | None = None) -> torch.Tensor:
        """Outgoing radiance (S, 3) of the covered pixels ``sel`` (indices into P; all if None)."""
        with flush_subnormals():
            return self._shade(view_index, material, sel)

    def _shade(self, view_index, material, sel):
        pv = self.prepare(view_index)
        geo, env, fx, n = pv.geometry, pv.env, pv.fixed, self.samples
        if sel is None:
            sel = np.arange(len(geo.pixels))
        sel_t = torch.as_tensor(sel, dtype=torch.long)
        wo = geo.wo[sel_t][:, None, :]
        use_coat = n.coat > 0 and bool((material["coat_weight"] > 0).any() or material["coat_weight"].requires_grad)

        def denominator(wi, p_fixed):
            den = p_fixed + n.specular * bsdf.pdf_specular(material, wo, wi)
            if use_coat:
                den = den + n.coat * bsdf.pdf_coat(material, wo, wi)
            return den.clamp_min(1e-12)

        # material-independent directions
        wi = fx.wi[sel_t]
        f = bsdf.principled_eval(material, wo, wi)
        out = (f * fx.lv[sel_t] / denominator(wi, fx.p_fixed[sel_t])[..., None]).sum(1)

        # directions sampled from the BSDF's lobes
        strategies = [(bsdf.sample_specular, pv.u_specular, n.specular)]
        if use_coat:
            strategies.append((bsdf.sample_coat, pv.u_coat, n.coat))
        frame = geo.frame[sel_t]
        origins, ngeo = pv.origins[sel], geo.normal_geo[sel]
        for sampler, u, count in strategies:
            if count == 0:
                continue
            wi, _ = sampler(material, wo.expand(-1, count, -1), u[sel_t])
            d = torch.einsum("pni,pij->pnj", wi, frame)
            d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            radiance = env.radiance(d)
            vis = self._visible(origins, ngeo, d)
            p_fixed = n.light * env.pdf(d.detach()) + n.cosine * wi[..., 2].detach().clamp_min(0) / math.pi
            f = bsdf.principled_eval(material, wo, wi)
            out = out + (f * radiance * vis[..., None] / denominator(wi, p_fixed)[..., None]).sum(1)
        return out

