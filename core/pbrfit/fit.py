"""The fit: objective, staged schedule, optimizer, early stopping, metrics.

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
  refinement never beats it). With subsurface among the fitted parameters, its weight is
  first chosen from {0, 0.5, 1} (the raster fit cannot see it) and the checks use an
  unbiased relative error (two independent renders) instead of ΔE2000, which would
  penalize the walks' noise.
* ``path``: only the path-traced refinement, from the job's initial material (to polish a
  material fitted before, or one set by hand).

The objective, losses and optimizers are the same code for both renderers.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import losses as L
from .errors import FitCancelled, InputError
from .params import DEFAULT_FIT, PARAMETERS, STAGES, ParameterSpace, normalize_material
from .pathtrace import PathRenderer, PathSettings
from .render import RasterRenderer, SampleCounts
from .scene import FitScene
from .scene_renderer import flush_subnormals

__all__ = ["FitOptions", "Progress", "FitResult", "fit_material", "evaluate_material", "DEFAULT_LOSS"]

#: default objective: perceptual colour difference plus an L1 term on white-normalized
#: radiance that keeps gradients informative far from the optimum.
DEFAULT_LOSS = {"de2000": 1.0, "l1": 10.0}

# fine 1-D search grid for parameters whose objective has many local minima
_FINE_GRID = {"thin_film_thickness": 31, "anisotropic_rotation": 9}
_COARSE_GRID = 5


@dataclass
class FitOptions:
    """How to fit.

    Attributes:
        parameters: canonical names to optimize (others stay at the initial material).
        bounds: optional per-parameter (lower, upper) overrides.
        iterations: optimizer iterations in all (objective+gradient evaluations for L-BFGS).
        time_budget: wall-clock seconds for the whole run (from ``budget_start``): the fit
            stops early enough for the final metrics to fit too (see :class:`_Budget`), or None.
        seed: seeds every random number (sample directions, pixel subsets).
        loss: {loss name: weight}; names from :data:`pbrfit.losses.LOSSES`.
        samples: samples per pixel per strategy.
        optimizer: "lbfgs", "adam" or "adamw".
        learning_rate: for Adam/AdamW (in the unconstrained space).
        staged: free parameters in stages (else all at once).
        max_loss_pixels: pixels per view in the training loss. Fewer pixels with more
            samples each beat the reverse: ΔE2000 of a noisy pixel is biased upward.
        patience: validation checks without improvement before stopping.
        check_every: iterations between validation checks.
        threads: torch CPU threads for shading. Default 1: on a busy machine (a host
            application, a render running beside the fit) torch's OpenMP threads spin
            against other processes and a 2-thread fit was measured 8x slower than a
            1-thread one; raise it on an idle many-core machine.
        backend: "auto", "raster" or "path" (see the module docstring).
        device: "cpu" or "cuda" (ray casting; shading runs in torch on CPU).
        path_iterations: iterations of the path-traced refinement (auto and path).
        path_spp: paths per pixel at the start of the refinement; path_max_spp: the most
            it rises to.
        path_depth: surface vertices per path.
        path_learning_rate: Adam's step in the unconstrained space for the refinement.
        path_loss: the refinement's objective. Default relative L2, whose gradient stays
            unbiased under Monte Carlo noise (see :func:`pbrfit.losses.relative_l2`); the
            validation checks that steer it are ΔE2000.
        budget_start: ``time.monotonic()`` when the run began (the CLI sets it before
            reading the job), so that ``time_budget`` bounds setup, fit and final metrics
            together; None: when :func:`fit_material` is called.
    """

    parameters: list[str] = field(default_factory=lambda: list(DEFAULT_FIT))
    bounds: dict = field(default_factory=dict)
    iterations: int = 60
    time_budget: float | None = None
    seed: int = 0
    loss: dict = field(default_factory=lambda: dict(DEFAULT_LOSS))
    samples: SampleCounts = field(default_factory=lambda: SampleCounts(64, 16, 32, 16))
    optimizer: str = "lbfgs"
    learning_rate: float = 0.05
    staged: bool = True
    max_loss_pixels: int = 1024
    patience: int = 3
    check_every: int = 5
    threads: int = 1
    backend: str = "auto"
    device: str = "cpu"
    path_iterations: int = 40
    path_spp: int = 4
    path_max_spp: int = 32
    path_depth: int = 4
    path_learning_rate: float = 0.02
    path_loss: dict = field(default_factory=lambda: {"relative_l2": 1.0})
    budget_start: float | None = None

    def validate(self) -> None:
        """Check every field (:func:`pbrfit.options.validate_fit_options`, the rules every
        route shares). Raises InputError naming the field."""
        from .options import validate_fit_options

        validate_fit_options(self)


@dataclass
class Progress:
    """One objective evaluation, reported to the caller's callback."""

    iteration: int
    total: int
    stage: str
    loss: float
    train_de2000: float
    validate_de2000: float | None
    elapsed: float


@dataclass
class FitResult:
    """What a fit produced.

    Attributes:
        material: final values under canonical names.
        initial: the starting values.
        fitted: names that were optimized.
        metrics: {split: {"views": {view name: metrics}, "mean": metrics}} where metrics has
            de2000_mean, de2000_p95, ssim, l1 (see :func:`pbrfit.losses.image_metrics`).
        history: list of {iteration, stage, loss, train_de2000, validate_de2000, time}.
        schedule: list of {stage, parameters, iterations} actually run.
        views: per view {name, split, reference, fit, de_map, mask, white, mask_iou}.
        stopped: why the fit stopped ("converged", "iterations", "time budget", "early stopping").
        wall_time: seconds (from ``FitOptions.budget_start`` when given).
        notes: what the user should know about the run, ``{severity, about, message}``
            (e.g. the time budget ended the fit before it improved on the start).
    """

    material: dict
    initial: dict
    fitted: list
    metrics: dict
    history: list
    schedule: list
    views: list
    stopped: str
    wall_time: float
    notes: list = field(default_factory=list)


class _Objective:
    """Loss over a set of views for a parameter space.

    ``refs`` holds each view's loss pixels already divided by the view's white, the space
    every loss and the reported ΔE2000 work in.
    """

    def __init__(self, renderer: RasterRenderer, view_ids: list[int], loss: dict, check: Callable | None = None):
        self.renderer, self.view_ids = renderer, view_ids
        # SSIM needs an image, not a pixel subset: it is a metric, not part of the objective
        self.loss = {name: w for name, w in loss.items() if name != "ssim"}
        self.refs, self.whites = {}, {}
        for vi in view_ids:
            if check is not None:
                check()  # preparing a view ray casts it: a cancel is seen between views
            pv = renderer.prepare(vi)
            q = renderer.train_subsets[vi]
            img = renderer.scene.views[vi].image.reshape(-1, 3)
            self.whites[vi] = pv.env.mean_luminance
            self.refs[vi] = torch.as_tensor(img[pv.geometry.pixels[q]] / self.whites[vi], dtype=torch.float32)

    def __call__(self, material: dict) -> tuple[torch.Tensor, float]:
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


def _unbiased_relative_error(objective: _Objective, material: dict, eps: float = 0.05) -> float:
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


def _stage_plan(fit: list[str], staged: bool, iterations: int) -> list[tuple[str, list[str], int]]:
    if not staged:
        return [("all", list(fit), iterations)]
    shares = {1: 0.25, 2: 0.35, 3: 0.40}
    stages = []
    for s in (1, 2, 3):
        names = [n for n in fit if PARAMETERS[n].stage <= s]
        if names and any(PARAMETERS[n].stage == s for n in fit):
            stages.append((STAGES[s], names, shares[s]))
    total_share = sum(sh for _, _, sh in stages) or 1.0
    return [(name, names, max(1, round(iterations * sh / total_share))) for name, names, sh in stages]


def fit_material(scene: FitScene, options: FitOptions | None = None, *,
                 progress: Callable[[Progress], None] | None = None,
                 cancel: threading.Event | None = None) -> FitResult:
    """Fit the material of ``scene.mesh`` to the train views of ``scene``.

    Args:
        scene: mesh, views (train and validate) and the initial material.
        options: see :class:`FitOptions`.
        progress: called after every objective evaluation.
        cancel: when set, the fit raises :class:`FitCancelled` at the next evaluation.

    Raises:
        InputError: no train views, or bad options.
        FitCancelled: ``cancel`` was set.
    """
    options = options or FitOptions()
    with _compute_settings(options.threads):
        return _fit_material(scene, options, progress, cancel)


@contextlib.contextmanager
def _compute_settings(threads: int):
    """torch's thread count (see :attr:`FitOptions.threads`) and subnormal flushing for the
    forward and backward passes (see :func:`pbrfit.scene_renderer.flush_subnormals`), restored after."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        with flush_subnormals():
            yield
    finally:
        torch.set_num_threads(previous_threads)


def _fit_material(scene: FitScene, options: FitOptions, progress, cancel) -> FitResult:
    options.validate()
    t0 = options.budget_start if options.budget_start is not None else time.monotonic()
    clock = _Budget(t0, options.time_budget)

    def check_cancel():
        if cancel is not None and cancel.is_set():
            raise FitCancelled("fit cancelled; nothing was written")

    check_cancel()
    torch.manual_seed(options.seed)
    train = [i for i, v in enumerate(scene.views) if v.split == "train"]
    val = [i for i, v in enumerate(scene.views) if v.split == "validate"]
    if not train:
        raise InputError("the job has no train views; mark at least one [[views]] entry split = \"train\"")
    initial = normalize_material(scene.initial_material or {}, source="initial material")
    full_space = ParameterSpace(initial, options.parameters, options.bounds)
    clock.prepare_started()
    renderer = RasterRenderer(scene, options.samples, options.seed, options.max_loss_pixels, options.device)
    train_obj = _Objective(renderer, train, options.loss, check_cancel)
    val_obj = _Objective(renderer, val, {"de2000": 1.0}, check_cancel) if val else None
    clock.setup_done(scene, options, renderer, check_cancel)

    values = dict(full_space.values(full_space.initial_vector()))  # initial, clamped into bounds
    for n in PARAMETERS:
        if n not in full_space.fit:
            values[n] = initial[n]
    start_values = dict(values)
    history: list[dict] = []
    schedule: list[dict] = []
    state = {"it": 0, "best_val": math.inf, "best_values": dict(values), "bad_checks": 0, "last_val": None}
    total_iters = max(options.iterations, 0)

    def out_of_time() -> bool:
        return clock.fit_over()

    def evaluate(space: ParameterSpace, u: torch.Tensor, stage: str, grad: bool = True):
        check_cancel()
        with torch.set_grad_enabled(grad):
            loss, de = train_obj(space.material(u))
        return loss, de

    def validate_now(stage: str) -> float | None:
        if val_obj is None:
            return None
        space = ParameterSpace(values, [])
        with torch.no_grad():
            _, de = val_obj(space.material(space.initial_vector()))
        state["last_val"] = de
        if de < state["best_val"] - 1e-3:
            state["best_val"], state["best_values"], state["bad_checks"] = de, dict(values), 0
        else:
            state["bad_checks"] += 1
        return de

    def closure_for(opt, space: ParameterSpace, u: torch.Tensor, stage: str):
        """The optimizer's closure: loss and gradient at ``u``, recorded as one iteration."""
        def closure():
            opt.zero_grad()
            loss, de = evaluate(space, u, stage)
            loss.backward()
            if u.grad is not None:
                u.grad.nan_to_num_(0.0)
            record(stage, float(loss.detach()), de)
            return loss

        return closure

    def record(stage: str, loss: float, de: float):
        state["it"] += 1
        entry = {"iteration": state["it"], "stage": stage, "loss": float(loss), "train_de2000": float(de),
                 "validate_de2000": state["last_val"], "time": time.monotonic() - t0}
        history.append(entry)
        if progress is not None:
            progress(Progress(state["it"], total_iters, stage, float(loss), float(de), state["last_val"],
                              entry["time"]))

    # iteration 0: the initial material
    with torch.no_grad():
        s0 = ParameterSpace(values, [])
        loss0, de0 = evaluate(s0, s0.initial_vector(), "initial", grad=False)
    validate_now("initial")
    history.append({"iteration": 0, "stage": "initial", "loss": float(loss0), "train_de2000": float(de0),
                    "validate_de2000": state["last_val"], "time": time.monotonic() - t0})
    stopped = "iterations"
    freed: set[str] = set()
    raster_plan = _stage_plan(full_space.fit, options.staged, total_iters) if options.backend != "path" else []
    if options.backend != "raster":
        total_iters += options.path_iterations
    for stage, names, budget in raster_plan:
        if out_of_time():
            stopped = "time budget"
            break
        new = [n for n in names if n not in freed]
        freed.update(names)
        values = _warm_start(full_space, values, new, lambda sp, u: evaluate(sp, u, stage, grad=False)[0],
                             train_obj)
        space = ParameterSpace(values, names, options.bounds)
        u = space.initial_vector().clone().requires_grad_(True)
        if options.optimizer == "lbfgs":
            opt = torch.optim.LBFGS([u], lr=1.0, max_iter=options.check_every, history_size=20,
                                    line_search_fn="strong_wolfe", tolerance_grad=1e-7, tolerance_change=1e-6)
        else:
            cls = torch.optim.Adam if options.optimizer == "adam" else torch.optim.AdamW
            opt = cls([u], lr=options.learning_rate)
        start_it = state["it"]
        last_loss = math.inf
        converged = early = False
        state["bad_checks"] = 0
        while state["it"] - start_it < budget:
            if out_of_time():
                stopped = "time budget"
                break
            closure = closure_for(opt, space, u, stage)
            if options.optimizer == "lbfgs":
                loss = float(opt.step(closure).detach())
            else:
                for _ in range(options.check_every):
                    loss = float(opt.step(closure).detach())
            values = space.values(u.detach())
            validate_now(stage)
            if val_obj is not None and state["bad_checks"] >= options.patience:
                early = True  # this stage stopped helping on validation: go to the next one
                break
            if abs(last_loss - loss) <= 1e-4 * max(abs(loss), 1e-12):
                converged = True
                break
            last_loss = loss
        schedule.append({"stage": stage, "parameters": names, "iterations": state["it"] - start_it,
                         "warm_started": new})
        if stopped == "time budget":
            break
        stopped = "early stopping" if early else "converged" if converged else "iterations"

    if val_obj is not None and state["best_val"] < math.inf:
        values = state["best_values"]
    if raster_plan and not (cancel is not None and cancel.is_set()) and not out_of_time():
        values, pruned = _prune_layers(full_space, values, lambda sp, u: evaluate(sp, u, "prune", grad=False)[0])
        if pruned:
            # what the dropped layers were compensating for gets a short refinement
            keep = _parameters_in_use(full_space, values)
            start_it = state["it"]
            if keep and not out_of_time():
                space = ParameterSpace(values, keep, options.bounds)
                u = space.initial_vector().clone().requires_grad_(True)
                opt = torch.optim.LBFGS([u], lr=1.0, max_iter=10, history_size=20, line_search_fn="strong_wolfe",
                                        tolerance_grad=1e-7, tolerance_change=1e-6)
                # the strong-Wolfe line search only accepts steps that lower the loss
                opt.step(closure_for(opt, space, u, "refine"))
                values = dict(values, **{n: v for n, v in space.values(u.detach()).items() if n in keep})
            schedule.append({"stage": "prune", "parameters": pruned, "iterations": state["it"] - start_it,
                             "warm_started": []})
    if options.backend != "raster" and options.path_iterations > 0 and not out_of_time():
        values = _path_refinement(scene, options, full_space, values, train, val, state, record, check_cancel,
                                  out_of_time, schedule)
    if out_of_time():
        stopped = "time budget"
    final = {n: values[n] for n in PARAMETERS}
    if progress is not None:  # the final renders can take a while: say what is happening
        last = history[-1]
        progress(Progress(state["it"], total_iters, "final metrics", last["loss"], last["train_de2000"],
                          state["last_val"], time.monotonic() - t0))
    check_cancel()
    clock.fit_ended()
    final_renderer = clock.metrics_renderer(scene, options, renderer)
    views, metrics = evaluate_views(final_renderer, final, check=check_cancel)
    notes = list(scene.notes) + clock.notes(stopped, changed=any(values[n] != start_values[n]
                                                                   for n in full_space.fit))
    return FitResult(final, initial, list(full_space.fit), metrics, history, schedule, views, stopped,
                     time.monotonic() - t0, notes)


def _metrics_spp(scene: FitScene, options: FitOptions) -> int:
    """Paths per pixel of the final metrics (path backends)."""
    spp = max(64, 2 * options.path_max_spp)
    if "subsurface_weight" in options.parameters or (scene.initial_material or {}).get("subsurface_weight"):
        spp //= 2  # random walks cost ~20x a surface path; the report's images get half the paths
    return spp


def _metrics_renderer(scene: FitScene, options: FitOptions, spp: int | None = None):
    """The renderer of final metrics and report images: the fit's own backend (path traced
    for auto and path) with more samples than the fit used: ΔE2000 of a noisy pixel reads high.
    ``spp`` overrides the paths per pixel (a time budget)."""
    if options.backend == "raster":
        s = options.samples
        return RasterRenderer(scene, SampleCounts(2 * s.light, 2 * s.cosine, 2 * s.specular, 2 * s.coat),
                              options.seed + 1, options.max_loss_pixels, options.device)
    return PathRenderer(scene, PathSettings(spp or _metrics_spp(scene, options), options.path_depth),
                        options.seed + 1, options.max_loss_pixels, options.device)


#: With a time budget: the share of it the final metrics may take at most (the fit gets the
#: rest, less the writing share), and the share left for writing the outputs.
METRICS_SHARE, WRITE_SHARE = 0.25, 0.05
#: fewest paths per pixel of final metrics cut down to fit a time budget
MIN_METRICS_SPP = 8


class _Budget:
    """A run's time budget: one deadline for setup, fit, final metrics and writing.

    After setup, the cost of full-quality final metrics is estimated (path: a timed render
    of 128 pixels; raster: from the time preparing the views took); the fit must end early
    enough to leave that (at most :data:`METRICS_SHARE` of the budget) plus
    :data:`WRITE_SHARE` for writing. Final metrics then get what is left: fewer paths per
    pixel (at least :data:`MIN_METRICS_SPP`), or, for raster, the fit's own renderer.
    """

    def __init__(self, t0: float, seconds: float | None):
        self.t0, self.seconds = t0, seconds
        self.setup_s = 0.0
        self.estimate = 0.0
        self.fit_deadline = math.inf
        self.fit_end: float | None = None
        self.degraded = ""
        self._probe = None
        self._views = 0
        self._prepare_start = t0

    def setup_done(self, scene: FitScene, options: FitOptions, renderer: RasterRenderer, check) -> None:
        now = time.monotonic()
        self.setup_s = now - self.t0
        self._views = len(scene.views)
        if self.seconds is None:
            return
        if options.backend == "raster":
            # a fresh renderer with twice the samples prepares every view again, then renders
            self.estimate = 3.0 * (now - self._prepare_start)
        else:
            check()
            pixels = {vi: len(renderer.prepare(vi).geometry.pixels) for vi in range(len(scene.views))}
            probe = _metrics_renderer(scene, options)
            vi = max(pixels, key=pixels.get)
            sel = np.arange(min(128, pixels[vi]))
            m0 = ParameterSpace(normalize_material(scene.initial_material or {}), [])
            started = time.monotonic()
            with torch.no_grad():
                probe.shade(vi, m0.material(m0.initial_vector()), sel)
            self.estimate = (time.monotonic() - started) / len(sel) * sum(pixels.values())
            self._probe = probe
        reserve = min(METRICS_SHARE * self.seconds, 1.2 * self.estimate) + WRITE_SHARE * self.seconds
        self.fit_deadline = self.t0 + self.seconds - reserve

    def prepare_started(self) -> None:
        self._prepare_start = time.monotonic()

    def fit_over(self) -> bool:
        return time.monotonic() > self.fit_deadline

    def fit_ended(self) -> None:
        self.fit_end = time.monotonic()

    def metrics_renderer(self, scene: FitScene, options: FitOptions, fit_renderer: RasterRenderer):
        if self.seconds is None:
            return _metrics_renderer(scene, options)
        left = self.t0 + (1 - WRITE_SHARE) * self.seconds - time.monotonic()
        if left >= self.estimate:
            return self._probe or _metrics_renderer(scene, options)
        if options.backend == "raster":
            self.degraded = ("the final metrics reuse the fit's own samples (not twice as many, with other "
                             "seeds) to stay within the time budget")
            return fit_renderer
        full = _metrics_spp(scene, options)
        spp = max(MIN_METRICS_SPP, int(full * max(left, 0.0) / max(self.estimate, 1e-9)))
        if spp >= full:
            return self._probe
        self.degraded = (f"the final metrics use {spp} paths per pixel instead of {full} to stay within the "
                         "time budget: their ΔE2000 reads a little high from noise")
        self._probe.settings = PathSettings(spp, options.path_depth)
        return self._probe

    def notes(self, stopped: str, *, changed: bool) -> list[dict]:
        if self.seconds is None:
            return []
        out = []
        now = time.monotonic()
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


#: paths per pixel and pixels per view of the path refinement's validation checks
PATH_CHECK_SPP, PATH_CHECK_PIXELS = 64, 256


def _path_refinement(scene, options, full_space, values, train, val, state, record, check_cancel, out_of_time,
                     schedule) -> dict:
    """Adam on path-replay gradients from ``values``; rising paths per pixel; the best
    material on the (path-traced, fixed-seed) check set is returned."""
    depth = options.path_depth
    spp = options.path_spp
    renderer = PathRenderer(scene, PathSettings(spp, depth), options.seed, options.max_loss_pixels, options.device)
    objective = _Objective(renderer, train, options.path_loss)
    # validation views when there are any, else the train views; fixed paths (common random
    # numbers across checks), many per pixel on fewer pixels: ΔE2000 of noisy pixels reads high
    check_renderer = PathRenderer(scene, PathSettings(PATH_CHECK_SPP, depth), options.seed + 1,
                                  PATH_CHECK_PIXELS, options.device)
    checker = _Objective(check_renderer, val or train, {"de2000": 1.0})
    # Subsurface walks are far noisier than surface paths, and ΔE2000 of noisy pixels reads
    # high: with them, checks use the unbiased relative error instead of ΔE2000.
    noisy = "subsurface_weight" in full_space.fit
    # what progress reports as train ΔE2000: the train views on the check's fixed paths (the
    # iterations' own 4-spp renders would read several units high from noise alone)
    train_checker = _Objective(check_renderer, train, {"de2000": 1.0}) if val or noisy else None

    def check(vals: dict) -> tuple[float, float]:
        """(the check's value, lower is better; train ΔE2000 to report)."""
        space0 = ParameterSpace(vals, [])
        m = space0.material(space0.initial_vector())
        if noisy:
            value = _unbiased_relative_error(checker, m)
        else:
            with torch.no_grad():
                value = checker(m)[1]
            if val:
                state["last_val"] = value
        if train_checker is None:  # the check was ΔE2000 on the train views themselves
            return value, value
        with torch.no_grad():
            return value, train_checker(m)[1]

    started = dict(values)  # the raster result (auto) or the initial material (path)
    started_at = time.monotonic()
    warm = []
    if noisy:
        # the raster backend renders subsurface as diffuse (and prunes it): its weight is
        # chosen here, by path-traced train error on fixed paths
        lo, hi = full_space.bounds_of("subsurface_weight")
        losses = {}
        for w in sorted({lo, 0.5 * (lo + hi), hi}):
            trial = ParameterSpace(dict(values, subsurface_weight=w), [])
            losses[w] = _unbiased_relative_error(train_checker, trial.material(trial.initial_vector()))
        values = dict(values, subsurface_weight=min(losses, key=losses.get))
        warm = ["subsurface_weight"]
    names = _parameters_in_use(full_space, values)
    best_de, shown_de = check(values)
    best_values, first_de = dict(values), best_de
    start = state["it"]
    if names:
        space = ParameterSpace(values, names, options.bounds)
        u = space.initial_vector().clone().requires_grad_(True)
        opt = torch.optim.Adam([u], lr=options.path_learning_rate)
        bad = 0
        while state["it"] - start < options.path_iterations and not out_of_time():
            for _ in range(min(options.check_every, options.path_iterations - (state["it"] - start))):
                check_cancel()
                renderer.next_iteration()  # fresh paths: the seed schedule moves on
                opt.zero_grad()
                loss, _ = objective(space.material(u))
                loss.backward()
                u.grad.nan_to_num_(0.0)
                opt.step()
                record("path", float(loss.detach()), shown_de)
            values = space.values(u.detach())
            de, shown_de = check(values)
            if de < best_de - 1e-3:
                best_de, best_values, bad = de, dict(values), 0
            else:
                bad += 1
            if bad >= options.patience:
                if renderer.settings.spp >= options.path_max_spp:
                    break
                renderer.settings = PathSettings(min(2 * renderer.settings.spp, options.path_max_spp), depth)
                bad = 0
    schedule.append({"stage": "path", "parameters": names, "iterations": state["it"] - start, "warm_started": warm,
                     "spp": [spp, renderer.settings.spp], "check": [first_de, best_de],
                     "check_metric": "relative_error" if noisy else "de2000",
                     "seconds": time.monotonic() - started_at, "start": started})
    return best_values


def _parameters_in_use(space: ParameterSpace, values: dict) -> list[str]:
    """Fitted parameters except layers switched off (at their lower bound) and the
    parameters that only matter while such a layer is on."""

    def off(layer):
        return layer is not None and values[layer] <= space.bounds_of(layer)[0]

    return [n for n in space.fit if not off(n if n in _LAYER_SWITCHES else None) and not off(_LAYER_OF.get(n))]


#: parameters that switch a whole layer or effect on; zero means "not there"
_LAYER_SWITCHES = ("anisotropic", "coat_weight", "sheen_weight", "thin_film_thickness", "subsurface_weight",
                   "transmission_weight")
#: parameters that only matter while their layer is on
_LAYER_OF = {"anisotropic_rotation": "anisotropic", "coat_roughness": "coat_weight", "coat_ior": "coat_weight",
             "coat_tint": "coat_weight", "sheen_roughness": "sheen_weight", "sheen_tint": "sheen_weight",
             "thin_film_ior": "thin_film_thickness", "subsurface_radius": "subsurface_weight",
             "subsurface_scale": "subsurface_weight"}
#: a layer is dropped when removing it raises the train loss by less than this fraction
PRUNE_TOLERANCE = 0.01


def _prune_layers(space: ParameterSpace, values: dict, loss_of) -> tuple[dict, list[str]]:
    """Switch off fitted layers that do not pay for themselves (Occam's razor).

    With many parameters free, a fit can explain noise or unmodelled transport with a
    little anisotropy or sheen. Each fitted layer switch that is on is set to zero, one at
    a time, and stays off if the train loss rises by less than :data:`PRUNE_TOLERANCE`.
    """
    values = dict(values)
    pruned = []
    base = ParameterSpace(values, [])
    current = float(loss_of(base, base.initial_vector()))
    for n in _LAYER_SWITCHES:
        if n not in space.fit or values[n] <= space.bounds_of(n)[0]:
            continue
        trial = dict(values, **{n: space.bounds_of(n)[0]})
        s = ParameterSpace(trial, [])
        loss = float(loss_of(s, s.initial_vector()))
        if loss <= current * (1 + PRUNE_TOLERANCE):
            values, current = trial, min(current, loss)
            pruned.append(n)
    return values, pruned


def _base_color_least_squares(objective: "_Objective", values: dict, space: ParameterSpace) -> list[float]:
    """Base colour minimizing the squared error of the train pixels, in closed form.

    The Principled model is affine in ``base_color`` per channel whatever the other
    parameters (diffuse and subsurface scale with it, the metal Fresnel is affine in F0,
    specular, sheen and coat do not depend on it), so two renders, with base colour 0 and
    1, give each pixel's radiance as ``A * base_color + B``.
    """
    lo, hi = space.bounds_of("base_color")
    num = torch.zeros(3, dtype=torch.float64)
    den = torch.zeros(3, dtype=torch.float64)
    renders = {}
    for c in (0.0, 1.0):
        s = ParameterSpace(dict(values, base_color=[c, c, c]), [])
        with torch.no_grad():
            m = s.material(s.initial_vector())
            renders[c] = {vi: objective.renderer.shade(vi, m, objective.renderer.train_subsets[vi]).double()
                          for vi in objective.view_ids}
    for vi in objective.view_ids:  # in white-normalized radiance, like the losses
        a = (renders[1.0][vi] - renders[0.0][vi]) / objective.whites[vi]
        b = renders[0.0][vi] / objective.whites[vi]
        num += (a * (objective.refs[vi].double() - b)).sum(0)
        den += (a * a).sum(0)
    return (num / den.clamp_min(1e-30)).clamp(lo, hi).tolist()


def _warm_start(space: ParameterSpace, values: dict, names: list[str], loss_of,
                objective: "_Objective | None" = None) -> dict:
    """Warm start for newly freed parameters: base colour in closed form, then a
    coordinate-wise 1-D grid search for each scalar."""
    values = dict(values)
    if "base_color" in names and objective is not None:
        values["base_color"] = _base_color_least_squares(objective, values, space)
    for n in names:
        spec = PARAMETERS[n]
        if spec.size != 1:
            continue
        lo, hi = space.bounds_of(n)
        steps = _FINE_GRID.get(n, _COARSE_GRID)
        grid = np.linspace(lo, hi, steps)
        if spec.transform == "alpha":
            grid = np.sqrt(np.linspace(lo**2, hi**2, steps))
        best, best_v = math.inf, values[n]
        candidates = [values[n]] + [float(g) for g in grid]
        for v in candidates:
            trial = dict(values)
            trial[n] = v
            s = ParameterSpace(trial, [])
            loss = float(loss_of(s, s.initial_vector()))
            if loss < best - 1e-9:
                best, best_v = loss, v
        values[n] = best_v
    return values


def evaluate_views(renderer: RasterRenderer, material_values: dict, view_ids: list[int] | None = None, *,
                   check: Callable[[], None] | None = None):
    """Render every view (or ``view_ids``) with a material and measure it.

    ``check`` is called before each view (it raises to cancel).

    Returns:
        (views, metrics) as in :class:`FitResult`.
    """
    space = ParameterSpace(material_values, [])
    m = space.material(space.initial_vector())
    scene = renderer.scene
    ids = range(len(scene.views)) if view_ids is None else view_ids
    views, metrics = [], {}
    for vi in ids:
        if check is not None:
            check()
        view = scene.views[vi]
        img = renderer.render_image(vi, m)
        pv = renderer.prepare(vi)
        geo, white = pv.geometry, pv.env.mean_luminance
        mask = np.zeros(geo.height * geo.width, np.float32)
        mask[geo.pixels[geo.loss_pixels]] = 1.0
        mask = mask.reshape(geo.height, geo.width)
        pred_t = torch.as_tensor(img / white)
        ref_t = torch.as_tensor(view.image / white)
        mask_t = torch.as_tensor(mask)
        vm = L.image_metrics(pred_t, ref_t, mask_t, white=1.0)
        vm["mask_iou"] = geo.mask_iou
        de_map = L.de2000_map(pred_t, ref_t, white=1.0).numpy() * mask
        views.append({"name": view.name, "split": view.split, "reference": view.image, "fit": img,
                      "de_map": de_map, "mask": mask, "white": white, "metrics": vm,
                      "mask_iou": geo.mask_iou})
        metrics.setdefault(view.split, {"views": {}})["views"][view.name] = vm
    for split, d in metrics.items():
        keys = ("de2000_mean", "de2000_p95", "ssim", "l1")
        d["mean"] = {k: float(np.mean([v[k] for v in d["views"].values()])) for k in keys}
    return views, metrics


def evaluate_material(scene: FitScene, material: dict, options: FitOptions | None = None, *,
                      cancel: threading.Event | None = None):
    """Render and measure ``material`` on every view of ``scene`` (no fitting).

    Raises:
        FitCancelled: ``cancel`` was set (checked between views).
    """
    options = options or FitOptions()

    def check():
        if cancel is not None and cancel.is_set():
            raise FitCancelled("cancelled; nothing was written")

    with _compute_settings(options.threads):
        return evaluate_views(_metrics_renderer(scene, options), normalize_material(material), check=check)
