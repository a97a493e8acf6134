"""Measuring a material on a scene's views: per-view images, ΔE2000 maps and metrics.

Radiance is divided by each view's white before any metric (see :mod:`pbrfit.objective`);
the metrics are :func:`pbrfit.losses.image_metrics` on the view's measured pixels (the
mask eroded by a pixel, see :mod:`pbrfit.gbuffer`), plus the reference mask's IoU with the
part's silhouette.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import losses as L
from .figures import ViewFigure, view_figure
from .heatmap import display_exposure
from .parallel import map_ordered
from .params import ParameterSpace

__all__ = ["ViewResult", "evaluate_views"]


@dataclass
class ViewResult:
    """One view rendered with the final material and measured against its reference.

    Attributes:
        name, split: the view's.
        reference, fit: (H, W, 3) linear radiance; de_map: (H, W) per-pixel ΔE2000, zero
            outside the mask; mask: (H, W) 1 where measured.
        white: the view's white (linear radiance; see :mod:`pbrfit.objective`).
        metrics: de2000_mean, de2000_p95, ssim, l1, mask_iou (:func:`pbrfit.losses.image_metrics`).
        mask_iou: the reference mask against the part's silhouette.
    """

    name: str
    split: str
    reference: np.ndarray
    fit: np.ndarray
    de_map: np.ndarray
    mask: np.ndarray
    white: float
    metrics: dict
    mask_iou: float

    @property
    def exposure(self) -> float:
        """The display exposure of this view's figures (:func:`pbrfit.heatmap.display_exposure`)."""
        return display_exposure(self.reference, self.mask)

    def figure(self, max_size: int | None = None) -> ViewFigure:
        """Reference, fit and ΔE2000 heat map for display (:func:`pbrfit.figures.view_figure`)."""
        return view_figure(self.reference, self.fit, self.de_map, self.mask, max_size=max_size)



def evaluate_views(renderer, material_values: dict, view_ids: list[int] | None = None, *,
                   check: Callable[[], None] | None = None, workers: int = 1,
                   on_view: Callable[[], None] | None = None,
                   maps: dict | None = None) -> tuple[list[ViewResult], dict]:
    """Render every view (or ``view_ids``) with a material and measure it.

    ``maps``: {parameter: (H, W, C) tensor} texture maps that replace those parameters'
    values (:mod:`pbrfit.textures`).

    ``check`` is called before each view and each chunk of its pixels, on the thread
    rendering it (it raises to cancel); ``workers`` views render at once
    (:func:`pbrfit.parallel.map_ordered`); ``on_view`` is called on the calling thread after
    each view is measured, in order (progress).

    Returns:
        (a :class:`ViewResult` per view, {split: {"views": {name: metrics}, "mean": metrics}}).
    """
    space = ParameterSpace(material_values, [])
    m = dict(space.material(space.initial_vector()), **(maps or {}))
    scene = renderer.scene
    ids = list(range(len(scene.views)) if view_ids is None else view_ids)

    def measure(vi: int) -> ViewResult:
        if check is not None:
            check()
        view = scene.views[vi]
        img = renderer.render_image(vi, m, check=check)
        pv = renderer.prepare(vi)
        geo, white = pv.geometry, renderer.white(vi)
        mask = np.zeros(geo.height * geo.width, np.float32)
        mask[geo.pixels[geo.loss_pixels]] = 1.0
        mask = mask.reshape(geo.height, geo.width)
        pred_t = torch.as_tensor(img / white)
        ref_t = torch.as_tensor(view.image / white)
        mask_t = torch.as_tensor(mask)
        vm = L.image_metrics(pred_t, ref_t, mask_t, white=1.0)
        vm["mask_iou"] = geo.mask_iou
        de_map = L.de2000_map(pred_t, ref_t, white=1.0).numpy() * mask
        return ViewResult(view.name, view.split, view.image, img, de_map, mask, white, vm, geo.mask_iou)

    views = []
    if workers > 1 and on_view is not None:
        # progress in order as views finish: measure in groups of ``workers``
        for start in range(0, len(ids), workers):
            for result in map_ordered(measure, ids[start:start + workers], workers):
                views.append(result)
                on_view()
    else:
        for result in map_ordered(measure, ids, workers):
            views.append(result)
            if on_view is not None:
                on_view()
    metrics = {}
    for v in views:
        metrics.setdefault(v.split, {"views": {}})["views"][v.name] = v.metrics
    for d in metrics.values():
        keys = ("de2000_mean", "de2000_p95", "ssim", "l1")
        d["mean"] = {k: float(np.mean([v[k] for v in d["views"].values()])) for k in keys}
    return views, metrics
