"""The fit's objective: weighted image losses between rendered and reference pixels.

An :class:`Objective` measures a material on a set of views through one renderer, on each
view's loss pixels (the renderer's ``train_subsets``). Radiance is divided by the view's
*white* (the mean luminance of its environment's radiance, solid-angle weighted) before any
loss or colour difference, so a white Lambertian under a uniform environment of that
radiance reads 1.0 (L* = 100); every metric and report uses the same normalization.
"""

from __future__ import annotations

from typing import Callable

import torch

from . import losses as L

__all__ = ["Objective", "unbiased_relative_error"]


class Objective:
    """Mean over views of ``sum(weight * loss(render / white, reference / white))``.

    Args:
        renderer: a raster or path renderer (``prepare``, ``shade``, ``train_subsets``).
        view_ids: the views measured.
        loss: {loss name: weight} (:data:`pbrfit.losses.LOSSES`); SSIM, an image metric,
            is left out of a per-pixel objective.
        check: called before each view is prepared (ray casting it takes a while): it
            raises to cancel.

    Attributes:
        refs: per view, the reference's loss pixels already divided by the white.
        whites: per view, the white (linear radiance).
    """

    def __init__(self, renderer, view_ids: list[int], loss: dict, check: Callable[[], None] | None = None):
        self.renderer, self.view_ids = renderer, view_ids
        self.loss = {name: w for name, w in loss.items() if name != "ssim"}
        self.refs, self.whites = {}, {}
        for vi in view_ids:
            if check is not None:
                check()
            pv = renderer.prepare(vi)
            q = renderer.train_subsets[vi]
            img = renderer.scene.views[vi].image.reshape(-1, 3)
            self.whites[vi] = pv.env.mean_luminance
            self.refs[vi] = torch.as_tensor(img[pv.geometry.pixels[q]] / self.whites[vi], dtype=torch.float32)

    def __call__(self, material: dict) -> tuple[torch.Tensor, float]:
        """(the loss, differentiable; the mean ΔE2000 of the views, a float)."""
        total = 0.0
        de_sum = 0.0
        for vi in self.view_ids:
            pred = self.renderer.shade(vi, material, self.renderer.train_subsets[vi]) / self.whites[vi]
            terms = {name: L.LOSSES[name](pred, self.refs[vi]) for name in self.loss}
            if "de2000" in terms:
                de = terms["de2000"].detach()
            else:
                with torch.no_grad():
                    de = L.de2000(pred, self.refs[vi])
            total = total + sum(w * terms[name] for name, w in self.loss.items())
            de_sum += float(de)
        n = max(len(self.view_ids), 1)
        return total / n, de_sum / n


def unbiased_relative_error(objective: Objective, material: dict, eps: float = 0.05) -> float:
    """An unbiased estimate of the relative squared error ``(E[render] - ref)**2 / (ref**2 +
    eps**2)`` of a path-traced objective: the product of two independent renders' errors
    (their noise has zero mean and does not correlate), so a noisier material is not
    penalized for its noise. Uses the renderer's first two iterations' paths (fixed)."""
    r = objective.renderer
    saved = r.iteration
    total = 0.0
    try:
        with torch.no_grad():
            for vi in objective.view_ids:
                q = r.train_subsets[vi]
                ref = objective.refs[vi]
                r.iteration = 0
                a = r.shade(vi, material, q) / objective.whites[vi]
                r.iteration = 1
                b = r.shade(vi, material, q) / objective.whites[vi]
                total += float(((a - ref) * (b - ref) / (ref * ref + eps * eps)).mean())
    finally:
        r.iteration = saved
    return total / max(len(objective.view_ids), 1)
