"""The fit's objective: weighted image losses between rendered and reference pixels.

An :class:`Objective` measures a material on a set of views through one renderer, on each
view's loss pixels (the renderer's ``train_subsets``). Radiance is divided by the view's
*white* (the mean luminance of its environment's radiance, solid-angle weighted) before any
loss or colour difference, so a white Lambertian under a uniform environment of that
radiance reads 1.0 (L* = 100); every metric and report uses the same normalization.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from . import losses as L
from .parallel import map_ordered
from .scene_renderer import pixel_blocks

__all__ = ["Objective", "unbiased_relative_error", "unbiased_relative_errors", "unbiased_error_terms",
           "view_terms", "paired_margin"]


class Objective:
    """Mean over views of ``sum(weight * loss(render / white, reference / white))``.

    Args:
        renderer: a raster or path renderer (``prepare``, ``shade``, ``train_subsets``).
        view_ids: the views measured.
        loss: {loss name: weight} (:data:`pbrfit.losses.LOSSES`); SSIM, an image metric,
            is left out of a per-pixel objective (the others are
            :data:`pbrfit.losses.PIXEL_LOSSES`).
        check: called before each view is prepared (ray casting it takes a while) and
            rendered: it raises to cancel.
        workers: views rendered at once (:mod:`pbrfit.parallel`); the result does not
            depend on it.
        chunk: :meth:`loss_and_grad` renders at most this many pixels of a view at once and
            sums their gradients (every loss is a per-pixel mean, so the result is the same
            up to rounding): the autograd graph of a whole view's pixels can take GBs.

    Attributes:
        refs: per view, the reference's loss pixels already divided by the white.
        whites: per view, the white (linear radiance).
    """

    def __init__(self, renderer, view_ids: list[int], loss: dict, check: Callable[[], None] | None = None,
                 workers: int = 1, chunk: int | None = None):
        self.renderer, self.view_ids, self.check, self.workers = renderer, view_ids, check, workers
        self.chunk = chunk
        self.loss = {name: w for name, w in loss.items() if name != "ssim"}
        self.refs, self.whites = {}, {}
        for vi, ref in zip(view_ids, map_ordered(self._prepare, view_ids, workers)):
            self.refs[vi], self.whites[vi] = ref

    def _prepare(self, vi: int) -> tuple[torch.Tensor, float]:
        if self.check is not None:
            self.check()
        pv = self.renderer.prepare(vi)
        q = self.renderer.train_subsets[vi]
        img = self.renderer.scene.views[vi].image.reshape(-1, 3)
        white = self.renderer.white(vi)
        return torch.as_tensor(img[pv.geometry.pixels[q]] / white, dtype=torch.float32,
                               device=self.renderer.device), white

    def _view_loss(self, vi: int, material: dict, rows: slice = slice(None), calibration=None
                   ) -> tuple[torch.Tensor, float]:
        """(this view's weighted loss, its mean ΔE2000), over its loss pixels ``rows``;
        ``calibration`` (a :class:`pbrfit.calibration.ViewCalibration`, raster renderers only)
        renders the view with the capture's corrections."""
        pred, ref = self._prediction(vi, material, rows, calibration)
        terms = {name: L.loss_map(name, pred, ref).mean() for name in self.loss}
        if "de2000" in terms:
            de = terms["de2000"].detach()
        else:
            with torch.no_grad():
                de = L.de2000(pred, ref)
        return sum(w * terms[name] for name, w in self.loss.items()), float(de)

    def pixel_losses(self, vi: int, material: dict, rows=slice(None)) -> torch.Tensor:
        """(N,) the weighted loss of each of view ``vi``'s loss pixels ``rows`` (indices into
        them; all by default, whose mean is the view's loss), no gradient: for searches that
        decide per texel or region."""
        with torch.no_grad():
            pred, ref = self._prediction(vi, material, rows)
            return sum(w * L.loss_map(name, pred, ref) for name, w in self.loss.items())

    def _prediction(self, vi: int, material: dict, rows=slice(None), calibration=None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(render, reference) of view ``vi``'s loss pixels ``rows``, both divided by the white,
        after the cancel check."""
        if self.check is not None:
            self.check()
        q = self.renderer.train_subsets[vi][rows]
        pred = (self.renderer.shade(vi, material, q) if calibration is None
                else self.renderer.shade(vi, material, q, calibration=calibration)) / self.whites[vi]
        return pred, self.refs[vi][rows]

    def renders(self, material: dict, renderer=None) -> list[torch.Tensor]:
        """Per view (in the order of :attr:`view_ids`), the render of its loss pixels (linear
        radiance, not divided by the white), without gradients, the views on the objective's
        ``workers`` threads; by ``renderer`` (one on the same views: it renders the objective's
        loss pixels) instead of the objective's own when given. The renders are the same for any number of workers."""
        r = self.renderer if renderer is None else renderer

        def one(vi: int) -> torch.Tensor:
            if self.check is not None:
                self.check()
            with torch.no_grad():  # grad mode is per thread: set here, not by the caller
                return r.shade(vi, material, self.renderer.train_subsets[vi])

        return map_ordered(one, self.view_ids, self.workers)

    def __call__(self, material: dict) -> tuple[torch.Tensor, float]:
        """(the loss, differentiable; the mean ΔE2000 of the views, a float). With gradients
        enabled the views render one after another (one autograd graph): for a gradient on
        several threads use :meth:`loss_and_grad`."""
        workers = self.workers if not torch.is_grad_enabled() else 1
        per_view = map_ordered(lambda vi: self._view_loss(vi, material), self.view_ids, workers)
        n = max(len(self.view_ids), 1)
        total = 0.0
        for loss, _ in per_view:
            total = total + loss
        return total / n, sum(de for _, de in per_view) / n

    def loss_and_grad(self, material_of: Callable[[torch.Tensor], dict], u: torch.Tensor, stride: int = 1,
                      phase: int = 0) -> tuple[float, float, torch.Tensor]:
        """(the loss, the mean ΔE2000, d loss / d u) for the material ``material_of(u)``, each
        view's value and gradient on its own thread, summed in the order of the views. With
        ``stride`` > 1, over every ``stride``-th loss pixel of each view from ``phase`` (in
        the views' pixel order, row by row): ``stride`` calls with the phases in turn cover
        every pixel once."""
        def one(vi: int):
            leaf = u.detach().clone().requires_grad_(True)
            picked = np.arange(phase % stride, len(self.renderer.train_subsets[vi]), stride) if stride > 1 else None
            n = len(self.renderer.train_subsets[vi]) if picked is None else len(picked)

            def pixels(rows: slice):  # rows of the picked pixels -> rows of the view's loss pixels
                return rows if picked is None else picked[rows]

            if n == 0:  # a phase beyond a view's few loss pixels
                return 0.0, 0.0, torch.zeros_like(u)

            if not self.chunk or n <= self.chunk:
                with torch.enable_grad():
                    loss, de = self._view_loss(vi, material_of(leaf), pixels(slice(None)))
                    grad = torch.autograd.grad(loss, leaf, allow_unused=True)[0] if loss.requires_grad else None
                return float(loss.detach()), de, torch.zeros_like(u) if grad is None else grad
            # in chunks of pixels: the material once, its gradient summed over the chunks, then
            # carried back to u once (a texture map's texels cost per step, not per chunk)
            with torch.enable_grad():
                material = material_of(leaf)
            live = [k for k, v in material.items() if isinstance(v, torch.Tensor) and v.requires_grad]
            cut = {k: (v.detach().requires_grad_(True) if k in live else v) for k, v in material.items()}
            sums = {k: torch.zeros_like(material[k]) for k in live}
            loss_sum, de_sum = 0.0, 0.0
            for start in range(0, n, self.chunk):
                rows = slice(start, min(start + self.chunk, n))
                share = (rows.stop - rows.start) / n
                with torch.enable_grad():
                    loss, de = self._view_loss(vi, cut, pixels(rows))
                    if loss.requires_grad and live:
                        grads = torch.autograd.grad(loss * share, [cut[k] for k in live], allow_unused=True)
                        for k, g in zip(live, grads):
                            if g is not None:
                                sums[k] = sums[k] + g
                loss_sum += share * float(loss.detach())
                de_sum += share * de
            if not live:
                return loss_sum, de_sum, torch.zeros_like(u)
            with torch.enable_grad():
                grad = torch.autograd.grad([material[k] for k in live], leaf, grad_outputs=[sums[k] for k in live],
                                           allow_unused=True)[0]
            return loss_sum, de_sum, torch.zeros_like(u) if grad is None else grad

        per_view = map_ordered(one, self.view_ids, self.workers)
        n = max(len(self.view_ids), 1)
        grad = torch.zeros_like(u)
        for _, _, g in per_view:
            grad = grad + g
        return sum(v[0] for v in per_view) / n, sum(v[1] for v in per_view) / n, grad / n

    def joint_loss_and_grad(self, material_of: Callable[[torch.Tensor], dict], u: torch.Tensor,
                            terms_of: Callable[[torch.Tensor, int], object], delta: torch.Tensor
                            ) -> tuple[float, float, torch.Tensor, torch.Tensor]:
        """(the loss, the mean ΔE2000, d loss / d u, d loss / d delta): the material
        ``material_of(u)`` rendered with the calibration ``terms_of(delta, view)``, both
        differentiated (the joint material and capture step), each view on its own thread."""
        def one(vi: int):
            lu, ld = u.detach().clone().requires_grad_(True), delta.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                loss, de = self._view_loss(vi, material_of(lu), calibration=terms_of(ld, vi))
                gu, gd = torch.autograd.grad(loss, [lu, ld], allow_unused=True) if loss.requires_grad else (None, None)
            return (float(loss.detach()), de, torch.zeros_like(u) if gu is None else gu,
                    torch.zeros_like(delta) if gd is None else gd)

        per_view = map_ordered(one, self.view_ids, self.workers)
        n = max(len(self.view_ids), 1)
        gu, gd = torch.zeros_like(u), torch.zeros_like(delta)
        for _, _, a, b in per_view:
            gu, gd = gu + a, gd + b
        return sum(v[0] for v in per_view) / n, sum(v[1] for v in per_view) / n, gu / n, gd / n

    def calibrated_loss(self, material: dict, terms_of: Callable[[torch.Tensor, int], object], delta: torch.Tensor,
                        grad: bool = True, views: list[int] | None = None) -> tuple[float, float, torch.Tensor | None]:
        """(the loss, the mean ΔE2000, d loss / d delta or None) of a fixed ``material`` rendered
        with the calibration ``terms_of(delta, view)`` (:meth:`pbrfit.calibration.Calibration.
        view_terms`) over ``views`` (default all), each view on its own thread."""
        views = self.view_ids if views is None else views

        def one(vi: int):
            leaf = delta.detach().clone().requires_grad_(grad)
            with torch.set_grad_enabled(grad):
                loss, de = self._view_loss(vi, material, calibration=terms_of(leaf, vi))
                g = torch.autograd.grad(loss, leaf, allow_unused=True)[0] if grad and loss.requires_grad else None
            return float(loss.detach()), de, torch.zeros_like(delta) if g is None else g

        per_view = map_ordered(one, views, self.workers)
        n = max(len(views), 1)
        total = torch.zeros_like(delta)
        for _, _, g in per_view:
            total = total + g
        return (sum(v[0] for v in per_view) / n, sum(v[1] for v in per_view) / n, total / n if grad else None)


def unbiased_relative_error(objective: Objective, material: dict, eps: float = 0.05, twin=None) -> float:
    """An unbiased estimate of the relative squared error ``(E[render] - ref)**2 / (ref**2 +
    eps**2)`` of ``objective``'s renderer on its loss pixels, the mean over its views of
    :func:`unbiased_relative_errors`: the product of two independent renders' errors (their
    noise has zero mean and does not correlate), so a noisier material is not penalized for its
    noise, nor a less noisy one favoured (the raster estimator samples a coat's lobe on top of
    the base's: a false coat over a rough base renders a glossy plastic's highlight with less
    noise, and read 10% better than the truth in its own loss)."""
    return unbiased_error_terms(objective, material, eps, twin)[0]


def unbiased_error_terms(objective: Objective, material: dict, eps: float = 0.05, twin=None
                         ) -> tuple[float, torch.Tensor]:
    """``(`` :func:`unbiased_relative_error` ``, its terms)``: :func:`view_terms` of
    :func:`unbiased_relative_errors`."""
    return view_terms(unbiased_relative_errors(objective, material, eps, twin))


def view_terms(per_view: list[torch.Tensor]) -> tuple[float, torch.Tensor]:
    """``(the mean over views of each view's mean, every view's terms with their channels
    averaged in one (T,) tensor)`` of per-view (N, C) terms (:func:`unbiased_relative_errors`),
    the terms paired with another material's on the same renderer (:func:`paired_margin`)."""
    value = sum(float(e.mean()) for e in per_view) / max(len(per_view), 1)
    return value, torch.cat([e.mean(1) for e in per_view]) if per_view else torch.zeros(0)


def unbiased_relative_errors(objective: Objective, material: dict, eps: float = 0.05, twin=None
                             ) -> list[torch.Tensor]:
    """Per view, the (N, 3) terms of :func:`unbiased_relative_error`: one per loss pixel, or,
    with a renderer whose loss pixels are whole blocks (``renderer.block`` > 1,
    :class:`pbrfit.scene_renderer.SceneRenderer`), one per block, the error of the block's mean
    radiance: the references' own noise, which adds the same amount to every material's error
    and so hides what a smooth change of the shading buys, shrinks with the number of pixels
    averaged (a 4x4 block: 16x). Each term is unbiased but noisy; their spread tells how sure
    a comparison of two materials on the same pixels is.

    Args:
        twin: a renderer on the same loss pixels with independent samples
            (:meth:`pbrfit.renderers.Renderers.raster_twin`); without it the renderer must be a
            path renderer, whose first two iterations' paths (fixed) are used.
    """
    r = objective.renderer
    block = getattr(r, "block", 1)
    saved = getattr(r, "iteration", None)
    out = []
    try:
        # the two renders of every view, each pass's views on the objective's threads (the
        # renderer's iteration, which fixes a path renderer's paths, set between the passes)
        if twin is None:
            r.iteration = 0
        first = objective.renders(material)
        if twin is None:
            r.iteration = 1
        second = objective.renders(material, twin)
        with torch.no_grad():
            for vi, a, b in zip(objective.view_ids, first, second):
                q = r.train_subsets[vi]
                ref = objective.refs[vi]
                a = a / objective.whites[vi]
                b = b.to(a.device) / objective.whites[vi]
                if block > 1:
                    mean = _block_means(r.prepare(vi).geometry, q, block)
                    a, b, ref = mean(a), mean(b), mean(ref)
                out.append((a - ref) * (b - ref) / (ref * ref + eps * eps))
    finally:
        if twin is None:
            r.iteration = saved
    return out


def paired_margin(before: torch.Tensor, after: torch.Tensor) -> float:
    """How many standard errors ``after``'s mean lies below ``before``'s, for terms of the same
    pixels or blocks (:func:`unbiased_relative_errors` of two materials on the same renderer:
    paired, so what the pixels share, their references' noise and which pixels were drawn,
    cancels); +-inf where every difference is the same non-zero amount, 0 where there is none."""
    d = (before - after).double().flatten()
    if len(d) < 2:
        return 0.0
    se = float(d.std()) / math.sqrt(len(d))
    if se > 0:
        return float(d.mean()) / se
    return math.copysign(math.inf, float(d.mean())) if float(d.mean()) != 0 else 0.0


def _block_means(geo, rows, block: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function taking ``values`` (one row per covered pixel ``rows`` of ``geo``) to their
    (B, C) means over the ``block`` x ``block`` image blocks the pixels fall in
    (:func:`pbrfit.scene_renderer.pixel_blocks`); the grouping is found once."""
    _, inverse, counts = np.unique(pixel_blocks(geo, rows, block), return_inverse=True, return_counts=True)

    def mean(values: torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(inverse, device=values.device)
        sums = torch.zeros(len(counts), values.shape[1], dtype=values.dtype, device=values.device)
        return sums.index_add_(0, index, values) / torch.as_tensor(counts, dtype=values.dtype,
                                                                   device=values.device)[:, None]

    return mean
