"""One fit, phase by phase: setup, the raster stages, layer pruning, the path-traced
refinement and the final metrics (the algorithm is described in :mod:`pbrfit.fit`).

:class:`FitRun` holds what the phases share: the options, the renderers (:class:`pbrfit.
renderers.Renderers` derives their seeds and samples), the current material, the history
of every objective evaluation, the schedule actually run, the best material seen on
validation (:class:`Checkpoint`), the time budget, progress and cancel. Each phase is a
method; :meth:`FitRun.run` calls them in order.

Progress: the run's total of work units is fixed when it starts (:class:`ProgressPlan`):
each raster stage's evaluation budget, the short refinement after pruning, the path
refinement's iterations and one unit per view of final metrics. A phase that ends early
jumps to its end, one that overshoots (an L-BFGS step may take a few more evaluations than
its stage had left) stays at its end: the reported iteration never passes the total, and
the total never grows.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import calibration, faults, fit_health, hypotheses, identifiability, texture_fit, textures
from .color import luminance
from .errors import FitCancelled, InputError
from .layers import (
    LAYER_GAIN,
    LAYER_SWITCHES,
    SIMPLEST,
    Evidence,
    parameters_in_use,
    pays,
    prune_layers,
    reported_margin,
)
from .measure import evaluate_views
from .objective import (
    Objective,
    paired_margin,
    unbiased_error_terms,
    unbiased_relative_error,
    unbiased_relative_errors,
    view_terms,
)
from .options import fitted_parameters
from .params import PARAMETERS, ParameterSpace, normalize_material
from .pathtrace import PathSettings
from .renderers import Renderers
from .time_budget import STRUCTURE_SHARE, TimeBudget
from .warm_start import solve_base_color, stage_plan, warm_start

__all__ = ["FitRun", "Progress", "FitResult", "PHASES", "Checkpoint", "SppSchedule", "ProgressPlan",
           "REFINE_EVALUATIONS", "MIN_IMPROVEMENT", "MIN_RELATIVE_IMPROVEMENT", "SUBSURFACE_SIGNIFICANCE", "lbfgs"]

#: objective evaluations of the re-fit after a layer is switched off (per layer tried)
REFINE_EVALUATIONS = 10
#: a check in ΔE2000 must beat the best by more than this to count
MIN_IMPROVEMENT = 1e-3
#: a check in relative error (subsurface on) must beat the best by more than this share of
#: the path stage's first check: relative errors are ~0.005, so the absolute margin above
#: refused every Adam step of the wax (its checks fell 0.0066 -> 0.0057 and were discarded)
MIN_RELATIVE_IMPROVEMENT = 1e-3
#: the path stage's roughness search (FitRun.roughness_step): candidates as multiples of the
#: current roughness, and how many rounds it may go on past the farthest
ROUGHNESS_STEPS = (0.8, 0.9, 1.1, 1.25)
ROUGHNESS_ROUNDS = 2
#: the subsurface trial (FitRun.choose_subsurface): the walks must be better than no walks by this
#: many standard errors of the blocks' paired differences (train and validation views combined)
SUBSURFACE_SIGNIFICANCE = 2.0
#: the subsurface scale's search (FitRun.subsurface_scale_search): factors of 2 for at most
#: this many rounds, then one round of factors of sqrt(2) around what it found
SCALE_ROUNDS = 3
#: a known object's pixel measures the capture only when at most this share of its sample directions
#: is blocked (RasterRenderer.blocked_share): beyond, light reflected by the part reaches it unrendered
KNOWN_CLEAR = 0.02
#: and a view measures it only with this many such pixels (else its least blocked half, with a warning)
MIN_KNOWN_PIXELS = 8
#: above this share of blocked sample directions (RasterRenderer.self_occlusion) structures are
#: decided by the path tracer (FitRun.structure_estimator): under 0.01 on a sphere, 0.07-0.15 on Suzanne
SELF_OCCLUSION = 0.05


class _OutOfTime(Exception):
    """The time budget ran out in the middle of a search or an optimizer step: raised by
    :meth:`FitRun.search_loss` and :meth:`FitRun.closure`, caught where that work is abandoned
    (the material stays as it was before it)."""


#: what a run is doing, in order: :attr:`Progress.phase`
PHASES = ("setup", "fit", "final metrics")


@dataclass
class Progress:
    """A progress report of a run (after each objective evaluation, and at phase changes).

    Attributes:
        iteration: work units done (never more than ``total``; see :mod:`pbrfit.fit_run`).
        total: the run's work units, fixed when it starts.
        stage: the fit stage ("colour", "gloss", "layers", "all", "refine", "path", "textures", and
            "calibrate" between them with ``[calibrate]``), or the phase's name outside the fit.
        loss: the last objective value (NaN before the first).
        train_de2000: ΔE2000 of the train views (NaN before the first evaluation).
        validate_de2000: of the validation views at the last check, or None.
        elapsed: seconds since the run started.
        phase: one of :data:`PHASES`.
        remaining: estimated seconds left (from the pace of the work units so far), or None.
    """

    iteration: int
    total: int
    stage: str
    loss: float
    train_de2000: float
    validate_de2000: float | None
    elapsed: float
    phase: str = "fit"
    remaining: float | None = None


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
        views: a :class:`ViewResult` per view.
        stopped: why the last stage stopped ("converged", "iterations", "time budget", "early
            stopping"); the path refinement converges when its checks stall at the most paths
            per pixel.
        wall_time: seconds (from ``FitOptions.budget_start`` when given).
        timings: seconds per phase, in order: "before setup" (from ``budget_start``: reading
            the job), "setup" (G-buffers and fixed samples of every view), each raster stage by
            name, "refine", "path", "identifiability", "final metrics".
        notes: what the user should know about the run, ``{severity, about, message}``
            (:mod:`pbrfit.fit_health`: over-fitting, a stage still improving when its
            iterations ran out; the time budget ended the fit before it improved on the start)
            and :mod:`pbrfit.identifiability` (parameters these photos do not determine).
        identifiability: per fitted parameter in use, its tolerance (how far it can move
            unseen) and what it trades against (:func:`pbrfit.identifiability.analyse`).
        textures: {parameter: :class:`pbrfit.texture_fit.MapResult`} of the fitted maps (the
            parameter's value in ``material`` is the map's mean over its observed texels).
        texture_log: the pyramid's levels as run, then the resolutions up to the one asked for
            that the photos do not resolve ({resolution, steps 0, skipped "unresolved",
            pixels_per_texel}; :data:`pbrfit.texture_fit.MIN_LEVEL_PIXELS`): {resolution, steps (the Adam steps taken),
            validate_de2000, seconds; scalars_searched, scalars: the scalars still fitted after
            the level's scalar search and after its steps; search: the palette search's materials and texels moved,
            where it ran; checks: [{steps, validate_de2000}] measured within the level, where
            it was checked (:data:`pbrfit.texture_fit.LEVEL_CHECK_EVERY`)}.
        exposures: {view name: stops} of the views with ``exposure = "auto"``: the photo is
            2^stops times the render of the fitted material.
        calibration: the capture's corrections with ``[calibrate]`` (:mod:`pbrfit.calibration`):
            {"deltas": :meth:`Calibration.summary`, "rounds": one log per round, "prior_weight"},
            or {} without.
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
    timings: dict = field(default_factory=dict)
    identifiability: dict = field(default_factory=dict)
    textures: dict = field(default_factory=dict)
    texture_log: list = field(default_factory=list)
    exposures: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)


#: evaluations of the joint material-and-capture step (FitRun.joint_calibration): a small step
JOINT_EVALUATIONS = 10
#: corrections the joint step holds unless a reference object is in view (they trade with the
#: base colour: measured on the calibration benchmark's gold without its ball, judged 2.95 with
#: them free against 1.71 held)
JOINT_NEEDS_REFERENCE = ("environment_exposure", "white_balance", "light_intensity", "light_color")


#: the schedule's stage of the layers (coat, sheen, thin film, subsurface: :class:`pbrfit.params.ParameterSpec`)
LAYERS_STAGE = 3


def _has_layers(names) -> bool:
    """Whether ``names`` include a parameter of the layers stage (what the structure search frees)."""
    return any(PARAMETERS[n].stage >= LAYERS_STAGE for n in names)


def _trial_objectives(train: Objective, val: Objective | None = None) -> dict:
    """{"train": train, "validate": val (when the job has validation views)}."""
    return {"train": train, **({"validate": val} if val is not None else {})}


def _block_terms(objectives: dict, values: dict) -> dict:
    """{name: per-block unbiased relative errors of ``values`` (one term per block, channels
    averaged)} over ``objectives`` (:func:`pbrfit.objective.unbiased_relative_errors`)."""
    space = ParameterSpace(values, [])
    m = space.material(space.initial_vector())
    return {k: view_terms(unbiased_relative_errors(obj, m))[1] for k, obj in objectives.items()}


def _combined_margin(before: dict, after: dict) -> float:
    """How many standard errors ``after``'s blocks read better than ``before``'s, the
    objectives' paired margins combined (Stouffer's z)."""
    margins = [paired_margin(before[k], after[k]) for k in before]
    return sum(margins) / math.sqrt(len(margins))


def lbfgs(u: torch.Tensor, max_iter: int) -> torch.optim.LBFGS:
    """The raster fits' L-BFGS over ``u`` (stages, pruning re-fit, the scalars after maps):
    ``max_iter`` iterations per step, strong-Wolfe line search (it only accepts steps that
    lower the loss)."""
    return torch.optim.LBFGS([u], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                             tolerance_grad=1e-7, tolerance_change=1e-6)


class Checkpoint:
    """The best material seen by a check (lower is better) and the checks since it improved.

    Args:
        values: the material to keep until a check beats it.
        best: its check, if measured.
        margin: how much lower a check must be to count (in the check's units).
    """

    def __init__(self, values: dict, best: float = math.inf, margin: float = MIN_IMPROVEMENT):
        self.best, self.values, self.bad_checks, self.margin = best, dict(values), 0, margin

    def offer(self, score: float, values: dict) -> bool:
        """Keep ``values`` if ``score`` beats the best by the margin; True if kept."""
        if score < self.best - self.margin:
            self.best, self.values, self.bad_checks = score, dict(values), 0
            return True
        self.bad_checks += 1
        return False

    def stalled(self, patience: int) -> bool:
        """``patience`` checks in a row did not improve."""
        return self.bad_checks >= patience


class SppSchedule:
    """Paths per pixel and Adam's step of the path refinement: from ``start`` paths and
    ``learning_rate``, the paths doubled and the step halved each time the checks stall, up to
    ``most`` paths; stalling at ``most`` ends the refinement. (Adam moves every parameter by
    about its step whatever the gradient's size, so noise alone carries a sensitive parameter
    away: 0.02 in the unconstrained space is ~6 nm of a 450 nm thin film per iteration, ~30 nm
    between two checks, and the iridescent finish's checks on Suzanne rose from 2.66 to 3.45 in
    five iterations and never came back.)"""

    def __init__(self, start: int, most: int, learning_rate: float = 0.02):
        self.start, self.most, self.spp, self.learning_rate = start, most, start, learning_rate

    def on_stall(self) -> bool:
        """Double the paths per pixel and halve the step; False when the paths are at the
        most already (stop)."""
        if self.spp >= self.most:
            return False
        self.spp = min(2 * self.spp, self.most)
        self.learning_rate *= 0.5
        return True


@dataclass
class ProgressPlan:
    """The run's work units: ``[(phase key, units)]`` in order, fixed when the run starts."""

    allotments: list[tuple[str, int]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(n for _, n in self.allotments)

    def start_of(self, key: str) -> int:
        done = 0
        for k, n in self.allotments:
            if k == key:
                return done
            done += n
        raise KeyError(key)

    def units(self, key: str, done_in_phase: int) -> int:
        """Units done when phase ``key`` has done ``done_in_phase`` (clamped to its allotment)."""
        allot = dict(self.allotments)[key]
        return self.start_of(key) + max(0, min(done_in_phase, allot))


class FitRun:
    """One fit of ``scene`` with ``options`` (see :func:`pbrfit.fit.fit_material`).

    Construction is the setup phase: options checked, views prepared (ray cast), the
    objectives built, the time budget's deadline set. Then :meth:`run`.
    """

    def __init__(self, scene, options, progress: Callable[[Progress], None] | None = None, cancel=None):
        options.validate()
        constructed = time.monotonic()
        # views of unknown exposure get their photo rescaled as the fit goes (update_exposures):
        # in this run's own copy of the view list, never the caller's
        self.auto_exposure = [i for i, v in enumerate(scene.views) if getattr(v, "exposure", 0.0) == "auto"]
        if self.auto_exposure:
            scene = dataclasses.replace(scene, views=list(scene.views))
        self.exposure_scale = {i: 1.0 for i in self.auto_exposure}
        self.scene, self.options = scene, options
        self._progress, self._cancel = progress, cancel
        self.t0 = options.budget_start if options.budget_start is not None else constructed
        self.timings: dict[str, float] = {"before setup": constructed - self.t0}
        self._phase_started = constructed
        self.renderers = Renderers(scene, options)
        self.clock = TimeBudget(self.t0, options.time_budget, self.renderers)
        self.check_cancel()
        torch.manual_seed(options.seed)
        self.train = [i for i, v in enumerate(scene.views) if v.split == "train"]
        self.val = [i for i, v in enumerate(scene.views) if v.split == "validate"]
        if not self.train:
            raise InputError("the job has no train views; mark at least one [[views]] entry split = \"train\"")
        if options.textures is not None and scene.mesh.uvs is None:
            raise InputError(f"mesh {scene.mesh.prim_path or '(the part)'} has no texture coordinates, so texture maps "
                             "cannot be fitted; add a UV map (Blender: UV > Smart UV Project, exported as primvars:st) "
                             "or remove [textures]")
        settings = getattr(options, "calibrate", None)
        self.calibration = (calibration.Calibration(scene, settings, self.train)
                            if settings is not None and settings.keys() else None)
        self.calibration_log: list[dict] = []
        self.known_notes: set[str] = set()  # references too close to the part (update_calibration)
        self.maps: dict = {}
        self.texture_log: list = []
        # tolerances measured by the path refinement (:meth:`subsurface_scale_search`), for
        # the parameters :func:`pbrfit.identifiability.analyse` cannot analyse on the raster
        self.path_tolerances: dict = {}
        self.initial = normalize_material(scene.initial_material or {}, source="initial material")
        self.space = ParameterSpace(self.initial, fitted_parameters(options), options.bounds)
        self.raster_plan = (stage_plan(self.space.fit, options.staged, max(options.iterations, 0))
                            if options.backend != "path" else [])
        self.plan = ProgressPlan(
            [(f"stage:{name}", budget) for name, _, budget in self.raster_plan]
            + ([("refine", REFINE_EVALUATIONS * max(1, sum(n in LAYER_SWITCHES for n in self.space.fit)))]
               if self.raster_plan else [])
            + ([("path", options.path_iterations)] if options.backend != "raster" else [])
            + ([("textures", texture_fit.map_units(options.textures))] if options.textures else [])
            + [("metrics", len(scene.views))])
        self.units_done = 0
        self.fit_started: float | None = None
        self.history: list[dict] = []
        self.schedule: list[dict] = []
        self.evaluations = 0
        self.last_val: float | None = None
        self.stopped = "iterations"
        self._phase_key, self._phase_evals = None, 0
        self.report("setup", "setup", math.nan, math.nan)

        self.clock.prepare_started()
        self.raster = self.renderers.raster_fit()
        workers = options.threads
        self.train_obj = Objective(self.raster, self.train, options.loss, self.check_cancel, workers)
        self._twin = None  # the raster twin of structure_evidence, made when first needed
        self._path_judge = None  # the path tracer's checks of structure_evidence on a self-occluding part
        self._estimator: str | None = None
        self.self_occlusion: float | None = None
        self.val_obj = (Objective(self.raster, self.val, {"de2000": 1.0}, self.check_cancel, workers)
                        if self.val else None)
        self.clock.setup_done(self.raster, self.check_cancel)

        values = dict(self.space.values(self.space.initial_vector()))  # initial, clamped into bounds
        for n in PARAMETERS:
            if n not in self.space.fit:
                values[n] = self.initial[n]
        self.values = values
        self.start_values = dict(values)
        self.checkpoint = Checkpoint(values)
        self.hurried: dict | None = None  # the layers prune tested after the budget ran out
        self.before_layers: dict | None = None  # the material when the stages first freed a layer
        self.searched = False  # the layers' warm start and the other structures ran to their end (try_hypotheses)
        self.phase_deadline = math.inf  # the current phase's own deadline (the structure search's)
        self.timings["setup"] = time.monotonic() - constructed

    # --- shared machinery ---------------------------------------------------------------------

    def check_cancel(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise FitCancelled("fit cancelled; nothing was written")

    def refine_follows(self) -> bool:
        """A path-traced refinement follows the raster phase."""
        return self.options.backend != "raster" and self.options.path_iterations > 0

    def out_of_time(self) -> bool:
        """The time budget's fit deadline has passed, or the current phase's
        (:attr:`phase_deadline`)."""
        return self.clock.fit_over() or self.clock.clock() > self.phase_deadline

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def report(self, phase: str, stage: str, loss: float, train_de: float) -> None:
        """A progress event at the current units (see the module docstring)."""
        if self._progress is None:
            return
        remaining = None
        if self.fit_started is not None and self.units_done > 0:
            rate = (time.monotonic() - self.fit_started) / self.units_done
            remaining = rate * (self.plan.total - self.units_done)
        self._progress(Progress(self.units_done, self.plan.total, stage, float(loss), float(train_de),
                                      self.last_val, self.elapsed(), phase=phase, remaining=remaining))

    def enter(self, key: str) -> None:
        """Phase ``key`` of the plan begins (units jump to its start if earlier ones ended early)."""
        if self.fit_started is None:
            self.fit_started = time.monotonic()
        self._phase_key, self._phase_evals = key, 0
        self._phase_started = time.monotonic()
        self.units_done = max(self.units_done, self.plan.start_of(key))
        faults.point("final-metrics" if key == "metrics" else key if key.startswith("stage:") else f"stage:{key}")

    def leave(self) -> None:
        """The current phase ended: units move to its end."""
        if self._phase_key is not None:
            self.units_done = max(self.units_done, self.plan.units(self._phase_key, 1 << 60))
            name = self._phase_key.removeprefix("stage:").replace("metrics", "final metrics")
            self.timings[name] = self.timings.get(name, 0.0) + time.monotonic() - self._phase_started
            self._phase_key = None

    def evaluate(self, space: ParameterSpace, u: torch.Tensor, grad: bool = True):
        self.check_cancel()
        with torch.set_grad_enabled(grad):
            return self.train_obj(space.material(u))

    def loss_of(self, space: ParameterSpace, u: torch.Tensor) -> float:
        """The train loss of a material, no gradient (warm starts)."""
        return self.evaluate(space, u, grad=False)[0]

    def search_loss(self, space: ParameterSpace, u: torch.Tensor) -> float:
        """:meth:`loss_of` for the searches (warm starts, the other structures): raises
        :class:`_OutOfTime` once the time budget has run out, so that an unfinished search is
        abandoned instead of overrunning the budget (a layers stage's warm start, 8 parameters'
        grids, once ran 30 s past a 60 s budget)."""
        if self.out_of_time():
            raise _OutOfTime
        return self.loss_of(space, u)

    def structure_evidence(self, space: ParameterSpace, u: torch.Tensor) -> Evidence:
        """The structure error, what decides between structures (hypotheses, pruning): the
        unbiased relative error of the train views' loss pixels
        (:func:`pbrfit.objective.unbiased_relative_error`), which does not favour a material for
        rendering with less noise, as the train loss does, with its per-pixel terms (channels
        averaged), which two materials share pixels and samples for: pruning's test of
        significance. Estimated by the fit renderer and its twin with independent samples; on a
        part that shades itself (:meth:`structure_estimator`) by the path tracer's checks
        instead, whose interreflection the raster renderer lacks (a clear coat over a rough base
        on Suzanne read 0.071 against a false glossy base's 0.032 there)."""
        self.check_cancel()
        if self.structure_estimator() == "path":
            if self._path_judge is None:
                self._path_judge = Objective(self.renderers.path_check(), self.train, self.options.loss,
                                             self.check_cancel)
            objective, twin = self._path_judge, None
        else:
            if self._twin is None:
                self._twin = self.renderers.raster_twin(self.raster)
            objective, twin = self.train_obj, self._twin
        return Evidence(*unbiased_error_terms(objective, space.material(u), twin=twin))

    def structure_estimator(self) -> str:
        """"path" when the fit path-traces (backend auto or path) and the part blocks more than
        :data:`SELF_OCCLUSION` of its train pixels' sample directions above the surface, else
        "raster"."""
        if self._estimator is None:
            share = sum(self.raster.self_occlusion(vi) for vi in self.train) / len(self.train)
            self.self_occlusion = share
            self._estimator = "path" if self.options.backend != "raster" and share > SELF_OCCLUSION else "raster"
        return self._estimator

    def record(self, stage: str, loss: float, de: float) -> None:
        """One objective evaluation with a gradient: history, units, progress."""
        self.evaluations += 1
        self.history.append({"iteration": self.evaluations, "stage": stage, "loss": float(loss),
                             "train_de2000": float(de), "validate_de2000": self.last_val, "time": self.elapsed()})
        self._phase_evals += 1
        if self._phase_key is not None:
            self.units_done = max(self.units_done, self.plan.units(self._phase_key, self._phase_evals))
        self.report("fit", stage, loss, de)

    def closure(self, opt, space: ParameterSpace, u: torch.Tensor, stage: str):
        """The optimizer's closure: loss and gradient at ``u``, recorded as one evaluation;
        raises :class:`_OutOfTime` once the time budget has run out (the step is abandoned)."""
        def closure():
            opt.zero_grad()
            self.check_cancel()
            if self.out_of_time():
                raise _OutOfTime
            loss, de, grad = self.train_obj.loss_and_grad(space.material, u)
            u.grad = grad.nan_to_num(0.0)
            self.record(stage, loss, de)
            return torch.tensor(loss)

        return closure

    def update_exposures(self) -> None:
        """Views with ``exposure = "auto"``: the scale ``s`` that best maps the current
        material's render onto the photo (least squares on the loss pixels' luminance, white-
        normalized) is divided out of the photo, in the objectives' references and in this run's
        scene (so the metrics and the report see it too); the view's total scale accumulates in
        :attr:`exposure_scale`. Called between phases: the material and the exposures are
        optimized in turn, and each step lowers the loss."""
        if not self.auto_exposure:
            return
        space = ParameterSpace(self.values, [])
        m = space.material(space.initial_vector())
        for vi in self.auto_exposure:
            obj = self.train_obj if vi in self.train_obj.refs else self.val_obj
            with torch.no_grad():
                pred = luminance(self.raster.shade(vi, m, self.raster.train_subsets[vi]).cpu().float() / obj.whites[vi])
            ref = luminance(obj.refs[vi].cpu().float())
            s = float((pred * ref).sum() / (pred * pred).sum().clamp_min(1e-30))
            if not (math.isfinite(s) and s > 0):
                continue
            self.exposure_scale[vi] *= s
            obj.refs[vi] = obj.refs[vi] / s
            view = self.scene.views[vi]
            self.scene.views[vi] = dataclasses.replace(view, image=(view.image / s).astype(view.image.dtype))

    def update_calibration(self, known_only: bool = False) -> None:
        """With ``[calibrate]``: hold the current material, fit the capture's corrections
        (:func:`pbrfit.calibration.fit_deltas`: each environment's yaw searched on a grid, widely
        in the first round with the part, narrowly after) to the part's train views and to the
        known objects in them, bake them into
        this run's scene and rebuild the renderers on it, so every later phase and the final
        metrics see the calibrated capture. Called between phases: the material and the
        calibration are optimized in turn. ``known_only``: from the known objects alone (before
        the part's material is fitted: what they tell is not absorbed into its base colour)."""
        if self.calibration is None or self.out_of_time() or (known_only and not self.scene.known):
            return
        started = time.monotonic()
        # the yaw: searched widely in the first round that measures the part (a reference alone,
        # a diffuse ball, says little about it), then narrowly around the current one each round
        first = not any(r.get("objects_part") for r in self.calibration_log)
        sigmas = None if known_only else calibration.YAW_SEARCH_SIGMAS if first else calibration.YAW_REFINE_SIGMAS
        turns = self.calibration.variables_of("environment_rotation")
        # environments sampled evenly over the yaws tried (EnvironmentMap yaw_spread)
        span = max(v.sigma for v in turns) * (sigmas or calibration.YAW_REFINE_SIGMAS) if turns else 0.0
        measured = self._calibration_measures(known_only, span)
        if not measured:
            return

        def evaluated(loss: float, de: float) -> None:
            self.check_cancel()
            self.report("fit", "calibrate", loss, de)

        delta, log = calibration.fit_deltas(measured, self.calibration, yaw_search=sigmas, on_evaluation=evaluated,
                                            hold=("environment_rotation",) if known_only else ())
        log["objects_part"] = not known_only
        self.scene = self.calibration.bake(self.scene, delta)
        self._rebuild()
        log["seconds"] = time.monotonic() - started
        log["after_stage"] = self.schedule[-1]["stage"] if self.schedule else None
        self.calibration_log.append(log)

    def joint_calibration(self) -> None:
        """With ``[calibrate]``, after the material and the capture have been fitted in turn: both
        together, a few L-BFGS evaluations (:data:`JOINT_EVALUATIONS`) from where the turns left
        them (the issue's "then jointly, with a small step"): what each took from the other is
        settled with both free. The material's parameters are the last raster stage's; the
        corrections' prior is part of the loss; the cameras (fitted to outlines) and the yaw (a
        grid search's business) are held, and so, without a reference object in view, are the
        corrections that trade with the base colour (:data:`JOINT_NEEDS_REFERENCE`). Kept only
        where it lowers the loss (the part's, the known objects', the prior)."""
        if self.calibration is None or self.out_of_time() or not self.raster_plan:
            return
        cal = self.calibration
        held = torch.zeros(cal.size, dtype=torch.bool)
        # without a reference in view, the light's level and colour and the photos' white balance
        # trade with the base colour (module docstring of pbrfit.calibration): jointly they would
        # drift along that flat direction, so only the turns (with their prior) move them
        level_and_hue = () if self.scene.known else JOINT_NEEDS_REFERENCE
        for v in cal.variables:
            if v.kind in calibration.CAMERA_KINDS or v.kind == "environment_rotation" or v.kind in level_and_hue:
                held[v.index:v.index + v.size] = True
        if bool(held.all()):
            return
        started = time.monotonic()
        names = self.raster_plan[-1][1]
        space = ParameterSpace(self.values, names, self.options.bounds)
        measured = self._calibration_measures(False, 0.0)
        (part, _), others = measured[0], measured[1:]

        def terms(objective):
            scene = objective.renderer.scene
            return lambda x, vi: cal.view_terms(x, scene, vi)

        def total(u: torch.Tensor, d: torch.Tensor) -> tuple[float, float, torch.Tensor, torch.Tensor]:
            d = torch.where(held, torch.zeros_like(d), d)
            loss, de, gu, gd = part.joint_loss_and_grad(space.material, u, terms(part), d)
            for objective, material in others:
                extra, _, g = objective.calibrated_loss(material, terms(objective), d)
                loss, gd = loss + extra, gd + g
            leaf = d.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                prior = cal.prior(leaf)
                gd = gd + torch.autograd.grad(prior, leaf)[0]
            return loss + float(prior.detach()), de, gu, torch.where(held, torch.zeros_like(gd), gd)

        u = space.initial_vector().detach().clone().requires_grad_(True)
        d = torch.zeros(cal.size, dtype=torch.float64, requires_grad=True)
        before = total(u.detach(), d.detach())[0]
        opt = torch.optim.LBFGS([u, d], lr=1.0, max_iter=JOINT_EVALUATIONS, max_eval=JOINT_EVALUATIONS,
                                history_size=10, line_search_fn="strong_wolfe", tolerance_grad=1e-9,
                                tolerance_change=1e-10)

        def closure():
            opt.zero_grad()
            self.check_cancel()
            loss, de, gu, gd = total(u.detach(), d.detach())
            u.grad, d.grad = gu.nan_to_num(0.0), gd.nan_to_num(0.0)
            self.report("fit", "calibrate", loss, de)
            return torch.tensor(loss, dtype=torch.float64)

        opt.step(closure)
        u_new, d_new = u.detach(), torch.where(held, torch.zeros_like(d), d.detach())
        after = total(u_new, d_new)[0]
        log = {"joint": True, "loss_before": before, "loss_after": min(after, before), "objects": len(measured),
               "parameters": list(names), "after_stage": self.schedule[-1]["stage"] if self.schedule else None}
        if after < before:
            self.values = space.values(u_new)
            self.scene = cal.bake(self.scene, d_new)
            self._rebuild()
        else:
            log["kept"] = False
        log["seconds"] = time.monotonic() - started
        self.calibration_log.append(log)

    def _calibration_measures(self, known_only: bool, span: float) -> list:
        """What the calibration measures: (objective, fixed material) pairs, the part first (unless
        ``known_only``: its current material on its train views), then each known object on the
        train views where enough of its pixels are clear of the part (see
        :meth:`update_calibration`). ``span``: the yaw spread of the environment sampling."""
        turns = self.calibration.variables_of("environment_rotation")
        loss, workers = self.options.loss, self.options.threads
        measured = []
        if not known_only:
            space = ParameterSpace(self.values, [])
            objective = (Objective(self.renderers.raster_calibration(span), self.train, loss, self.check_cancel,
                                   workers) if turns else self.train_obj)
            measured.append((objective, space.material(space.initial_vector())))
        for k, known in enumerate(self.scene.known):
            renderer = self.renderers.raster_known(k, span)
            views = []
            for vi in self.train:
                try:
                    renderer.prepare(vi)
                except InputError:  # not in this view, or hidden by the part
                    continue
                # its pixels that see the part (or another object) take light from it that is not
                # rendered (the part's colour bleeding onto a grey ball): those are left out; where
                # too few are clear, the least blocked half stays, and a note says so
                share = renderer.blocked_share(vi)
                clear = share <= KNOWN_CLEAR
                if clear.sum() < MIN_KNOWN_PIXELS:
                    clear = share <= np.median(share)
                    self.known_notes.add(known.mesh.prim_path)
                if clear.sum() >= MIN_KNOWN_PIXELS:
                    renderer.train_subsets[vi] = renderer.train_subsets[vi][clear]
                    views.append(vi)
            if views:
                space = ParameterSpace(known.material, [])
                measured.append((Objective(renderer, views, loss, self.check_cancel, workers),
                                 space.material(space.initial_vector())))
        return measured

    def calibrate_cameras(self) -> None:
        """With camera keys in ``[calibrate]``: correct the train views' cameras to the part's
        outline in their masks (:func:`pbrfit.calibration.fit_cameras`), before anything is
        rendered for the fit, and rebuild the renderers on the corrected cameras."""
        if self.calibration is None or not any(v.kind in calibration.CAMERA_KINDS
                                                for v in self.calibration.variables):
            return
        started = time.monotonic()
        delta, log = calibration.fit_cameras(self.scene, self.calibration, check=self.check_cancel)
        self.scene = self.calibration.bake(self.scene, delta)
        self._rebuild()
        log.update(seconds=time.monotonic() - started, after_stage=None, cameras=True)
        self.calibration_log.append(log)

    def _rebuild(self) -> None:
        """Renderers and objectives on the current :attr:`scene` (after it was calibrated)."""
        self.renderers = Renderers(self.scene, self.options)
        self.clock.rebind(self.renderers)
        self.raster = self.renderers.raster_fit()
        workers = self.options.threads
        self.train_obj = Objective(self.raster, self.train, self.options.loss, self.check_cancel, workers)
        self._twin = self._path_judge = None
        self.val_obj = (Objective(self.raster, self.val, {"de2000": 1.0}, self.check_cancel, workers)
                        if self.val else None)

    def calibration_notes(self) -> list[dict]:
        """What the calibration moved, and what it cannot tell apart."""
        if self.calibration is None:
            return []
        notes = [{"severity": "note", "about": "calibration",
                  "message": f"capture calibrated ({self.calibration.rounds} rounds): {self.calibration.describe()}"}]
        for path in sorted(self.known_notes):
            notes.append({"severity": "warning", "about": "calibration",
                          "message": f"reference {path} sees the part from most of its pixels: the light the part "
                                     "reflects onto it is not rendered and can bias the exposure and white balance; "
                                     "place it farther from the part"})
        far = [e for e in self.calibration.summary() if e["z"] > 2.0]
        for e in far:
            notes.append({"severity": "warning", "about": "calibration",
                          "message": f"{e['kind'].replace('_', ' ')} of {e['of']} moved {e['z']:.1f} sigmas from the "
                                     "job's value: check the capture's record, or widen its prior if this is expected"})
        if self.calibration.settings.environment_exposure is not None or \
                self.calibration.settings.white_balance is not None:
            notes.append({"severity": "note", "about": "calibration",
                          "message": "exposure and white balance trade against the base colour: without a known "
                                     "reference in view only highlights tell them apart, so the prior keeps them "
                                     "near the job's values where the photos do not"})
        return notes

    def calibration_result(self) -> dict:
        if self.calibration is None:
            return {}
        return {"deltas": self.calibration.summary(), "rounds": self.calibration_log,
                "prior_weight": calibration.PRIOR_WEIGHT}

    def loss_notes(self) -> list[dict]:
        """A note when the job weighs SSIM: the objective compares pixels and leaves it out."""
        w = self.options.loss.get("ssim", 0.0)
        if w <= 0:
            return []
        return [{"severity": "note", "about": "loss",
                 "message": f"loss: ssim (weight {w:g}) was not fitted: the fit compares pixels (its subsets of "
                            "them); SSIM is measured on the final renders and reported"}]

    def texture_notes(self) -> list[dict]:
        """Notes on the maps: fitted at a coarser resolution than asked for, whose texels the
        photos resolve (:data:`pbrfit.texture_fit.MIN_LEVEL_PIXELS`); a fitted
        normal map written flat, as it did not beat the flat map on the validation views
        (:func:`pbrfit.texture_fit._flat_normals`)."""
        notes = []
        unresolved = [level for level in self.texture_log if level.get("skipped") == "unresolved"]
        if unresolved:  # the coarsest of them first: the fit's own resolution is half of it
            level, asked = unresolved[0], self.options.textures.resolution
            top = level["resolution"] // 2
            notes.append({"severity": "note", "about": "textures",
                          "message": f"maps fitted at {top}x{top} texels and written at {asked}x{asked}: the train "
                                     f"views see {level['resolution']}x{level['resolution']} texels through "
                                     f"{level['pixels_per_texel']:.2f} pixels each (median), too few to resolve "
                                     "them (closer or more views resolve finer maps)"})
        for level in self.texture_log:
            gate = level.get("flat_normals")
            if gate and gate.get("kept"):
                notes.append({"severity": "note", "about": textures.NORMAL,
                              "message": f"normal map: written flat; the fitted one did not improve the validation "
                                         f"views (ΔE2000 {gate['before_de2000']:.2f} with it, "
                                         f"{gate['validate_de2000']:.2f} flat): these photos do not resolve the "
                                         "surface's relief at this resolution"})
                break
        return notes

    def exposure_notes(self) -> list[dict]:
        """One note per view of fitted exposure: its stops."""
        return [{"severity": "note", "about": "exposure",
                 "message": f"view {self.scene.views[vi].name}: exposure fitted: {math.log2(k):+.2f} stops (the photo "
                            f"is {k:.3g} x the render of the fitted material; its report images are divided by it)"}
                for vi, k in self.exposure_scale.items()]

    def validate_now(self) -> float | None:
        """ΔE2000 of the current material on the validation views (raster), offered to the
        checkpoint; None without validation views."""
        if self.val_obj is None:
            return None
        space = ParameterSpace(self.values, [])
        with torch.no_grad():
            _, de = self.val_obj(space.material(space.initial_vector()))
        self.last_val = de
        self.checkpoint.offer(de, self.values)
        return de

    # --- phases --------------------------------------------------------------------------------

    def run(self):
        """All phases in order; returns the :class:`pbrfit.fit.FitResult`."""
        self.calibrate_cameras()
        self.measure_initial()
        self.raster_stages()
        if self.val_obj is not None and self.checkpoint.best < math.inf:
            self.values = self.checkpoint.values
        self.update_exposures()
        self.update_calibration()
        self.joint_calibration()
        if self.raster_plan:
            self.prune()
        self.phase_deadline = math.inf
        if self.refine_follows() and not self.out_of_time():
            self.path_refinement()
        if self.options.textures is not None and not self.out_of_time():
            self.texture_maps()
        self.update_exposures()
        if self.out_of_time():
            self.stopped = "time budget"
        return self.final_metrics()

    def measure_initial(self) -> None:
        """Iteration 0 of the history: the starting material."""
        with torch.no_grad():
            s0 = ParameterSpace(self.values, [])
            loss0, de0 = self.evaluate(s0, s0.initial_vector(), grad=False)
        self.validate_now()
        self.history.append({"iteration": 0, "stage": "initial", "loss": float(loss0), "train_de2000": float(de0),
                             "validate_de2000": self.last_val, "time": self.elapsed()})

    def raster_stages(self) -> None:
        """The staged raster fit: per stage a warm start of the newly freed parameters, then
        L-BFGS (or Adam) until the stage's budget, convergence, stalling validation or time. A
        warm start or a step the time budget interrupts is abandoned: the material stays as the
        last stage or step left it."""
        o = self.options
        freed: set[str] = set()
        for k, (stage, names, budget) in enumerate(self.raster_plan):
            if self.out_of_time():
                self.stopped = "time budget"
                break
            self.enter(f"stage:{stage}")
            self.update_exposures()
            # known objects first calibrate the capture alone; the first stage fits the colour,
            # then the material and the capture alternate
            self.update_calibration(known_only=k == 0)
            new = [n for n in names if n not in freed]
            freed.update(names)
            if self.before_layers is None and _has_layers(new):
                self.before_layers = dict(self.values)
                if self.refine_follows():  # under a time budget the structure search leaves the refinement its share
                    self.phase_deadline = self.clock.phase_deadline(STRUCTURE_SHARE)
            try:
                self.values = warm_start(self.space, self.values, new, self.search_loss, self.train_obj)
            except _OutOfTime:  # the warm start abandoned: the last stage's material stands
                self.stopped = "time budget"
                self.schedule.append({"stage": stage, "parameters": names, "iterations": 0, "warm_started": []})
                self.leave()
                break
            tried = self.try_hypotheses(names, new)
            space = ParameterSpace(self.values, names, o.bounds)
            u = space.initial_vector().clone().requires_grad_(True)
            if o.optimizer == "lbfgs":
                opt = lbfgs(u, o.check_every)
            else:
                cls = torch.optim.Adam if o.optimizer == "adam" else torch.optim.AdamW
                opt = cls([u], lr=o.learning_rate)
            start = self.evaluations
            last_loss = math.inf
            converged = early = False
            self.checkpoint.bad_checks = 0
            while self.evaluations - start < budget:
                if self.out_of_time():
                    self.stopped = "time budget"
                    break
                closure = self.closure(opt, space, u, stage)
                try:
                    if o.optimizer == "lbfgs":
                        loss = float(opt.step(closure).detach())
                    else:
                        for _ in range(o.check_every):
                            loss = float(opt.step(closure).detach())
                except _OutOfTime:  # in the middle of a step: the last whole step's material stands
                    self.stopped = "time budget"
                    break
                self.values = space.values(u.detach())
                self.validate_now()
                if self.val_obj is not None and self.checkpoint.stalled(o.patience):
                    early = True  # this stage stopped helping on validation: go to the next one
                    break
                if abs(last_loss - loss) <= 1e-4 * max(abs(loss), 1e-12):
                    converged = True
                    break
                last_loss = loss
            self.schedule.append({"stage": stage, "parameters": names, "iterations": self.evaluations - start,
                                  "warm_started": new, **({"hypotheses": tried, "structure_estimator":
                                                           self.structure_estimator()} if tried else {})})
            self.leave()
            if self.stopped == "time budget":
                break
            self.stopped = "early stopping" if early else "converged" if converged else "iterations"

    def try_hypotheses(self, names: list[str], new: list[str]) -> list[dict]:
        """Other explanations (:mod:`pbrfit.hypotheses`) of the stage's freshly warm-started
        material: the warm start and each alternative get
        :data:`pbrfit.hypotheses.HYPOTHESIS_EVALUATIONS` of L-BFGS; the best alternative replaces
        the warm start's result when it lowers :meth:`structure_evidence` by
        :data:`pbrfit.layers.LAYER_GAIN` (the simpler, first explanation wins ties). On the
        benchmark the true alternatives' short fits read 0.05-0.62 of the warm start's error and
        the false ones 0.84-0.96, which the layers stage then fitted and pruning switched off.
        Asking the alternative also to pay as a layer must (:func:`pbrfit.layers.pays`: two
        standard errors of the pixels' paired differences besides) was tried in session 55 and
        not kept: the true ones passed (Suzanne's coat 4.5, its 447 nm film 3.4 standard
        errors) and a false film was refused (1.7), but the fabric on Suzanne, refused a false
        coat (0.7), ended 0.07 further from Cycles' floor, as the detour through the coat and
        its pruning had left a better base. The margin is reported, to tell the cases apart.

        Returns what was tried, ``[{"hypothesis", "error", "chosen", "margin"}]`` (``margin``:
        the standard errors by which it beat the warm start, None for the warm start; empty
        when nothing applied: then nothing was fitted here). Sets :attr:`searched` when the search ran to its
        end (the time budget did not cut it)."""
        if not _has_layers(new) or self.out_of_time():
            return []
        try:
            found = hypotheses.alternatives(self.space, self.values, names, self.search_loss, self.train_obj)
        except _OutOfTime:
            return []
        results = []
        for label, start in ([("warm start", self.values)] + found) if found else []:
            if self.out_of_time():
                break
            space = ParameterSpace(start, names, self.options.bounds)
            u = space.initial_vector().clone().requires_grad_(True)
            opt = lbfgs(u, hypotheses.HYPOTHESIS_EVALUATIONS)
            try:
                opt.step(self.closure(opt, space, u, "layers"))
            except _OutOfTime:  # this one unfinished: decided among those fitted
                break
            values = space.values(u.detach())
            fixed = ParameterSpace(values, [])
            results.append((label, self.structure_evidence(fixed, fixed.initial_vector()), values))
        else:
            self.searched = True
        if not results:  # the time budget ran out before the first short fit: the warm start stands
            return []
        best = warm = results[0]
        challenger = min(results[1:], key=lambda r: r[1].value, default=None)
        if challenger is not None and challenger[1].value < warm[1].value * (1 - LAYER_GAIN):
            best = challenger
        self.values = best[2]
        return [{"hypothesis": label, "error": evidence.value, "chosen": label == best[0],
                 "margin": None if evidence is warm[1] else reported_margin(evidence, warm[1])}
                for label, evidence, _ in results]

    def pruning_criteria(self, space: ParameterSpace, u: torch.Tensor) -> tuple[float, Evidence]:
        """(train loss, :meth:`structure_evidence`): a layer stays only when it pays on both
        (:func:`pbrfit.layers.pays`)."""
        return self.loss_of(space, u), self.structure_evidence(space, u)

    def prune(self) -> None:
        """Switch off the layers that do not pay for themselves (:mod:`pbrfit.layers`): each
        fitted layer that is on is switched off, what it may have been compensating for is
        re-fitted (:meth:`refit_without`), and the simpler material is kept unless the layer
        bought a clear improvement of both the train loss and :meth:`structure_evidence`
        (:meth:`pruning_criteria`), the latter by
        :data:`pbrfit.layers.LAYER_SIGNIFICANCE` standard errors of its pixels' paired
        differences (a false 0.02 coat on the glossy plastic on Suzanne bought 4% of the path
        tracer's error on its 1024 pixels, 1.3 standard errors). Each criterion alone was
        measured to keep a false layer: the train loss a false coat on a glossy plastic (the
        coat renders with less noise), the noise-free error a false 0.25 anisotropy on a rough
        plastic (5% better than the truth in the raster renderer's model of Cycles). (Not
        validation: one other lighting at the
        raster renderer's sample counts preferred a false coat over the true glossy base by 15%
        where train, with more views and pixels, saw them within 1%.)

        When the time budget has ended the fit before this, the layers the fit switched on are
        still tested on the same criteria, a few renders past the budget, so that a budget never
        hands over a layer no test kept (:meth:`hurried_notes`): first all of them at once
        against the material the stages had fitted before freeing any layer (the re-fit
        without them that there is no time for: a rough plastic's 0.02 false coat, tested alone
        without a re-fit, paid 2% because the rest had grown around it), then each alone without
        re-fitting. The parameters with a simplest value are left as fitted."""
        self.enter("refine")
        if self._cancel is not None and self._cancel.is_set():
            self.leave()
            return
        hurried = self.out_of_time()
        on = [n for n in parameters_in_use(self.space, self.values) if n in LAYER_SWITCHES]
        if hurried and not on:
            self.leave()
            return
        start = self.evaluations
        pruned, tests = [], []
        if hurried and self.before_layers is not None and self._layers_do_not_pay():
            self.values = dict(self.before_layers)  # a layer the gloss stage fitted (anisotropy) may still be on
            pruned = [n for n in on if n not in parameters_in_use(self.space, self.values)]
        if not hurried or any(n not in pruned for n in on):
            self.values, more = prune_layers(self.space, self.values, self.pruning_criteria,
                                             refit=None if hurried else self.refit_without, simplify=not hurried,
                                             log=tests)
            pruned += more
        if hurried:
            self.hurried = {"tested": on, "switched_off": [n for n in on if n in pruned]}
        if pruned or tests:
            simplified = {n: self.values[n] for n in pruned if n not in LAYER_SWITCHES}
            self.schedule.append({"stage": "prune", "parameters": pruned, "iterations": self.evaluations - start,
                                  "warm_started": [], "structure_estimator": self.structure_estimator(),
                                  "simplified": simplified, "tests": tests, **({"refit": False} if hurried else {})})
        self.leave()

    @property
    def simplified(self) -> dict[str, float]:
        """``{parameter: value}`` pruning moved to their simplest value (held there after it),
        as its schedule records them (:func:`pbrfit.hypotheses.simplified_in`)."""
        return hypotheses.simplified_in(self.schedule)

    def parameters_to_refine(self, values: dict) -> list[str]:
        """The parameters the phases after pruning fit (the path refinement's steps, the texture
        fit's scalars): those in use (:func:`pbrfit.layers.parameters_in_use`) less those pruning
        moved to their simplest value, which are held there (the photos did not pay for any
        other: Adam's noisy steps would carry them off it, a sphere's specular level to 0.505)."""
        held = self.simplified
        return [n for n in parameters_in_use(self.space, values) if n not in held]

    def _layers_do_not_pay(self) -> bool:
        """Whether the layers the stages freed do not pay (:func:`pbrfit.layers.pays`) over the
        material the stages fitted before freeing them."""
        def criteria(values: dict) -> tuple[float, Evidence]:
            s = ParameterSpace(values, [])
            return self.pruning_criteria(s, s.initial_vector())

        return not pays(criteria(self.values), criteria(self.before_layers))

    def structure_cut(self) -> bool:
        """The time budget ended the structure search (the layers' warm start and the other
        structures) before its end, or before it began; the subsurface trial is then left out
        too (subsurface off, as pruning leaves it)."""
        return bool(self.clock.seconds is not None and self.raster_plan and not self.searched
                    and _has_layers(self.space.fit))

    def hurried_notes(self) -> list[dict]:
        """What the user should know when the time budget cut the structure search short: that
        the layers were not all tried (the material may lack one the part has), which layers
        :meth:`prune` tested without re-fitting and which it switched off."""
        layers = [n for n in LAYER_SWITCHES if n in self.space.fit]
        cut = self.structure_cut()
        if self.hurried is None and not cut:
            return []
        parts = []
        if cut:
            parts.append(f"not every structure was tried ({', '.join(layers)} can be fitted), so the material may "
                         "lack a layer the part has")
        if self.hurried is not None:
            off = self.hurried["switched_off"]
            kept = [n for n in self.hurried["tested"] if n not in off]
            said = "; ".join(part for part in (f"switched off {', '.join(off)}" if off else "",
                                              f"kept {', '.join(kept)}" if kept else "") if part)
            parts.append(f"the layers it had switched on were tested without re-fitting the rest ({said})")
            untried = [n for n in SIMPLEST if n in self.space.fit]
            if untried:
                parts.append(f"{' and '.join(untried)} were not tried at their simplest values")
        return [{"severity": "warning", "about": "time budget",
                 "message": "the time budget ended the fit before its structure search was done: " + "; ".join(parts)
                            + "; give a longer --time-budget (or none) for the whole search"}]

    def refit_without(self, values: dict, hold: tuple = ()) -> dict:
        """``values`` (a layer just switched off, or a parameter moved to its simplest value:
        ``hold``, not re-fitted) with the parameters still in use re-fitted:
        1-D searches of the base's scalars (a false coat often hides a wrong base roughness),
        base colour in closed form, then :data:`REFINE_EVALUATIONS` of L-BFGS."""
        keep = [n for n in parameters_in_use(self.space, values) if n not in hold]
        if not keep or self.out_of_time():
            return values
        base = [n for n in ("base_color", "roughness", "metallic", "specular_ior_level") if n in keep]
        try:
            values = warm_start(self.space, values, base, self.search_loss, self.train_obj)
            space = ParameterSpace(values, keep, self.options.bounds)
            u = space.initial_vector().clone().requires_grad_(True)
            opt = lbfgs(u, REFINE_EVALUATIONS)
            opt.step(self.closure(opt, space, u, "refine"))
        except _OutOfTime:  # out of time: as far as it got (the layer is still tested, unrefitted)
            return values
        return dict(values, **{n: v for n, v in space.values(u.detach()).items() if n in keep})

    def path_refinement(self) -> None:
        """The base colour re-solved on the check's paths (kept when the check improves), then
        Adam on path-replay gradients, fresh paths every iteration; when the checks stall, more
        paths per pixel and a smaller step (:class:`SppSchedule`) from the best material so far
        on the checks (fixed paths), which is the one kept (:class:`Checkpoint`)."""
        o = self.options
        self.enter("path")
        renderer = self.renderers.path_fit()
        # one view at a time: path-replay gradients on several threads were measured slower
        # (43 s against 35 s for the demo's 40 iterations on 2 cores); the checks, forward only,
        # gain from threads as the final metrics do
        objective = Objective(renderer, self.train, o.path_loss, self.check_cancel, 1)
        # validation views when there are any, else the train views
        check_renderer = self.renderers.path_check()
        checker = Objective(check_renderer, self.val or self.train, {"de2000": 1.0}, self.check_cancel, o.threads)
        train_checker = Objective(check_renderer, self.train, {"de2000": 1.0}, self.check_cancel, o.threads)
        started = dict(self.values)  # the raster result (auto) or the initial material (path)
        started_at = time.monotonic()
        warm, trial, trial_objectives, terms = [], {}, [], {}
        values = self.values
        if "subsurface_weight" in self.space.fit and not self.out_of_time() and not self.structure_cut():
            trial_renderer = self.renderers.subsurface_trial()
            trial_objectives = [Objective(trial_renderer, views, {"de2000": 1.0}, self.check_cancel, o.threads)
                                for views in (self.train, self.val) if views]
            values, trial, terms = self.choose_subsurface(values, train_checker, *trial_objectives)
            warm = ["subsurface_weight"]
        # Subsurface walks are far noisier than surface paths, and ΔE2000 of noisy pixels reads
        # high: with them, checks use the unbiased relative error of the trial's 4x4-pixel
        # block means instead of ΔE2000 (in single pixels the references' own noise, 8 ΔE2000
        # for a wax, weighed by 1 / ref**2 of the noisy reference, let a check 1% better carry
        # the wax on Suzanne's red from 0.93 to 1.0), the colour steps solve for the ratio the
        # trial uses (:func:`pbrfit.warm_start.solve_base_color`), and what progress reports as
        # train ΔE2000 is the train views on the check's fixed paths; else the check itself
        # when it is on the train views, and nothing when it is on validation (the iterations'
        # own 4-spp renders would read several units high from noise alone, and a second check
        # of the train views costs as much as the check: the final metrics measure them)
        noisy = values["subsurface_weight"] > self.space.bounds_of("subsurface_weight")[0]
        if noisy and not trial_objectives:  # subsurface on in the initial material, its weight frozen
            trial_renderer = self.renderers.subsurface_trial()
            trial_objectives = [Objective(trial_renderer, views, {"de2000": 1.0}, self.check_cancel, o.threads)
                                for views in (self.train, self.val) if views]
        if noisy and "subsurface_scale" in self.space.fit and not self.out_of_time():
            terms = terms or _block_terms(_trial_objectives(*trial_objectives), values)
            values, trial["scale_search"] = self.subsurface_scale_search(values, terms, train_checker,
                                                                         *trial_objectives)
            warm.append("subsurface_scale")
        # the validation views' blocks when the job has them, else the train views'
        block_checker = trial_objectives[-1] if noisy else None
        match = "ratio" if noisy else "de2000"

        def check(vals: dict) -> tuple[float, float]:
            """(the check's value, lower is better; train ΔE2000 to report)."""
            space0 = ParameterSpace(vals, [])
            m = space0.material(space0.initial_vector())
            if noisy:
                value = unbiased_relative_error(block_checker, m)
                with torch.no_grad():
                    return value, train_checker(m)[1]
            with torch.no_grad():
                value = checker(m)[1]
            if self.val:
                self.last_val = value
            return value, (math.nan if self.val else value)

        # the scale's search is its fit: Adam's noisy steps would walk it where the photos do
        # not determine it (a wax on a sphere: a factor of 2 either way within the paths' noise)
        names = [n for n in self.parameters_to_refine(values)
                 if not (n == "subsurface_scale" and "scale_search" in trial)]
        first, shown_de = check(values)
        margin = MIN_RELATIVE_IMPROVEMENT * abs(first) if noisy else MIN_IMPROVEMENT
        if "base_color" in names and not self.out_of_time():
            # the raster result's colour made up for what the raster renderer lacks
            # (interreflection, the walks): one local secant step on the check's paths
            recoloured, score, shown = self.colour_step(values, check, train_checker, match)
            if score < first:
                values, first, shown_de = recoloured, score, shown
                warm.append("base_color")
        if "roughness" in names and not self.out_of_time():
            stepped, score, shown = self.roughness_step(values, first, check, train_checker, margin, match)
            if stepped is not values:
                values, first, shown_de = stepped, score, shown
                warm.append("roughness")
        checks = [first]
        best = Checkpoint(values, first, margin)
        converged = False
        spp = SppSchedule(o.path_spp, o.path_max_spp, o.path_learning_rate)
        start = self.evaluations
        if names:
            space = ParameterSpace(values, names, o.bounds)
            u = space.initial_vector().clone().requires_grad_(True)
            opt = torch.optim.Adam([u], lr=spp.learning_rate)
            while self.evaluations - start < o.path_iterations and not self.out_of_time():
                for _ in range(min(o.check_every, o.path_iterations - (self.evaluations - start))):
                    self.check_cancel()
                    renderer.next_iteration()  # fresh paths: the seed schedule moves on
                    opt.zero_grad()
                    loss, _, grad = objective.loss_and_grad(space.material, u)
                    u.grad = grad.nan_to_num(0.0)
                    opt.step()
                    self.record("path", loss, shown_de)
                values = space.values(u.detach())
                score, shown_de = check(values)
                checks.append(score)
                best.offer(score, values)
                if best.stalled(o.patience):
                    if not spp.on_stall():
                        converged = True  # stalled at the most paths per pixel
                        break
                    renderer.settings = PathSettings(spp.spp, o.path_depth)
                    space = ParameterSpace(best.values, names, o.bounds)
                    u = space.initial_vector().clone().requires_grad_(True)
                    opt = torch.optim.Adam([u], lr=spp.learning_rate)
                    best.bad_checks = 0
        polished = []
        if "base_color" in names and best.best < first and not self.out_of_time():
            # Adam's relative L2 on noisy references drifts the colour dark (each pixel's error
            # is divided by the reference's own noisy value): the same colour step on its result
            recoloured, score, _ = self.colour_step(best.values, check, train_checker, match)
            checks.append(score)
            if best.offer(score, recoloured):
                polished.append("base_color")
        self.schedule.append({"stage": "path", "parameters": names, "iterations": self.evaluations - start,
                              "warm_started": warm, "polished": polished, "spp": [spp.start, spp.spp],
                              "check": [first, best.best],
                              "checks": checks, **({"subsurface_trial": trial} if trial else {}),
                              "check_metric": "relative_error" if noisy else "de2000",
                              "seconds": time.monotonic() - started_at, "start": started})
        self.values = best.values
        if names and not self.out_of_time():
            self.stopped = "converged" if converged else "iterations"
        self.leave()

    def colour_step(self, values: dict, check: Callable[[dict], tuple[float, float]], train_checker: Objective,
                    match: str = "de2000") -> tuple[dict, float, float]:
        """``(values with the base colour re-solved on the train views' check paths, its check,
        train ΔE2000)``: :func:`pbrfit.warm_start.solve_base_color`, local, ``match`` as there."""
        recoloured = self._recoloured(values, train_checker, match)
        score, shown = check(recoloured)
        return recoloured, score, shown

    def roughness_step(self, values: dict, score: float, check: Callable[[dict], tuple[float, float]],
                       train_checker: Objective, margin: float = MIN_IMPROVEMENT, match: str = "de2000"
                       ) -> tuple[dict, float, float]:
        """``(values, check, train ΔE2000)`` after a search of the base roughness on the check's
        fixed paths: each of :data:`ROUGHNESS_STEPS` times the current roughness, with the base
        colour re-solved for it on the train views (roughness and colour trade in the
        highlights' level), is checked, and the best is kept only when it beats ``score`` by
        ``margin`` (in the check's units); while the best is the farthest step, the search goes on that
        way (at most :data:`ROUGHNESS_ROUNDS` rounds). ``values`` itself is returned when
        nothing beats it.

        Why: the raster warm start lights the first hit directly only and reads the
        interreflection-filled regions of a self-occluding part dark; gold on Suzanne came out
        0.271 for 0.25 and the path stage's 40 noisy Adam steps did not bring it back (checks
        1.58 at the truth, 1.66 reached). A step on fixed paths compares candidates with the
        same noise, so a small move in roughness reads clearly."""
        lo, hi = self.space.bounds_of("roughness")
        best, best_score, best_shown = values, score, math.nan
        centre = values
        for _ in range(ROUGHNESS_ROUNDS):
            if self.out_of_time():
                break
            tried = []
            for factor in ROUGHNESS_STEPS:
                r = min(max(float(centre["roughness"]) * factor, lo), hi)
                if abs(r - float(centre["roughness"])) < 1e-4:
                    continue
                trial = dict(centre, roughness=r)
                self.check_cancel()
                if "base_color" in self.space.fit:
                    trial, value, shown = self.colour_step(trial, check, train_checker, match)
                else:
                    value, shown = check(trial)
                tried.append((value, factor, trial, shown))
            if not tried:
                break
            value, factor, trial, shown = min(tried, key=lambda t: t[0])
            if value >= best_score - margin:
                break
            best, best_score, best_shown, centre = trial, value, shown, trial
            if factor not in (min(ROUGHNESS_STEPS), max(ROUGHNESS_STEPS)):
                break
        return best, best_score, best_shown

    def choose_subsurface(self, values: dict, train_checker: Objective, train_trial: Objective,
                          val_trial: Objective | None = None) -> tuple[dict, dict, dict]:
        """``(values with subsurface on or off, {weight: {"train", "validate"}: its error; for
        full weight also "margin": how many standard errors it is better than off; when the
        walks do not pay on the train views, only "train" is there: the validation views are
        not rendered}, the chosen
        material's block terms when subsurface is on, else {})``: the
        raster renderer shades subsurface as diffuse (and pruning switches it off), so it is
        switched on here, at full weight (the path refinement then fits its weight and scale),
        when the path tracer's unbiased error of block means on fixed paths says so
        (:meth:`_block_terms` of ``train_trial`` and ``val_trial``,
        :meth:`pbrfit.renderers.Renderers.subsurface_trial`), each weight with the base colour
        re-solved for it on ``train_checker``'s paths (walks change the colour that renders a
        given radiance). Not under a metal (``metallic`` >= 0.5), which hides it.

        As every layer, subsurface must buy a clear improvement: the error must drop by
        :data:`pbrfit.layers.LAYER_GAIN` on the train views and, when the job has them, on the
        validation views, and the drop must be :data:`SUBSURFACE_SIGNIFICANCE` standard errors
        of the blocks' paired differences (the views' margins combined, Stouffer's z). Why: in
        single pixels the references' own noise (8 ΔE2000 for a wax at 256 samples) drowned
        the walks' gain (1% for the wax sphere); in block means the renderer's own noise took
        over: at a glossy plastic's truth on Suzanne, three independent path sets read the
        walks 39% better to 28% worse (its highlights), and the means alone put a false
        subsurface on it."""
        lo, hi = self.space.bounds_of("subsurface_weight")
        off = dict(values, subsurface_weight=lo)
        if values["metallic"] >= 0.5:
            return off, {}, {}
        objectives = _trial_objectives(train_trial, val_trial)
        trials = {w: self._recoloured(dict(values, subsurface_weight=w), train_checker) for w in (lo, hi)}
        terms, errors = {lo: {}, hi: {}}, {lo: {}, hi: {}}

        def gains(k: str) -> bool:
            return errors[hi][k] < errors[lo][k] * (1 - LAYER_GAIN)

        for k, objective in objectives.items():
            # the train views first: when the walks do not pay there, the decision is made and
            # the validation views' walks (as costly) are not rendered (the paths are a pure
            # function of the seed and the view, so the order changes no figure)
            for w in (lo, hi):
                terms[w].update(_block_terms({k: objective}, trials[w]))
                errors[w][k] = float(terms[w][k].mean())
            if not gains(k):
                break
        measured = len(terms[hi]) == len(objectives)
        if measured:
            errors[hi]["margin"] = _combined_margin(terms[lo], terms[hi])
        pays = measured and all(gains(k) for k in objectives) and errors[hi]["margin"] >= SUBSURFACE_SIGNIFICANCE
        record = {f"{w:g}": e for w, e in errors.items()}
        return (trials[hi], record, terms[hi]) if pays else (off, record, {})

    def subsurface_scale_search(self, values: dict, terms: dict, train_checker: Objective, train_trial: Objective,
                                val_trial: Objective | None = None) -> tuple[dict, dict]:
        """``(values with the subsurface scale searched, a record of the search)``, and the
        scale's tolerance in :attr:`path_tolerances`.

        The scale is searched in factors of 2 from ``values`` (whose block terms are
        ``terms``), each candidate with the base colour re-solved for it as the subsurface
        trial does (:meth:`choose_subsurface`; colour and scale trade in the level of the
        light the walks bring back), and measured on the trial's blocks; a candidate replaces
        the current scale only when it is better by :data:`SUBSURFACE_SIGNIFICANCE` standard
        errors of the paired block differences (train and validation combined). The search
        goes on in the direction that won, for at most :data:`SCALE_ROUNDS` rounds, then
        tries factors of sqrt(2) once.

        The scale is *determined by these photos* when both its factor-2 neighbours read
        significantly worse (with the colour free to compensate); else the photos cannot tell
        it within a factor of 2 and it is flagged. Why a search on fixed paths and not Adam:
        the wax's 40 Adam steps on fresh walks left the scale at 0.047 / 0.062 for 0.1, and on
        a sphere at 160 px its mean free path (0.008 scene units) is under a pixel: with the
        colour fixed, scales 0.05, 0.1 and 0.2 read within 1.5 standard errors of each other,
        while on Suzanne's ears 0.1 beat its neighbours by 1.7-4.3."""
        objectives = _trial_objectives(train_trial, val_trial)
        lo, hi = self.space.bounds_of("subsurface_scale")
        centre, centre_terms = dict(values), terms
        tried, worse = [], {}  # worse: factor -> that neighbour of the current centre reads significantly worse

        def measure(factor: float) -> tuple[dict, dict, float] | None:
            scale = min(max(float(centre["subsurface_scale"]) * factor, lo), hi)
            if abs(math.log(scale / float(centre["subsurface_scale"]))) < 1e-3:
                return None  # at a bound
            self.check_cancel()
            candidate = self._recoloured(dict(centre, subsurface_scale=scale), train_checker)
            candidate_terms = _block_terms(objectives, candidate)
            margin = _combined_margin(centre_terms, candidate_terms)
            tried.append({"scale": scale, "margin": margin,
                          "error": {k: float(t.mean()) for k, t in candidate_terms.items()}})
            return candidate, candidate_terms, margin

        def round_of(factors, move: bool = True) -> bool:
            """Measure ``factors`` of the centre; move to the best if it wins (and ``move``).
            True if moved."""
            nonlocal centre, centre_terms, worse
            measured = {f: r for f in factors if not self.out_of_time() and (r := measure(f)) is not None}
            if not measured:
                return False
            factor, (candidate, candidate_terms, margin) = max(measured.items(), key=lambda kv: kv[1][2])
            if margin < SUBSURFACE_SIGNIFICANCE or not move:
                worse.update({f: r[2] <= -SUBSURFACE_SIGNIFICANCE for f, r in measured.items()})
                return False
            centre, centre_terms = candidate, candidate_terms
            worse = {1.0 / factor: True}  # the old centre, now a neighbour, read worse
            return True

        # at most SCALE_ROUNDS moves, then the last neighbour measured (without moving) so
        # that whether the photos determine the scale is known
        for moves in range(SCALE_ROUNDS + 1):
            if not round_of([f for f in (0.5, 2.0) if f not in worse], move=moves < SCALE_ROUNDS):
                break
        determined = worse.get(0.5, False) and worse.get(2.0, False)
        found = float(centre["subsurface_scale"])
        if determined and not self.out_of_time():
            root2 = math.sqrt(2.0)
            round_of((1 / root2, root2))
        scale = float(centre["subsurface_scale"])
        self.path_tolerances["subsurface_scale"] = {
            # within a factor sqrt(2) once determined (the finer round), else a factor 2 either way
            "tolerance": scale * ((math.sqrt(2.0) - 1.0) if determined else 1.0),
            "range": hi - lo, "determined": bool(determined),
            "trades_with": None if determined else "base_color", "correlation": None,
            "method": "path search"}
        return centre, {"start": float(values["subsurface_scale"]), "factor_2": found, "found": scale,
                        "determined": bool(determined), "tried": tried}

    def _recoloured(self, values: dict, train_checker: Objective, match: str = "ratio") -> dict:
        """``values`` with the base colour re-solved on ``train_checker``'s paths
        (:func:`pbrfit.warm_start.solve_base_color`, local, ``match`` as there) when it is fitted."""
        if "base_color" not in self.space.fit:
            return values
        return dict(values, base_color=solve_base_color(train_checker, values, self.space, local=True, match=match))

    def texture_maps(self) -> None:
        """Fit the texture maps from the scalar result (:mod:`pbrfit.texture_fit`)."""
        self.enter("textures")
        started = self.evaluations
        self.maps = texture_fit.fit_maps(self, self.options.textures)
        self.schedule.append({"stage": "textures", "parameters": list(self.options.textures.maps),
                              "iterations": self.evaluations - started, "warm_started": [],
                              "levels": self.texture_log})
        self.leave()

    def final_metrics(self):
        """Render every view with the final material (:meth:`Renderers.metrics`, within the
        time budget) and measure it; returns the :class:`pbrfit.fit.FitResult`."""
        final = {n: self.values[n] for n in PARAMETERS}
        final.update({n: r.summary() for n, r in self.maps.items() if n != textures.NORMAL})
        maps = {n: torch.as_tensor(r.texels) for n, r in self.maps.items()} or None
        tolerances = {}
        if not self.out_of_time():
            started = time.monotonic()
            tolerances = identifiability.analyse(self.train_obj, final, parameters_in_use(self.space, final),
                                                 self.options.bounds, self.check_cancel, maps=maps)
            self.timings["identifiability"] = time.monotonic() - started
        tolerances.update({n: t for n, t in self.path_tolerances.items() if n in parameters_in_use(self.space, final)})
        self.enter("metrics")
        last = self.history[-1]
        self.report("final metrics", "final metrics", last["loss"], last["train_de2000"])
        self.check_cancel()
        self.clock.fit_ended()
        renderer = self.clock.metrics_renderer(self.raster, final)

        def each_view():
            self.units_done += 1
            self.report("final metrics", "final metrics", last["loss"], last["train_de2000"])

        views, metrics = evaluate_views(renderer, final, check=self.check_cancel, workers=self.options.threads,
                                        on_view=each_view, maps=maps)
        self.leave()
        self.report("final metrics", "final metrics", last["loss"], last["train_de2000"])
        changed = any(self.values[n] != self.start_values[n] for n in self.space.fit)
        notes = (fit_health.notes(metrics, self.stopped, self.schedule, self.history)
                 + identifiability.findings(tolerances, self.simplified) + list(self.scene.notes)
                 + self.clock.notes(self.stopped, changed=changed) + self.exposure_notes() + self.loss_notes()
                 + self.calibration_notes() + self.texture_notes() + self.hurried_notes())
        return FitResult(final, self.initial, list(self.space.fit), metrics, self.history, self.schedule, views,
                         self.stopped, self.elapsed(), notes, dict(self.timings), tolerances, dict(self.maps),
                         list(self.texture_log),
                         {self.scene.views[vi].name: math.log2(k) for vi, k in self.exposure_scale.items()},
                         self.calibration_result())
