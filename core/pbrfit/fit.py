"""The fit: its public entry points, what it reports and what it returns.

:func:`fit_material` runs a :class:`pbrfit.fit_run.FitRun` (the phases), :func:`evaluate_views`
and :func:`evaluate_material` measure a material without fitting. The pieces: the objective
(:mod:`pbrfit.objective`), the stage plan and warm starts (:mod:`pbrfit.warm_start`), layer
pruning (:mod:`pbrfit.layers`), the renderers and their seeds (:mod:`pbrfit.renderers`), the
time budget (:mod:`pbrfit.time_budget`), the options (:mod:`pbrfit.options`).

The objective is the weighted sum of image losses (:mod:`pbrfit.losses`) between rendered
and reference pixels of the train views, averaged over views. Radiance is divided by each
view's *white*, the mean luminance of its environment's radiance (solid-angle weighted),
before any loss or colour difference: a white Lambertian under a uniform environment of that
radiance reads 1.0 (L* = 100). The same normalization is used for every metric and report.

Schedule: parameters are freed in stages (1 colour, 2 gloss: roughness/anisotropy/specular,
3 layers: coat/sheen/film/subsurface), each stage optimizing everything freed so far. At
the start of a stage each newly freed scalar is warm-started by a coarse 1-D search over its
range (a fine one for thin-film thickness, whose objective is periodic). Scalar fits use
L-BFGS with a strong-Wolfe line search; Adam/AdamW are available. With validation views the
fit is checked on them every few iterations; the material returned is the best seen on
validation, and the fit stops when validation has not improved ``patience`` times in a row.

Backends (``FitOptions.backend``):

* ``raster``: the staged fit above on the raster renderer (:mod:`pbrfit.render`): direct
  light only, deterministic objective, L-BFGS.
* ``auto`` (default): the raster fit as a warm start, then a path-traced refinement
  (:mod:`pbrfit.pathtrace`) of every parameter still on, with Adam on path-replay
  gradients (fresh, decorrelated paths every iteration) of ``path_loss`` (relative L2:
  quadratic, so unbiased under Monte Carlo noise; ΔE2000 and L1 of noisy renders favour
  rougher, less noisy materials). Paths per pixel start at ``path_spp`` and double each
  time validation ΔE2000 (path traced, fixed paths) stops improving, up to
  ``path_max_spp``; the refinement ends there, at its iteration budget or at the time
  budget, and keeps the best material seen on validation (the raster result if the
  refinement never beats it). Before Adam, local steps on the checks' fixed paths: the base
  colour (matched in ΔE2000 through a secant model) and the base roughness (a few multiples
  of it), each kept only when the check improves; after Adam, the colour step again
  (``FitRun.path_refinement``). With subsurface among the fitted parameters (the default's), it is
  first switched on or off by a trial on block means (the raster fit cannot see it) and,
  when on, the checks use an unbiased relative error (two independent renders) instead of
  ΔE2000, which would penalize the walks' noise.
* ``path``: only the path-traced refinement, from the job's initial material (to polish a
  material fitted before, or one set by hand).

The objective, losses and optimizers are the same code for both renderers.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable

import torch

from .errors import FitCancelled
from .fit_run import PHASES, FitResult, FitRun, Progress
from .measure import ViewResult, evaluate_views
from .options import DEFAULT_LOSS, FitOptions
from .params import normalize_material
from .renderers import Renderers
from .scene import FitScene
from .scene_renderer import flush_subnormals

__all__ = ["FitOptions", "Progress", "ViewResult", "FitResult", "fit_material", "evaluate_views",
           "evaluate_material", "compute_settings", "DEFAULT_LOSS", "PHASES"]


def fit_material(scene: FitScene, options: FitOptions | None = None, *,
                 progress: Callable[[Progress], None] | None = None,
                 cancel: threading.Event | None = None) -> FitResult:
    """Fit the material of ``scene.mesh`` to the train views of ``scene``.

    Args:
        scene: mesh, views (train and validate) and the initial material.
        options: see :class:`pbrfit.options.FitOptions`.
        progress: called with a :class:`Progress` after every objective evaluation and at
            every phase change.
        cancel: when set, the fit raises :class:`FitCancelled` at its next check (between
            evaluations, views and stages).

    Raises:
        InputError: no train views, or bad options.
        FitCancelled: ``cancel`` was set.
    """
    options = options or FitOptions()
    with compute_settings(options.threads):
        return FitRun(scene, options, progress, cancel).run()


@contextlib.contextmanager
def compute_settings(threads: int):
    """One torch thread per view thread (``threads`` views render at once:
    :mod:`pbrfit.parallel`) and subnormal flushing for the forward and backward passes (see
    :func:`pbrfit.scene_renderer.flush_subnormals`), restored after."""
    del threads  # used by the objectives and the metrics, not by torch's own pool
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with flush_subnormals():
            yield
    finally:
        torch.set_num_threads(previous_threads)


def evaluate_material(scene: FitScene, material: dict, options: FitOptions | None = None, *,
                      cancel: threading.Event | None = None, maps: dict | None = None):
    """Render and measure ``material`` on every view of ``scene`` (no fitting), with the
    final metrics' renderer (:meth:`pbrfit.renderers.Renderers.metrics`). ``maps``: texture
    maps ({parameter: (H, W, C) tensor}) that replace those parameters.

    Raises:
        FitCancelled: ``cancel`` was set (checked between views).
    """
    options = options or FitOptions()

    def check():
        if cancel is not None and cancel.is_set():
            raise FitCancelled("cancelled; nothing was written")

    with compute_settings(options.threads):
        material = normalize_material(material)
        return evaluate_views(Renderers(scene, options).metrics(material=material), material, check=check,
                              workers=options.threads, maps=maps)
