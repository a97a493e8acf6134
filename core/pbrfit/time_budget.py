"""A run's time budget: one deadline for setup, the fit, the final metrics and writing.

``time_budget`` counts from the run's start (the CLI's, before it reads the job). After
setup, the cost of full-quality final metrics is estimated (path: a timed render of 128
pixels; raster: from the time preparing the views took); the fit must end early enough to
leave that (at most :data:`METRICS_SHARE` of the budget) plus :data:`WRITE_SHARE` for
writing. The final metrics then get what is left: fewer paths per pixel (at least
:data:`MIN_METRICS_SPP`), or, for raster, the fit's own renderer. Setup and one quick
metrics pass are a floor no budget can go below; when the run overshoots, or the budget
ended the fit before it changed anything, :meth:`TimeBudget.notes` says so. Within the fit,
the structure search leaves a path-traced refinement :data:`STRUCTURE_SHARE` of the time
left (:meth:`TimeBudget.phase_deadline`).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch

from .params import ParameterSpace, normalize_material
from .pathtrace import PathSettings

__all__ = ["TimeBudget", "METRICS_SHARE", "WRITE_SHARE", "MIN_METRICS_SPP", "STRUCTURE_SHARE"]

#: the share of the budget the final metrics may take at most, and the share left for writing
METRICS_SHARE, WRITE_SHARE = 0.25, 0.05
#: fewest paths per pixel of final metrics cut down to fit a time budget
MIN_METRICS_SPP = 8
#: with a path-traced refinement to follow, the structure search (the layers stage, pruning) may
#: take at most this share of what is left of the fit's time when it starts; the refinement gets
#: the rest. Budgets that the structure search used whole (30-120 s on Suzanne) returned the gloss
#: stage's material, 1.27 ΔE2000 where the refinement reaches Cycles' floor, 0.77 (BENCHMARKS.md,
#: session 47); the base's stages before it are not cut short for it (cut at 30 s: 1.73 for 1.63)
STRUCTURE_SHARE = 0.5


class TimeBudget:
    """The deadlines of one run.

    Args:
        t0: the run's start (``clock()`` units).
        seconds: the budget, or None for no limit (then nothing is ever over).
        renderers: the run's :class:`pbrfit.renderers.Renderers`.
        clock: the time source (``time.monotonic``; tests pass their own).
    """

    def __init__(self, t0: float, seconds: float | None, renderers, clock: Callable[[], float] = time.monotonic):
        self.t0, self.seconds, self.renderers, self.clock = t0, seconds, renderers, clock
        self.setup_s = 0.0
        self.estimate = 0.0
        self.fit_deadline = math.inf
        self.fit_end: float | None = None
        self.degraded = ""
        self._probe = None
        self._views = 0
        self._prepare_start = t0

    def prepare_started(self) -> None:
        """The views are about to be prepared (ray cast) for the fit."""
        self._prepare_start = self.clock()

    def setup_done(self, fit_renderer, check: Callable[[], None]) -> None:
        """Setup ended: estimate the final metrics' cost and set the fit's deadline."""
        now = self.clock()
        scene, options = self.renderers.scene, self.renderers.options
        self.setup_s = now - self.t0
        self._views = len(scene.views)
        if self.seconds is None:
            return
        if options.backend == "raster":
            # a fresh renderer with twice the samples prepares every view again, for every
            # covered pixel where the fit prepared only its loss pixels, then renders
            self.estimate = 3.0 * (now - self._prepare_start) / fit_renderer.prepared_share()
        else:
            check()
            pixels = {vi: len(fit_renderer.prepare(vi).geometry.pixels) for vi in range(len(scene.views))}
            probe = self.renderers.metrics()
            vi = max(pixels, key=pixels.get)
            sel = np.arange(min(128, pixels[vi]))
            m0 = ParameterSpace(normalize_material(scene.initial_material or {}), [])
            started = self.clock()
            with torch.no_grad():
                probe.shade(vi, m0.material(m0.initial_vector()), sel)
            self.estimate = (self.clock() - started) / len(sel) * sum(pixels.values())
            self._probe = probe
        reserve = min(METRICS_SHARE * self.seconds, 1.2 * self.estimate) + WRITE_SHARE * self.seconds
        self.fit_deadline = self.t0 + self.seconds - reserve

    def rebind(self, renderers) -> None:
        """The run rebuilt its renderers on a changed scene (a calibrated capture): the final
        metrics' probe renderer is made again from them, with the same settings."""
        self.renderers = renderers
        if self._probe is not None:
            settings = self._probe.settings
            self._probe = renderers.metrics()
            self._probe.settings = settings

    def phase_deadline(self, share: float) -> float:
        """A deadline ``share`` of the way from now to the fit's deadline (inf with no budget)."""
        now = self.clock()
        return now + share * max(self.fit_deadline - now, 0.0) if self.seconds is not None else math.inf

    def fit_over(self) -> bool:
        """The fit must stop now to leave the final metrics and writing their share."""
        return self.clock() > self.fit_deadline

    def fit_ended(self) -> None:
        self.fit_end = self.clock()

    def metrics_renderer(self, fit_renderer, material: dict | None = None):
        """The final metrics' renderer of ``material`` (:meth:`pbrfit.renderers.Renderers.
        metrics`) within what is left of the budget."""
        options = self.renderers.options
        if self.seconds is None:
            return self.renderers.metrics(material=material)
        if self._probe is not None and material is not None:
            # the probe was made for the initial material: fewer paths where the result walks
            full = self.renderers.metrics_spp(material)
            if full < self._probe.settings.spp:
                self._probe.settings = PathSettings(full, options.path_depth)
        left = self.t0 + (1 - WRITE_SHARE) * self.seconds - self.clock()
        if left >= self.estimate:
            return self._probe or self.renderers.metrics(material=material)
        if options.backend == "raster":
            self.degraded = ("the final metrics reuse the fit's own samples (not twice as many, with other "
                             "seeds) to stay within the time budget")
            return fit_renderer
        full = self.renderers.metrics_spp(material)
        spp = max(MIN_METRICS_SPP, int(full * max(left, 0.0) / max(self.estimate, 1e-9)))
        if spp >= full:
            return self._probe
        self.degraded = (f"the final metrics use {spp} paths per pixel instead of {full} to stay within the "
                         "time budget: their ΔE2000 reads high from noise (the fewer the paths, the higher: "
                         "several units at 8); `pbrfit validate JOB --material material.json` measures the "
                         "written material at full quality")
        self._probe.settings = PathSettings(spp, options.path_depth)
        return self._probe

    def notes(self, stopped: str, *, changed: bool) -> list[dict]:
        """What the user should know about the budget: ``{severity, about, message}``."""
        if self.seconds is None:
            return []
        out = []
        now = self.clock()
        if stopped == "time budget" and not changed:
            out.append({"severity": "warning", "about": "time budget",
                        "message": f"the time budget ({self.seconds:g} s) ended the fit before it changed the "
                                   "starting material: the material written is the initial one; give a longer "
                                   "--time-budget"})
        if self.degraded:
            out.append({"severity": "note", "about": "time budget", "message": self.degraded})
        if now - self.t0 > self.seconds:
            parts = [f"setup (reading the inputs, preparing {self._views} views) took {self.setup_s:.1f} s"]
            if self.fit_end is not None:
                parts.append(f"the final metrics {now - self.fit_end:.1f} s")
            out.append({"severity": "warning", "about": "time budget",
                        "message": f"the run took {now - self.t0:.1f} s, more than its time budget of "
                                   f"{self.seconds:g} s: {', '.join(parts)}; a budget below that cannot be met "
                                   "for this job on this machine"})
        return out
