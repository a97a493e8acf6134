"""Fit options: one validation for every route a setting can take.

A fit's settings come from a job file's ``[fit]`` table, from the command line, or from a
host (the Blender add-on, the Omniverse controller). Every route hands this module plain
values under the same *canonical names* (the job file's keys), and every value is checked
here, once: types, finiteness, ranges, whole numbers that fit, known names, a non-empty
parameter set. An error names the option as the user wrote it (``--loss``, or ``job
/path/job.toml: [fit] loss``) and says what is allowed.

* :func:`check_table` validates a ``[fit]`` table (or a dict of overrides) and returns
  normalized values.
* :func:`resolve` merges a table with overrides (overrides win; ``freeze`` lists are
  joined) into a validated :class:`pbrfit.fit.FitOptions`: preset -> parameters,
  light-sample scaling, paths per pixel, device.
* :func:`validate_fit_options` checks a :class:`~pbrfit.fit.FitOptions` built directly
  (``FitOptions.validate`` calls it), with the same rules.

Canonical names and what they take:

=================  ==============================================================
preset             a name in :data:`pbrfit.params.PRESETS`
parameters         parameter names to fit (non-empty)
freeze             parameter names to keep at their initial values
backend            auto, raster or path
device             auto, cpu or cuda
optimizer          lbfgs, adam or adamw
iterations         whole number, 1 .. 100000
path_iterations    whole number, 0 .. 100000 (0: no path-traced refinement)
path_spp           whole number, 1 .. 4096
path_max_spp       whole number, 1 .. 4096, at least path_spp
path_depth         whole number, 1 .. 64
samples            whole number, 1 .. 4096 (light samples per pixel)
seed               whole number, 0 .. 2**32 - 1
time_budget        seconds, a finite number > 0 (covers the whole run: see README)
loss               a loss name, or {name: weight} with finite weights >= 0, one > 0
bounds             {parameter: [lower, upper]} inside the parameter's range
threads            whole number, 1 .. 1024 (not in job files)
staged             true or false (not in job files)
=================  ==============================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

from .errors import InputError
from .losses import LOSSES, PIXEL_LOSSES
from .parallel import default_threads
from .params import DEFAULT_FIT, PARAMETERS, PRESETS
from .render import SampleCounts

__all__ = ["FitOptions", "DEFAULT_LOSS", "BACKENDS", "add_fit_arguments", "fit_overrides", "OPTION_NAMES", "JOB_KEYS",
           "CLI_LABELS", "check_table", "resolve", "validate_fit_options", "fitted_parameters",
           "sample_counts", "parse_loss", "parse_names", "resolve_device", "SEED_MAX"]

#: default objective: perceptual colour difference plus an L1 term on white-normalized
#: radiance that keeps gradients informative far from the optimum.
DEFAULT_LOSS = {"de2000": 1.0, "l1": 10.0}


@dataclass
class FitOptions:
    """How to fit.

    Attributes:
        parameters: canonical names to optimize (others stay at the initial material).
        bounds: optional per-parameter (lower, upper) overrides.
        iterations: optimizer iterations in all (objective+gradient evaluations for L-BFGS).
        time_budget: wall-clock seconds for the whole run (from ``budget_start``): the fit
            stops early enough for the final metrics to fit too (see :mod:`pbrfit.time_budget`), or None.
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
        threads: CPU threads: views rendered at once, each on one torch thread
            (:mod:`pbrfit.parallel`). Default: the cores this process may use, at most 4.
            torch's own OpenMP pool is not used: on a busy machine (a host application, a
            render beside the fit) its threads spin against other processes, and a fit with
            2 OpenMP threads was measured 8x slower than with 1.
        backend: "auto", "raster" or "path" (see :mod:`pbrfit.fit`).
        device: "cpu" or "cuda": where shading, losses and gradients run (torch) and, with
            Mitsuba installed, the ray queries (:mod:`pbrfit.scene_renderer`).
        path_iterations: iterations of the path-traced refinement (auto and path).
        path_spp: paths per pixel at the start of the refinement; path_max_spp: the most
            it rises to.
        path_depth: surface vertices per path.
        path_learning_rate: Adam's step in the unconstrained space for the refinement.
        path_loss: the refinement's objective. Default relative L2, whose gradient stays
            unbiased under Monte Carlo noise (see :func:`pbrfit.losses.relative_l2`); the
            validation checks that steer it are ΔE2000.
        textures: the maps to fit after the scalars (a job's ``[textures]`` table,
            :class:`pbrfit.textures.TextureSettings`), or None for a uniform material.
        calibrate: the capture's corrections to fit alongside the material (a job's
            ``[calibrate]`` table, :class:`pbrfit.calibration.CalibrateSettings`), or None.
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
    threads: int = field(default_factory=default_threads)
    backend: str = "auto"
    device: str = "cpu"
    path_iterations: int = 40
    path_spp: int = 4
    path_max_spp: int = 32
    path_depth: int = 4
    path_learning_rate: float = 0.02
    path_loss: dict = field(default_factory=lambda: {"relative_l2": 1.0})
    budget_start: float | None = None
    textures: object | None = None
    calibrate: object | None = None

    def validate(self) -> None:
        """Check every field (:func:`validate_fit_options`, the rules every route shares).
        Raises InputError naming the field."""
        validate_fit_options(self)


#: the largest seed (seeds are unsigned 32-bit numbers)
SEED_MAX = 2**32 - 1

#: whole-number options: (lowest, highest, what the number is)
_INTS = {
    "iterations": (1, 100_000, "optimizer iterations"),
    "path_iterations": (0, 100_000, "path-traced refinement iterations; 0 skips it"),
    "path_spp": (1, 4096, "paths per pixel"),
    "path_max_spp": (1, 4096, "paths per pixel"),
    "path_depth": (1, 64, "surface vertices per path"),
    "samples": (1, 4096, "light samples per pixel"),
    "seed": (0, SEED_MAX, "random seed"),
    "threads": (1, 1024, "CPU threads"),
}
#: the fit's renderers, default first, with what each does (hosts show these words)
BACKENDS = {
    "auto": "Rasterized fit, then a path-traced refinement (interreflection, coat, subsurface)",
    "raster": "Direct light only: fastest, misses light the part reflects onto itself",
    "path": "Only the path-traced refinement, from the current material",
}

_CHOICES = {
    "backend": tuple(BACKENDS),
    "device": ("auto", "cpu", "cuda"),
    "optimizer": ("lbfgs", "adam", "adamw"),
}

#: every canonical option name
OPTION_NAMES = ("preset", "parameters", "freeze", "backend", "device", "optimizer", "iterations", "time_budget",
                "seed", "loss", "samples", "bounds", "path_iterations", "path_spp", "path_max_spp", "path_depth",
                "threads", "staged")
#: the names a job file's ``[fit]`` table may use
JOB_KEYS = OPTION_NAMES[:-2]
#: how the command line spells each option (for messages)
CLI_LABELS = {"preset": "--preset", "parameters": "--fit", "freeze": "--freeze", "backend": "--backend",
              "device": "--device", "optimizer": "--optimizer", "iterations": "--iterations",
              "time_budget": "--time-budget", "seed": "--seed", "loss": "--loss", "samples": "--samples",
              "path_iterations": "--path-iterations", "path_spp": "--path-spp", "threads": "--threads",
              "staged": "--no-stages"}

Label = Callable[[str], str]


def table_label(source: str) -> Label:
    """Labels for a job file's ``[fit]`` table: ``"job /x/job.toml: [fit] loss"``."""
    return lambda name: f"{source}: [fit] {name}"


def cli_label(name: str) -> str:
    return CLI_LABELS.get(name, f"option '{name}'")


def host_label(name: str) -> str:
    return f"option '{name}'"


# --- one value ----------------------------------------------------------------------------

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _names(value, label: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{label}: must be a list of parameter names, got {value!r}")
    unknown = [v for v in value if v not in PARAMETERS]
    if unknown:
        raise InputError(f"{label}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(PARAMETERS)}")
    return list(dict.fromkeys(value))


def _loss(value, label: str):
    if isinstance(value, str):
        if value not in LOSSES:
            raise InputError(f"{label}: unknown loss {value!r}; known: {', '.join(LOSSES)}")
        value = {value: 1.0}
    if not isinstance(value, Mapping) or not value:
        raise InputError(f"{label}: must be a loss name or a table of {{name = weight}}, got {value!r}")
    unknown = [n for n in value if n not in LOSSES]
    if unknown:
        raise InputError(f"{label}: unknown loss {', '.join(map(repr, unknown))}; known: {', '.join(LOSSES)}")
    weights = {}
    for name, w in value.items():
        if not _is_number(w) or w < 0:
            raise InputError(f"{label}: the weight of '{name}' must be a finite number >= 0, got {w!r}")
        weights[str(name)] = float(w)
    if not any(w > 0 for w in weights.values()):
        raise InputError(f"{label}: every loss weight is 0; give at least one a positive weight")
    if not any(w > 0 for n, w in weights.items() if n in PIXEL_LOSSES):
        raise InputError(f"{label}: ssim compares image structure and cannot be fitted alone; add a per-pixel "
                         f"loss with a positive weight, e.g. {{de2000 = 1.0, ssim = 0.2}}")
    return weights


def _bounds(value, label: str) -> dict:
    if not isinstance(value, Mapping):
        raise InputError(f"{label}: must be a table of {{name = [lower, upper]}}, got {value!r}")
    out = {}
    for name, pair in value.items():
        if name not in PARAMETERS:
            raise InputError(f"{label}: unknown parameter '{name}'; known: {', '.join(PARAMETERS)}")
        spec = PARAMETERS[name]
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(_is_number(v) for v in pair)):
            raise InputError(f"{label}: bounds for '{name}' must be [lower, upper] (finite numbers), got {pair!r}")
        lo, hi = float(pair[0]), float(pair[1])
        if not (spec.lower <= lo < hi <= spec.upper):
            raise InputError(f"{label}: bounds for '{name}' must satisfy {spec.lower} <= lower < upper <= "
                             f"{spec.upper}, got [{lo:g}, {hi:g}]")
        out[name] = [lo, hi]
    return out


def check_value(name: str, value, label: str):
    """The normalized value of option ``name``; InputError (naming ``label``) when it is bad."""
    if name == "preset":
        if not isinstance(value, str) or value not in PRESETS:
            raise InputError(f"{label}: preset {value!r} is unknown; known: {', '.join(PRESETS)}")
        return value
    if name == "parameters":
        names = _names(value, label)
        if not names:
            raise InputError(f"{label}: names no parameter; name at least one (or use a preset)")
        return names
    if name == "freeze":
        return _names(value, label)
    if name in _CHOICES:
        if not isinstance(value, str) or value not in _CHOICES[name]:
            raise InputError(f"{label}: {value!r} is not one of {', '.join(_CHOICES[name])}")
        return value
    if name in _INTS:
        lo, hi, what = _INTS[name]
        if not _is_int(value) or not lo <= value <= hi:
            raise InputError(f"{label}: must be a whole number from {lo} to {hi} ({what}), got {value!r}")
        return int(value)
    if name == "time_budget":
        if not _is_number(value) or value <= 0:
            raise InputError(f"{label}: must be a finite number of seconds > 0 (leave it out for no limit), "
                             f"got {value!r}")
        return float(value)
    if name == "loss":
        return _loss(value, label)
    if name == "bounds":
        return _bounds(value, label)
    if name == "staged":
        if not isinstance(value, bool):
            raise InputError(f"{label}: must be true or false, got {value!r}")
        return value
    raise InputError(f"{label}: unknown option; known: {', '.join(OPTION_NAMES)}")


def check_table(table, *, label: Label, allowed=OPTION_NAMES, where: str = "options") -> dict:
    """Validate a dict of options (a ``[fit]`` table or overrides); None values are dropped.

    Args:
        table: {canonical name: value}.
        label: how to name an option in a message (:func:`table_label`, :func:`cli_label`).
        allowed: the names this route accepts.
        where: what the table is, for a message about unknown names.

    Returns:
        A new dict of normalized values.
    """
    if not isinstance(table, Mapping):
        raise InputError(f"{where}: must be a table of options, got {table!r}")
    unknown = [k for k in table if k not in allowed]
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(allowed)}")
    return {k: check_value(k, v, label(k)) for k, v in table.items() if v is not None}


# --- command-line text --------------------------------------------------------------------

def parse_names(text: str, label: str) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]`` (checked by :func:`check_value`)."""
    return [n.strip() for n in str(text).split(",") if n.strip()]


def parse_loss(text: str, label: str) -> dict:
    """``"de2000=1,l1=10"`` -> ``{"de2000": 1.0, "l1": 10.0}`` (a bare name weighs 1)."""
    out: dict = {}
    for part in str(text).split(","):
        if not part.strip():
            raise InputError(f"{label}: empty entry in {text!r}; write it like de2000=1,l1=10")
        name, eq, weight = part.partition("=")
        name = name.strip()
        if name in out:
            raise InputError(f"{label}: '{name}' is given twice in {text!r}")
        try:
            out[name] = float(weight) if eq else 1.0
        except ValueError:
            raise InputError(f"{label}: the weight of '{name}' is not a number: {weight.strip()!r}") from None
    return out


# --- a whole set of options ---------------------------------------------------------------

def sample_counts(light: int) -> SampleCounts:
    """Samples per strategy for ``light`` light samples per pixel (the others scale with it)."""
    return SampleCounts(light=light, cosine=max(1, light // 4), specular=max(1, light // 2), coat=max(1, light // 4))


def resolve_device(name: str | None, label: str = "--device", maps: bool = True) -> str:
    """The device a fit runs on: "auto" picks CUDA when torch sees a device and the fit has
    texture ``maps`` to fit, else the CPU; "cuda" without a device is an error.

    Why not CUDA for every fit: a scalar fit renders a few thousand pixels a view, whose
    hundreds of small kernels a step cost their launches, not arithmetic; on an H200 the demo's
    scalar fit ran slower than on a 2-core CPU (BENCHMARKS.md "GPU", session 29), where a
    texture fit, every pixel of every view, ran 6x faster (session 30). ``--device cuda``
    still puts a scalar fit on the GPU."""
    import torch

    has_cuda = torch.cuda.is_available()
    if name in (None, "auto"):
        return "cuda" if has_cuda and maps else "cpu"
    if name == "cuda" and not has_cuda:
        raise InputError(f"{label} cuda: no CUDA device is visible to this process; use cpu or auto")
    return name


def resolve(table: Mapping | None = None, overrides: Mapping | None = None, *,
            table_labels: Label = host_label, override_labels: Label = host_label,
            textures=None, calibrate=None):
    """A validated :class:`FitOptions` from a ``[fit]`` table and overrides.

    ``textures`` (a checked :class:`pbrfit.textures.TextureSettings`) and ``calibrate``
    (:class:`pbrfit.calibration.CalibrateSettings`) come from their own tables; they are
    given here so that a conflict with the parameters is named where the user chose them.

    Overrides win over the table, except ``freeze``, whose lists are joined; a preset or
    parameter list in the overrides replaces the table's choice. Both dicts are checked
    with :func:`check_value` (already-checked values pass unchanged).

    Raises:
        InputError: a bad value (named by its label), nothing left to fit,
            path_max_spp below path_spp, or subsurface named together with texture maps.
    """
    base = {k: check_value(k, v, table_labels(k)) for k, v in (table or {}).items() if v is not None}
    over = {k: check_value(k, v, override_labels(k)) for k, v in (overrides or {}).items() if v is not None}
    merged = {**base, **over}
    opts = FitOptions()

    # which parameters: the overrides' own choice wins, then the table's; a parameter list
    # beats a preset on the same route
    params, params_label = list(DEFAULT_FIT), "the default parameters"
    for source, labels in ((base, table_labels), (over, override_labels)):
        if "preset" in source:
            params, params_label = list(PRESETS[source["preset"]]), labels("preset")
        if "parameters" in source:
            params, params_label = list(source["parameters"]), labels("parameters")
    freeze = list(dict.fromkeys(base.get("freeze", []) + over.get("freeze", [])))
    opts.parameters = [n for n in params if n not in set(freeze)]
    if not opts.parameters:
        freeze_label = override_labels("freeze") if "freeze" in over else table_labels("freeze")
        raise InputError(f"nothing left to fit: {freeze_label} freezes every parameter of {params_label} "
                         f"({', '.join(params)}); fit at least one parameter")

    for key in ("iterations", "time_budget", "seed", "backend", "optimizer", "path_iterations", "path_spp",
                "path_max_spp", "path_depth", "threads", "staged"):
        if key in merged:
            setattr(opts, key, merged[key])
    if "bounds" in merged:
        opts.bounds = {k: tuple(v) for k, v in merged["bounds"].items()}
    if "loss" in merged:
        opts.loss = dict(merged["loss"])
    if "samples" in merged:
        opts.samples = sample_counts(merged["samples"])
    if opts.path_max_spp < opts.path_spp:
        if "path_max_spp" in merged:
            lab = override_labels("path_max_spp") if "path_max_spp" in over else table_labels("path_max_spp")
            raise InputError(f"{lab}: must be at least path_spp ({opts.path_spp}), got {opts.path_max_spp}")
        opts.path_max_spp = opts.path_spp  # only the start was raised: the ceiling follows it
    device_label = override_labels("device") if "device" in over else table_labels("device")
    opts.device = resolve_device(merged.get("device"), device_label, maps=textures is not None)
    opts.textures, opts.calibrate = textures, calibrate
    _check_maps_without_subsurface(opts, params_label)
    validate_fit_options(opts)
    return opts


def fitted_parameters(opts) -> list[str]:
    """The parameters a run with ``opts`` fits: ``opts.parameters``, except that the default
    list leaves subsurface out when texture maps are fitted (they cannot be fitted together
    yet; a subsurface named by the user is refused by :func:`_check_maps_without_subsurface`)."""
    names = list(opts.parameters)
    if opts.textures is not None and names == list(DEFAULT_FIT):
        names = [n for n in names if n not in ("subsurface_weight", "subsurface_scale", "subsurface_radius")]
    return names


def _check_maps_without_subsurface(opts, parameters_label: str) -> None:
    """Refuse subsurface fitted together with texture maps, naming where the parameters were chosen."""
    if opts.textures is not None and "subsurface_weight" in fitted_parameters(opts):
        raise InputError(f"{parameters_label}: subsurface cannot be fitted together with texture maps yet; "
                         "leave subsurface out (or freeze subsurface_weight) or remove the texture maps")


def validate_fit_options(opts, label: Label = host_label) -> None:
    """Check a :class:`FitOptions` with the rules above (for options built in code).

    Raises:
        InputError: naming the field.
    """
    for name in ("backend", "optimizer", "iterations", "path_iterations", "path_spp", "path_max_spp",
                 "path_depth", "seed", "threads", "staged"):
        check_value(name, getattr(opts, name), label(name))
    if opts.device not in ("cpu", "cuda"):
        raise InputError(f"{label('device')}: {opts.device!r} is not one of cpu, cuda")
    if opts.time_budget is not None:
        check_value("time_budget", opts.time_budget, label("time_budget"))
    if opts.budget_start is not None and not _is_number(opts.budget_start):
        raise InputError(f"{label('budget_start')}: must be a time.monotonic() value, got {opts.budget_start!r}")
    check_value("loss", opts.loss, label("loss"))
    check_value("loss", opts.path_loss, label("path_loss"))
    check_value("parameters", list(opts.parameters), label("parameters"))
    check_value("bounds", {k: list(v) for k, v in opts.bounds.items()}, label("bounds"))
    if opts.path_max_spp < opts.path_spp:
        raise InputError(f"{label('path_max_spp')}: must be at least path_spp ({opts.path_spp}), "
                         f"got {opts.path_max_spp}")
    for strategy in ("light", "cosine", "specular", "coat"):
        v = getattr(opts.samples, strategy)
        if not _is_int(v) or not 0 <= v <= 4096:
            raise InputError(f"{label('samples')}: {strategy} samples must be a whole number from 0 to 4096, got {v!r}")
    if opts.samples.light < 1:
        raise InputError(f"{label('samples')}: light samples must be at least 1, got {opts.samples.light}")
    for name in ("learning_rate", "path_learning_rate"):
        v = getattr(opts, name)
        if not _is_number(v) or v <= 0:
            raise InputError(f"{label(name)}: must be a finite number > 0, got {v!r}")
    for name, lo in (("max_loss_pixels", 1), ("patience", 1), ("check_every", 1)):
        v = getattr(opts, name)
        if not _is_int(v) or v < lo:
            raise InputError(f"{label(name)}: must be a whole number >= {lo}, got {v!r}")
    if opts.calibrate is not None:
        from .calibration import CalibrateSettings

        if not isinstance(opts.calibrate, CalibrateSettings):
            raise InputError(f"calibrate: expected pbrfit.calibration.CalibrateSettings, got {opts.calibrate!r}")
    if opts.textures is not None:
        from .textures import TextureSettings

        if not isinstance(opts.textures, TextureSettings):
            raise InputError(f"textures: expected pbrfit.textures.TextureSettings, got {opts.textures!r}")
        _check_maps_without_subsurface(opts, label("parameters"))


# --- the command line's fit options (pbrfit fit, scripts/blender_fit.py) -----------------

def add_fit_arguments(parser) -> None:
    """The fit options' flags on an argparse parser: the same for ``pbrfit fit`` and the
    headless Blender script; :func:`fit_overrides` reads them back as canonical names."""
    a = parser.add_argument
    a("--backend", metavar="{auto,raster,path}",
      help="auto (default): raster warm start, then path-traced refinement; raster: direct light only, fastest; "
           "path: path-traced refinement of the initial material only")
    a("--path-iterations", type=int, metavar="N",
      help="iterations of the path-traced refinement (default 40; 0 skips it)")
    a("--path-spp", type=int, metavar="N", help="paths per pixel at the start of the refinement (default 4)")
    a("--device", metavar="{auto,cpu,cuda}",
      help="where shading and gradients run (default auto: cuda when present and the job fits texture maps, else cpu)")
    a("--seed", type=int, help="random seed, 0 .. 2**32-1 (default 0)")
    a("--iterations", type=int, help="optimizer iterations in all (default 60)")
    a("--time-budget", type=float, metavar="SECONDS",
      help="bound on the whole run: reading the inputs, the fit, the final metrics and writing (setup and one quick "
           "metrics pass are a floor; see README)")
    a("--preset", metavar="NAME", help=f"named parameter set to fit ({', '.join(PRESETS)})")
    a("--fit", metavar="NAMES", help="comma-separated parameters to fit")
    a("--freeze", metavar="NAMES", help="comma-separated parameters to keep at their initial values")
    a("--loss", metavar="SPEC",
      help=f"e.g. de2000=1,l1=10 (names: {','.join(n for n in LOSSES)}; weights >= 0)")
    a("--optimizer", metavar="{lbfgs,adam,adamw}", help="default lbfgs")
    a("--samples", type=int, metavar="N", help="light samples per pixel (other strategies scale)")
    a("--no-stages", action="store_true", help="fit all parameters at once")
    a("--threads", type=int, help="CPU threads: views rendered at once (default: the cores, at most 4)")


def fit_overrides(args) -> dict:
    """The fit options given on a command line (:func:`add_fit_arguments`) under canonical
    names, checked with the rules of a job file's ``[fit]`` table."""
    o = {name: getattr(args, name, None) for name in ("preset", "backend", "optimizer", "iterations", "time_budget",
                                                     "seed", "samples", "path_iterations", "path_spp", "threads",
                                                     "device")}
    if getattr(args, "fit", None) is not None:
        o["parameters"] = parse_names(args.fit, "--fit")
    if getattr(args, "freeze", None) is not None:
        o["freeze"] = parse_names(args.freeze, "--freeze")
    if getattr(args, "loss", None) is not None:
        o["loss"] = parse_loss(args.loss, "--loss")
    if getattr(args, "no_stages", False):
        o["staged"] = False
    return check_table(o, label=cli_label, where="command line")
