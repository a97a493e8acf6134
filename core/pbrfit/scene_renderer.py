"""What every renderer of a fit scene shares: :class:`SceneRenderer`, the base of the raster
(:mod:`pbrfit.render`) and path (:mod:`pbrfit.pathtrace`) backends, and
:func:`flush_subnormals`, under which both shade.

A renderer's interface, used by the fit's objective, losses and metrics: ``prepare(view)``
(per-view data, with its :class:`pbrfit.gbuffer.ViewGeometry` as ``.geometry``),
``shade(view, material, pixels)`` (differentiable radiance of covered pixels),
:meth:`SceneRenderer.render_image`, ``train_subsets`` and :meth:`SceneRenderer.environment`.

**Devices.** A renderer shades on its ``device`` (``cpu`` or ``cuda``): the prepared views'
tensors, the environment maps and every intermediate live there, and ``shade`` moves the
material's tensors there (differentiably: the optimizer's parameters stay on the CPU) and
returns radiance on the device. The mesh, the G-buffer's float64 positions and the ray
queries stay NumPy arrays on the host; rays cross to the device and back once per query.
Random numbers are drawn on the CPU from seeded generators and then moved, so a seed
gives the same samples on every device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Callable

import numpy as np
import torch

from .envmap import EnvironmentMap, environment_map
from .gbuffer import ViewGeometry
from .lights import lights_white
from .raycast import RayCaster
from .scene import FitScene, merge_meshes

__all__ = ["SceneRenderer", "flush_subnormals", "pixel_blocks"]

_FLUSH = threading.local()  # per thread: depth of nested flush_subnormals


@contextlib.contextmanager
def flush_subnormals():
    """Flush subnormal floats to zero while shading, and only then.

    Underflowing GGX tails and Fresnel powers produce subnormals that make x86 arithmetic
    up to 100x slower; flushing them changes no result that matters here. The switch (the
    FPU's control register) is per thread and shared with other libraries on that thread
    (OpenImageIO's half floats, a host application), so it is restored on the way out; the
    nesting depth is counted per thread too (views render on several threads:
    :mod:`pbrfit.parallel`).
    """
    np.finfo(np.float32), np.finfo(np.float64)  # cache numpy's limits before the switch
    depth = getattr(_FLUSH, "depth", 0)
    _FLUSH.depth = depth + 1
    if depth == 0:
        torch.set_flush_denormal(True)
    try:
        yield
    finally:
        _FLUSH.depth = depth
        if depth == 0:
            torch.set_flush_denormal(False)


def pixel_blocks(geo: ViewGeometry, rows: np.ndarray, block: int) -> np.ndarray:
    """For each of the covered pixels ``rows`` (indices into ``geo.pixels``), the index of the
    ``block`` x ``block`` image block it lies in (row-major over the image's blocks)."""
    flat = geo.pixels[rows]
    y, x = flat // geo.width, flat % geo.width
    return (y // block) * -(-geo.width // block) + x // block


class SceneRenderer:
    """What every renderer of a fit scene shares: the scene, its ray caster, one
    :class:`EnvironmentMap` per distinct environment, and the per-view train subsets."""

    def __init__(self, scene: FitScene, seed: int, max_loss_pixels: int, device: str, yaw_spread: float = 0.0,
                 block: int = 1):
        self.scene = scene
        #: side in pixels of the square blocks the train subsets are made of (1: single pixels);
        #: :func:`pbrfit.objective.unbiased_relative_error` compares block means
        self.block = block
        self.yaw_spread = yaw_spread  # EnvironmentMap(yaw_spread=): a calibration's renderer
        self.seed = seed
        self.max_loss_pixels = max_loss_pixels
        self.device = torch.device(device)
        self.caster = RayCaster(scene.mesh, device=self.device.type)
        #: the known objects, which hide the part where they are in front of it (and shadow it in
        #: the raster renderer; the path tracer's bounces and shadow rays do not see them)
        self.occluder = (RayCaster(merge_meshes([k.mesh for k in scene.known]), device=self.device.type)
                         if scene.known else None)
        self._env_cache: dict[int, EnvironmentMap] = {}
        self.train_subsets: dict[int, np.ndarray] = {}

    #: pixels shaded per call by :meth:`render_image`
    image_chunk = 4096

    def environment(self, view_index: int) -> EnvironmentMap:
        env = self.scene.views[view_index].environment
        if id(env) not in self._env_cache:
            self._env_cache[id(env)] = environment_map(env, self.device, self.yaw_spread)
        return self._env_cache[id(env)]

    def white(self, view_index: int) -> float:
        """The view's *white*, the radiance every loss and colour difference divides by: what
        a white Lambertian reflects under the view's lighting, the environment's mean
        luminance plus, per analytic light, the luminance of the irradiance it gives a surface
        at the part's centre facing it, over pi (:func:`pbrfit.lights.lights_white`)."""
        view = self.scene.views[view_index]
        white = self.environment(view_index).mean_luminance
        if view.lights:
            white += lights_white(view.lights, self.scene.mesh.positions.mean(0))
        return white

    def on_device(self, material: dict) -> dict[str, torch.Tensor]:
        """The material's values as tensors on this renderer's device; differentiable (a
        gradient flows back to tensors on another device)."""
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else torch.as_tensor(v, device=self.device)
                for k, v in material.items()}

    def geometry_on_device(self, geo: ViewGeometry) -> ViewGeometry:
        """``geo`` with its shading frames and view directions on this renderer's device."""
        if geo.frame.device == self.device:
            return geo
        return dataclasses.replace(geo, frame=geo.frame.to(self.device), wo=geo.wo.to(self.device),
                                   uv=None if geo.uv is None else geo.uv.to(self.device),
                                   tbn=None if geo.tbn is None else geo.tbn.to(self.device),
                                   footprint=None if geo.footprint is None else geo.footprint.to(self.device))

    def _train_subset(self, geo: ViewGeometry, generator: torch.Generator) -> np.ndarray:
        """The view's loss pixels, or a random ``max_loss_pixels`` of them (sorted); with
        :attr:`block` > 1, the pixels of random whole blocks (:func:`pixel_blocks`) all of whose
        pixels are loss pixels."""
        q = geo.loss_pixels
        if self.block > 1:
            blocks = pixel_blocks(geo, q, self.block)
            counts = np.bincount(blocks)
            whole = np.flatnonzero(counts == self.block * self.block)
            keep = self.max_loss_pixels // (self.block * self.block)
            if len(whole) > keep:
                whole = whole[torch.randperm(len(whole), generator=generator, device="cpu")[:keep].numpy()]
            return q[np.isin(blocks, whole)]
        if len(q) > self.max_loss_pixels:
            q = np.sort(q[torch.randperm(len(q), generator=generator, device="cpu")[: self.max_loss_pixels].numpy()])
        return q

    def render_image(self, view_index: int, material: dict[str, torch.Tensor],
                     check: Callable[[], None] | None = None) -> np.ndarray:
        """Full image (H, W, 3) float32, zero where the part is not; no gradients. ``check``
        is called before each chunk of pixels (it raises to cancel)."""
        geo = self.prepare(view_index).geometry
        out = np.zeros((geo.height * geo.width, 3), np.float32)
        with torch.no_grad():
            for s in range(0, len(geo.pixels), self.image_chunk):
                if check is not None:
                    check()
                sel = np.arange(s, min(s + self.image_chunk, len(geo.pixels)))
                out[geo.pixels[sel]] = self.shade(view_index, material, sel).cpu().numpy()
        return out.reshape(geo.height, geo.width, 3)
