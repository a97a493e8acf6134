"""Calibration of the capture alongside the material: small corrections, each with a Gaussian
prior, to what the job file says about the lighting and the camera's colour response.

A real bench is never exactly as the job states: the HDRI was shot a few degrees off in yaw
and a fraction of a stop off in exposure, the lamps' power is nominal, the camera's white
balance is its own. Each error shows up in a fit as a wrong material (dimming the light
instead of darkening the albedo). A job's optional ``[calibrate]`` table names what may move,
and by how much (the prior's standard deviation)::

    [calibrate]
    environment_rotation = 5.0    # degrees: each environment's yaw about the up axis
    environment_exposure = 0.5    # stops: each environment's intensity
    white_balance = 0.05          # the photos' per-channel gains (log, ~ relative), luminance kept
    light_intensity = 0.5         # stops: each analytic light's intensity
    light_color = 0.05            # each analytic light's R/B log gains, luminance kept
    light_direction = 2.0         # degrees: each analytic light turned about its centre
    light_position = 0.02         # metres: each light (not a distant one) moved

``white_balance`` may also be ``{sigma = 0.05, per = "view"}``: one set of gains per train
view instead of one for the whole capture (the default: one camera took every photo).

Objects of known material in the photos (a grey ball, a card) are named as references::

    [[calibrate.reference]]
    prim = "/World/GreyBall"      # a Mesh on the stage (not the part)
    material = { base_color = [0.18, 0.18, 0.18], roughness = 0.8 }   # else its bound material

They become :attr:`pbrfit.scene.FitScene.known`: rendered with their own material by their own
raster renderer (:meth:`pbrfit.renderers.Renderers.raster_known`), they hide the part where
they are in front of it and it hides them, and the calibration measures them too.

What moves, exactly (the *deltas*; all zero means the job as written):

* ``environment_rotation``: per environment (one per HDRI file lighting a train view), a yaw
  ``delta`` in radians about the dome's pole (the stage's up axis): the environment's
  ``world_from_dome`` becomes ``world_from_dome @ R_pole(delta)``, right-handed about +Y of the
  dome frame (:func:`pole_rotation`).
* ``environment_exposure``: per environment, stops: its radiance times ``2**delta``.
* ``light_intensity``: per analytic light (by prim path), stops: its radiance times ``2**delta``.
* ``light_color``: per analytic light, two log gains, its radiance times the gains ``g`` as for
  ``white_balance`` (luminance kept: a gel or a lamp's colour temperature off from the job's).
* ``light_direction``: per analytic light that has a direction (not a point or sphere light
  without a cone), a rotation vector (radians, world axes) turning the light about its own
  centre: a distant light's direction, a spot's or an area light's aim.
* ``light_position``: per analytic light but distant ones, a translation (stage units; the
  sigma is given in metres). A moved light is sampled again with the same random numbers and
  the visibility its unmoved samples had (shadows do not move with it within a round).
* ``white_balance``: two log gains ``(a_r, a_b)``; the photo is ``g * radiance`` per channel with
  ``g = exp(a_r, 0, a_b) / Y(exp(a_r, 0, a_b))`` (``Y`` the Rec.709 luminance), so white balance
  changes colour only and the level stays with the exposure.

Each delta ``d`` with prior ``sigma`` adds ``PRIOR_WEIGHT * (d / sigma)**2 / 2`` to the
objective (in its units: the default loss is mean ΔE2000 + 10 x L1 of white-normalized
radiance), so a well-calibrated rig stays put and a delta moves only as far as the photos pay for
it: one sigma costs 0.01, a hundredth of a ΔE2000 unit.

What is identifiable (and what is not):

* An environment's yaw, from where highlights and shading sit: yes, when the HDRI is not
  uniform around the pole.
* Exposure against base colour: **not** from a diffuse part alone (twice the light on half the
  albedo renders the same); the prior keeps the exposure at the job's value and the base colour
  absorbs the difference. A known object in view (a reference) makes it identifiable; so, in
  part, does a dielectric's highlight, whose level Fresnel fixes (unless its specular level is
  fitted too).
* White balance against base colour's hue: the same, except through white (dielectric)
  highlights.
* A light's colour: against white balance and the base colour's hue as above when one light
  does all the lighting; with several lights (or a light and an environment), from how the hue
  changes across the part between the regions each one lights.

The fit calibrates between its material stages (:meth:`pbrfit.fit_run.FitRun.update_calibration`):
first on the references alone (when there are any: before the part's colour can absorb what they
tell), then after each stage on the part and the references, the material held each time. The
deltas are fitted by a global search over yaw, then L-BFGS, with renderers whose environment
sampling is spread evenly over the yaws tried (``EnvironmentMap(yaw_spread=)``: sampling matched
to one orientation makes that orientation read best, through its lower noise), then baked into
the run's scene (:meth:`Calibration.bake`): every renderer after that, the path tracer and the
final metrics included, sees the calibrated capture. After the last turn, one small joint step
(:meth:`pbrfit.fit_run.FitRun.joint_calibration`: a few L-BFGS evaluations over the last stage's
material parameters and the corrections together, cameras and yaw held, and without a
reference in view the corrections that trade with the base colour too) settles what each took
from the other; it is kept only where it lowers the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .color import RGB_TO_XYZ
from .errors import InputError
from .rotation import exp_so3
from .silhouette import corrected_camera

__all__ = ["CalibrateSettings", "CALIBRATE_KEYS", "check_calibrate", "Calibration", "ViewCalibration",
           "pole_rotation", "white_balance_gains", "fit_deltas", "fit_cameras", "describe_delta",
           "CAMERA_KINDS", "PRIOR_WEIGHT", "YAW_SEARCH_SIGMAS", "YAW_REFINE_SIGMAS"]

#: the keys of ``[calibrate]`` and their default prior sigma when given as ``true``
#: (degrees, stops, log gain, stops)
CALIBRATE_KEYS = {"environment_rotation": 5.0, "environment_exposure": 0.5, "white_balance": 0.05,
                  "light_intensity": 0.5, "light_color": 0.05, "light_direction": 2.0, "light_position": 0.02,
                  "camera_rotation": 1.0, "camera_translation": 0.005, "camera_focal": 0.02}
#: largest sigma accepted per key (a prior wider than this is no prior)
_MAX_SIGMA = {"environment_rotation": 180.0, "environment_exposure": 4.0, "white_balance": 0.5,
              "light_intensity": 4.0, "light_color": 0.5, "light_direction": 30.0, "light_position": 1.0,
              "camera_rotation": 30.0, "camera_translation": 1.0, "camera_focal": 0.5}
_UNITS = {"environment_rotation": "degrees", "environment_exposure": "stops", "white_balance": "(log gain)",
          "light_intensity": "stops", "light_color": "(log gain)", "light_direction": "degrees",
          "light_position": "metres", "camera_rotation": "degrees",
          "camera_translation": "metres",
          "camera_focal": "(log scale)"}
#: the camera corrections (fitted to silhouettes: pbrfit.silhouette), and their sizes
CAMERA_KINDS = {"camera_rotation": 3, "camera_translation": 3, "camera_focal": 1}
#: a light's pose: rotation vector (radians) and translation (stage units)
LIGHT_POSE_KINDS = ("light_direction", "light_position")
#: the kinds whose sigma the job gives in degrees (held in radians)
_ANGLES = ("environment_rotation", "camera_rotation", "light_direction")
#: the objective's cost of a delta at one sigma is PRIOR_WEIGHT / 2 (loss units: see the module docstring)
PRIOR_WEIGHT = 0.02
#: the yaw's global search (the first round with the part) spans this many sigmas either side of
#: the job's yaw; later rounds search YAW_REFINE_SIGMAS either side of the current one
YAW_SEARCH_SIGMAS = 3.0
YAW_REFINE_SIGMAS = 1.0


@dataclass(frozen=True)
class CalibrateSettings:
    """A validated ``[calibrate]`` table: each sigma (None: not calibrated), in the units of
    the module docstring (rotations in radians here, degrees in the job; camera_translation in
    metres)."""

    environment_rotation: float | None = None
    environment_exposure: float | None = None
    white_balance: float | None = None
    white_balance_per: str = "job"
    light_intensity: float | None = None
    light_color: float | None = None
    light_direction: float | None = None  # radians
    light_position: float | None = None  # metres
    camera_rotation: float | None = None
    camera_translation: float | None = None
    camera_focal: float | None = None
    #: objects of known material in view: (prim path, material with canonical names or None for
    #: the one bound on the stage)
    references: tuple = ()

    def keys(self) -> list[str]:
        """The corrections fitted (keys of :data:`CALIBRATE_KEYS`)."""
        return [k for k in CALIBRATE_KEYS if getattr(self, k) is not None]


def check_calibrate(table, where: str) -> CalibrateSettings:
    """Validate a ``[calibrate]`` table; errors name ``where`` (e.g. ``job /x.toml: [calibrate]``)."""
    if not isinstance(table, dict):
        raise InputError(f"{where} must be a table, got {table!r}")
    unknown = [k for k in table if k not in CALIBRATE_KEYS and k != "reference"]
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: "
                         f"{', '.join(CALIBRATE_KEYS)}, reference")
    kw = {}
    if "reference" in table:
        kw["references"] = _references(table["reference"], f"{where} reference")
    for key, value in table.items():
        if key == "reference":
            continue
        per = None
        if isinstance(value, dict):
            extra = [k for k in value if k not in ("sigma", "per")]
            if extra:
                raise InputError(f"{where} {key}: unknown key(s) {', '.join(map(str, extra))}; known: sigma, per")
            per = value.get("per")
            value = value.get("sigma", True)
        if value is False:
            continue
        sigma = CALIBRATE_KEYS[key] if value is True else value
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) \
                or not 0 < sigma <= _MAX_SIGMA[key]:
            raise InputError(f"{where} {key}: the prior's sigma in {_UNITS[key]}, a number > 0 and at most "
                             f"{_MAX_SIGMA[key]:g} (or true for {CALIBRATE_KEYS[key]:g}), got {value!r}")
        if per is not None:
            if key != "white_balance":
                raise InputError(f"{where} {key}: 'per' applies to white_balance only")
            if per not in ("job", "view"):
                raise InputError(f"{where} white_balance per: \"job\" (one camera, the default) or \"view\", "
                                 f"got {per!r}")
            kw["white_balance_per"] = per
        kw[key] = math.radians(sigma) if key in _ANGLES else float(sigma)
    return CalibrateSettings(**kw)


def _references(value, where: str) -> tuple:
    """``[[calibrate.reference]]`` entries: ``prim`` and an optional ``material`` table."""
    from .params import normalize_material

    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: give [[calibrate.reference]] tables with prim = \"/path/to/Card\"")
    out = []
    for entry in value:
        if not isinstance(entry, dict) or not isinstance(entry.get("prim"), str) or not entry["prim"].startswith("/"):
            raise InputError(f"{where}: each needs prim = \"/path/to/Card\" (an absolute prim path), got {entry!r}")
        extra = [k for k in entry if k not in ("prim", "material")]
        if extra:
            raise InputError(f"{where} {entry['prim']}: unknown key(s) {', '.join(map(str, extra))}; known: prim, "
                             "material")
        material = entry.get("material")
        if material is not None:
            if not isinstance(material, dict):
                raise InputError(f"{where} {entry['prim']}: material must be a table of parameters, e.g. "
                                 "{ base_color = [0.18, 0.18, 0.18], roughness = 1.0 }")
            material = normalize_material(material, source=f"{where} {entry['prim']} material")
        out.append((entry["prim"], material))
    return tuple(out)


def camera_key(view) -> str:
    """What a view's camera corrections are keyed by: its camera prim (views of one camera under
    several lightings share them), or the view's name."""
    return view.camera.prim_path or view.name


def pole_rotation(yaw: float) -> np.ndarray:
    """(3, 3) rotation by ``yaw`` radians about the dome frame's +Y (its pole), right-handed."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


_LUMA = torch.as_tensor(RGB_TO_XYZ[1], dtype=torch.float64)


def white_balance_gains(log_rb: torch.Tensor) -> torch.Tensor:
    """Per-channel gains (3,) of log gains ``(a_r, a_b)``: ``exp(a_r, 0, a_b)`` over its
    luminance (so the gains change colour, not level)."""
    g = torch.exp(torch.stack([log_rb[0], torch.zeros_like(log_rb[0]), log_rb[1]]))
    return g / (g * _LUMA.to(g.dtype)).sum()


@dataclass
class ViewCalibration:
    """The deltas as they act on one view's render (tensors, differentiable; None: no change).

    Attributes:
        yaw: radians the view's environment turns about its pole (:func:`pole_rotation`).
        environment_gain: the environment's radiance multiplier.
        light_gains: (L, 3) per analytic light of the view, in its order: intensity times colour.
        light_poses: per analytic light of the view, (rotation (3,) or None, translation (3,) or
            None) moving it (:func:`pbrfit.lights.sample`); None when no light moves.
        view_gain: (3,) the photo's per-channel gains (white balance).
    """

    yaw: torch.Tensor | None = None
    environment_gain: torch.Tensor | None = None
    light_gains: torch.Tensor | None = None
    light_poses: list | None = None
    view_gain: torch.Tensor | None = None


@dataclass
class _Variable:
    kind: str       # a key of CALIBRATE_KEYS
    key: str        # environment source, light prim path, "job" or a view name
    sigma: float
    index: int      # first entry in the delta vector
    size: int = 1
    views: list = field(default_factory=list)  # the train views it acts on


class Calibration:
    """The calibration variables of a scene's train views, and what they have moved so far.

    Args:
        scene: the fit scene as loaded.
        settings: the ``[calibrate]`` table.
        train: indices of the train views.

    Raises:
        InputError: a key names something the scene lacks (``environment_*`` with no
            environment lighting a train view, ``light_*`` with no analytic light, or with none
            it can act on: ``light_position`` with distant lights only, ``light_direction`` with
            point and sphere lights without cones only), or
            ``environment_exposure`` with a view of ``exposure = "auto"`` (two exposures of
            one photo cannot both be fitted).
    """

    def __init__(self, scene, settings: CalibrateSettings, train: list[int]):
        self.settings = settings
        self.variables: list[_Variable] = []
        self.environment_of: dict[int, str] = {}  # view -> environment key of its variables
        n = 0

        def add(kind, key, sigma, size, vi):
            nonlocal n
            for v in self.variables:
                if v.kind == kind and v.key == key:
                    v.views.append(vi)
                    return
            self.variables.append(_Variable(kind, key, sigma, n, size, [vi]))
            n += size

        lit_by_environment = [vi for vi in train if float(np.max(scene.views[vi].environment.image)) > 0]
        for kind in ("environment_rotation", "environment_exposure"):
            sigma = getattr(settings, kind)
            if sigma is None:
                continue
            if not lit_by_environment:
                raise InputError(f"[calibrate] {kind}: no train view is lit by an environment (the stage's lights "
                                 "only); remove it")
            for vi in lit_by_environment:
                add(kind, scene.views[vi].environment.source, sigma, 1, vi)
                self.environment_of[vi] = scene.views[vi].environment.source
        if settings.environment_exposure is not None:
            auto = [v.name for v in scene.views if getattr(v, "exposure", 0.0) == "auto"]
            if auto:
                raise InputError(f"[calibrate] environment_exposure conflicts with exposure = \"auto\" of view "
                                 f"{auto[0]}: both would fit the same scale; use one of them")
        for kind, size in (("light_intensity", 1), ("light_color", 2), ("light_direction", 3),
                           ("light_position", 3)):
            sigma = getattr(settings, kind)
            if sigma is None:
                continue
            lit = [vi for vi in train if scene.views[vi].lights]
            if not lit:
                raise InputError(f"[calibrate] {kind}: the train views have no analytic light (UsdLux "
                                 "Distant, Sphere, Rect, Disk or Cylinder light); remove it")
            if kind == "light_position":  # metres -> the stage's units
                sigma = sigma / float(getattr(scene, "meters_per_unit", 1.0) or 1.0)
            before = len(self.variables)
            for vi in lit:
                for light in scene.views[vi].lights:
                    if kind == "light_position" and light.kind == "distant":  # no place to move
                        continue
                    if kind == "light_direction" and light.kind in ("point", "sphere") and not light.cone:
                        continue  # shines the same every way: turning it changes nothing
                    add(kind, light.prim_path, sigma, size, vi)
            if len(self.variables) == before:
                what = ("a DistantLight, which has no position" if kind == "light_position" else
                        "a point or sphere light without a cone, which shines the same every way")
                raise InputError(f"[calibrate] {kind}: every light of the train views is {what}; remove it")
        for kind, size in CAMERA_KINDS.items():
            sigma = getattr(settings, kind)
            if sigma is None:
                continue
            if kind == "camera_translation":  # metres -> the stage's units
                sigma = sigma / float(getattr(scene, "meters_per_unit", 1.0) or 1.0)
            for vi in train:
                if scene.views[vi].mask is None:
                    raise InputError(f"[calibrate] {kind}: view {scene.views[vi].name} has no mask (the photo's alpha "
                                     "or a mask file): cameras are calibrated on the part's outline; add one")
                add(kind, camera_key(scene.views[vi]), sigma, size, vi)
        if settings.white_balance is not None:
            for vi in train:
                key = "job" if settings.white_balance_per == "job" else scene.views[vi].name
                add("white_balance", key, settings.white_balance, 2, vi)
        self.size = n
        self.meters_per_unit = float(getattr(scene, "meters_per_unit", 1.0) or 1.0)
        self.sigmas = torch.zeros(n, dtype=torch.float64)
        for v in self.variables:
            self.sigmas[v.index:v.index + v.size] = v.sigma
        #: the deltas applied to the scene so far (the sum of every round's)
        self.total = torch.zeros(n, dtype=torch.float64)
        self.rounds = 0

    def __bool__(self) -> bool:
        return self.size > 0

    def variables_of(self, kind: str) -> list[_Variable]:
        return [v for v in self.variables if v.kind == kind]

    def camera_delta(self, delta: torch.Tensor, key: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The camera ``key``'s part of ``delta`` (:func:`camera_key`): its rotation (3,),
        translation (3,) and log focal scale (a 0-d tensor), zeros for what is not calibrated;
        slices of ``delta`` (differentiable)."""
        out = {k: torch.zeros(n, dtype=delta.dtype) for k, n in CAMERA_KINDS.items()}
        for v in self.variables:
            if v.key == key and v.kind in CAMERA_KINDS:
                out[v.kind] = delta[v.index:v.index + v.size]
        return out["camera_rotation"], out["camera_translation"], out["camera_focal"][0]

    def prior(self, delta: torch.Tensor) -> torch.Tensor:
        """The prior's cost of applying ``delta`` on top of :attr:`total` (see the module docstring)."""
        z = (self.total.to(delta.dtype) + delta) / self.sigmas.to(delta.dtype)
        return PRIOR_WEIGHT * 0.5 * (z * z).sum()

    def view_terms(self, delta: torch.Tensor, scene, vi: int) -> ViewCalibration:
        """How ``delta`` (on top of what the scene already has) acts on view ``vi``'s render."""
        out = ViewCalibration()
        view = scene.views[vi]
        for v in self.variables:
            d = delta[v.index:v.index + v.size]
            if v.kind == "environment_rotation" and self.environment_of.get(vi) == v.key:
                out.yaw = d[0]
            elif v.kind == "environment_exposure" and self.environment_of.get(vi) == v.key:
                out.environment_gain = torch.exp2(d[0]).reshape(1)
            elif v.kind == "white_balance" and (v.key == "job" or v.key == view.name):
                # the total so far is baked into the photo: the increment's gains on top of it
                out.view_gain = white_balance_gains(self.total[v.index:v.index + 2].to(d.dtype) + d) \
                    / white_balance_gains(self.total[v.index:v.index + 2].to(d.dtype))
        intensity = {v.key: v for v in self.variables_of("light_intensity")}
        colour = {v.key: v for v in self.variables_of("light_color")}
        if (intensity or colour) and view.lights:
            gains = []
            for li in view.lights:
                g = torch.ones(3, dtype=delta.dtype)
                if li.prim_path in intensity:
                    g = g * torch.exp2(delta[intensity[li.prim_path].index])
                if li.prim_path in colour:  # the increment on top of the colour already baked in
                    v = colour[li.prim_path]
                    total = self.total[v.index:v.index + 2].to(delta.dtype)
                    g = g * white_balance_gains(total + delta[v.index:v.index + 2]) / white_balance_gains(total)
                gains.append(g)
            out.light_gains = torch.stack(gains)
        poses = {kind: {v.key: v for v in self.variables_of(kind)} for kind in LIGHT_POSE_KINDS}
        if any(poses.values()) and view.lights:
            out.light_poses = [tuple(delta[poses[kind][li.prim_path].index:poses[kind][li.prim_path].index + 3]
                                     if li.prim_path in poses[kind] else None for kind in LIGHT_POSE_KINDS)
                               for li in view.lights]
        return out

    def bake(self, scene, delta: np.ndarray | torch.Tensor):
        """``scene`` with ``delta`` applied (environments turned and scaled, lights scaled, photos
        divided by the white-balance gains), a new object (the caller's scene is not changed);
        :attr:`total` accumulates ``delta``."""
        delta = torch.as_tensor(delta, dtype=torch.float64).detach()
        envs: dict[str, object] = {}

        def environment(env):
            if env.source not in envs:
                yaw = exposure = 0.0
                for v in self.variables:
                    if v.key == env.source and v.kind == "environment_rotation":
                        yaw = float(delta[v.index])
                    elif v.key == env.source and v.kind == "environment_exposure":
                        exposure = float(delta[v.index])
                envs[env.source] = env if not (yaw or exposure) else replace(
                    env, world_from_dome=np.asarray(env.world_from_dome) @ pole_rotation(yaw),
                    scale=np.asarray(env.scale) * 2.0 ** exposure)
            return envs[env.source]

        light_gain = {v.key: np.full(3, 2.0 ** float(delta[v.index])) for v in self.variables_of("light_intensity")}
        for v in self.variables_of("light_color"):
            ratio = (white_balance_gains(self.total[v.index:v.index + 2] + delta[v.index:v.index + 2])
                     / white_balance_gains(self.total[v.index:v.index + 2])).numpy()
            light_gain[v.key] = light_gain.get(v.key, np.ones(3)) * ratio
        cameras: dict[str, object] = {}

        def camera(view):
            key = camera_key(view)
            if key not in cameras:
                rotation, translation, log_focal = self.camera_delta(delta, key)
                moved = bool(rotation.any() or translation.any() or log_focal != 0)
                cameras[key] = corrected_camera(view.camera, rotation.numpy(), translation.numpy(),
                                                float(log_focal)) if moved else view.camera
            return cameras[key]

        pose = {}
        for v in self.variables:
            if v.kind in LIGHT_POSE_KINDS:
                pose.setdefault(v.key, {})[v.kind] = delta[v.index:v.index + 3].numpy()

        def moved(li):
            p = pose.get(li.prim_path)
            if not p:
                return li
            axes, position = np.asarray(li.axes), np.asarray(li.position)
            if "light_direction" in p:
                axes = exp_so3(torch.as_tensor(p["light_direction"])).numpy() @ axes
            if "light_position" in p:
                position = position + p["light_position"]
            return replace(li, axes=tuple(map(tuple, axes)), position=tuple(float(x) for x in position))

        wb = self.variables_of("white_balance")
        views = []
        for view in scene.views:
            lights = tuple(replace(li, radiance=tuple(float(r) * float(g) for r, g in zip(li.radiance,
                                                                                           light_gain[li.prim_path])))
                           if li.prim_path in light_gain and (light_gain[li.prim_path] != 1.0).any() else li
                           for li in view.lights)
            lights = tuple(moved(li) for li in lights)
            image = view.image
            for v in wb:
                if v.key in ("job", view.name):
                    before = white_balance_gains(self.total[v.index:v.index + 2])
                    after = white_balance_gains(self.total[v.index:v.index + 2] + delta[v.index:v.index + 2])
                    ratio = (after / before).numpy().astype(np.float32)
                    image = (image / ratio).astype(view.image.dtype)
            views.append(replace(view, environment=environment(view.environment), lights=lights, image=image,
                                 camera=camera(view)))
        self.total = self.total + delta
        self.rounds += 1
        return replace(scene, views=views)

    def summary(self) -> list[dict]:
        """Every variable's total delta, in the job's units, with its prior and z = delta / sigma."""
        out = []
        for v in self.variables:
            d = self.total[v.index:v.index + v.size]
            z = float(torch.linalg.vector_norm(d / self.sigmas[v.index:v.index + v.size]))
            entry = {"kind": v.kind, "of": v.key}
            if v.kind == "environment_rotation":
                entry.update(value=math.degrees(float(d[0])), unit="degrees", sigma=math.degrees(v.sigma))
            elif v.kind == "camera_rotation":
                entry.update(value=math.degrees(float(torch.linalg.vector_norm(d))), unit="degrees",
                             sigma=math.degrees(v.sigma), vector=[float(x) for x in d])
            elif v.kind == "light_direction":
                entry.update(value=math.degrees(float(torch.linalg.vector_norm(d))), unit="degrees",
                             sigma=math.degrees(v.sigma), vector=[float(x) for x in d])
            elif v.kind in ("camera_translation", "light_position"):
                mpu = self.meters_per_unit
                entry.update(value=float(torch.linalg.vector_norm(d)) * mpu, unit="metres", sigma=v.sigma * mpu,
                             vector=[float(x) * mpu for x in d])
            elif v.kind == "camera_focal":
                entry.update(value=math.expm1(float(d[0])), unit="relative", sigma=v.sigma)
            elif v.kind in ("white_balance", "light_color"):
                entry.update(value=[round(float(g), 5) for g in white_balance_gains(d)], unit="gain (R, G, B)",
                             sigma=v.sigma)
            else:
                entry.update(value=float(d[0]), unit="stops", sigma=v.sigma)
            entry["z"] = z
            out.append(entry)
        return out

    @classmethod
    def from_summary(cls, scene, entries: list, train: list[int]) -> tuple[Calibration, torch.Tensor]:
        """The calibration a result's :meth:`summary` (material.json ``calibration.deltas``)
        describes, on ``scene``, and the deltas to :meth:`bake` into it: what ``pbrfit validate``
        applies so that a calibrated fit is judged under the capture it was fitted to. An entry
        matches a variable by kind and key (an environment's file by name where its folder
        differs); entries that match nothing are ignored."""
        kw = {}
        for e in entries:
            if e["kind"] in CALIBRATE_KEYS:
                sigma = float(e["sigma"])
                kw[e["kind"]] = math.radians(sigma) if e["kind"] in _ANGLES else sigma
        calibration = cls(scene, CalibrateSettings(**kw), train)
        delta = torch.zeros(calibration.size, dtype=torch.float64)

        def name(key):
            return str(key).replace("\\", "/").rsplit("/", 1)[-1]

        for e in entries:
            matches = [v for v in calibration.variables if v.kind == e["kind"] and v.key == e["of"]] or \
                [v for v in calibration.variables if v.kind == e["kind"] and name(v.key) == name(e["of"])]
            for v in matches[:1]:
                d = delta[v.index:v.index + v.size]
                if v.kind in ("environment_rotation",):
                    d[0] = math.radians(e["value"])
                elif v.kind in ("white_balance", "light_color"):
                    g = [float(x) for x in e["value"]]
                    d[0], d[1] = math.log(g[0] / g[1]), math.log(g[2] / g[1])
                elif v.kind in ("camera_rotation", "camera_translation", "light_direction", "light_position"):
                    scale = 1.0 / calibration.meters_per_unit if v.kind.endswith(("translation", "position")) else 1.0
                    d[:] = torch.tensor(e["vector"], dtype=torch.float64) * scale
                elif v.kind == "camera_focal":
                    d[0] = math.log1p(e["value"])
                else:  # stops
                    d[0] = float(e["value"])
        return calibration, delta

    def describe(self) -> str:
        """One line for the notes: what moved."""
        return "; ".join(describe_delta(e) for e in self.summary())


def fit_deltas(measured: list, calibration: Calibration, *, yaw_search: float | None, evaluations: int = 15,
               on_evaluation=None, hold: tuple = ()) -> tuple[torch.Tensor, dict]:
    """The deltas (on top of :attr:`Calibration.total`) that minimize the summed loss of
    ``measured`` plus the prior: first, with ``yaw_search``, each environment's yaw on a grid
    over ``yaw_search`` sigmas either side of its current value (its views only, no gradient;
    the loss of an environment's yaw has a minimum per bright feature of the HDRI, so a gradient
    method alone finds the nearest, not the best), then L-BFGS on every delta together. The
    camera corrections (:func:`fit_cameras`) and the kinds in ``hold`` stay zero.

    Args:
        measured: (objective, material) pairs, each a fixed material (the part's current one, a
            known object's) and an :class:`pbrfit.objective.Objective` of raster renderers made
            with a ``yaw_spread`` covering the yaws tried (equally noisy at each).
        on_evaluation: called with (loss, mean ΔE2000 of the first pair) after each evaluation
            with a gradient.

    Returns:
        (the deltas, a log: {"loss_before", "loss_after", "yaw_search": {environment: {degrees,
        candidates}}, "objects": how many objects were measured}).
    """
    def total_loss(delta, grad, views=None):
        loss, de, g = 0.0, None, torch.zeros_like(delta)
        for objective, material in measured:
            scene = objective.renderer.scene
            ids = objective.view_ids if views is None else [vi for vi in views if vi in objective.view_ids]
            if not ids:
                continue
            part, d, gi = objective.calibrated_loss(material, lambda x, vi, scene=scene: calibration.view_terms(
                x, scene, vi), delta, grad=grad, views=ids)
            loss += part
            de = d if de is None else de
            if grad:
                g = g + gi
        if grad:
            leaf = delta.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                p = calibration.prior(leaf)
                g = g + torch.autograd.grad(p, leaf)[0]
            return loss + float(p.detach()), de, g
        return loss + float(calibration.prior(delta)), de, None

    delta = torch.zeros(calibration.size, dtype=torch.float64)
    if calibration.size == 0:  # nothing to move (Calibration refuses such a table; a safety net)
        loss = total_loss(delta, False)[0]
        return delta, {"loss_before": loss, "loss_after": loss, "yaw_search": {}, "objects": len(measured)}
    fixed = torch.zeros(calibration.size, dtype=torch.bool)  # the cameras: fitted to outlines (fit_cameras)
    for v in calibration.variables:
        if v.kind in CAMERA_KINDS or v.kind in hold:
            fixed[v.index:v.index + v.size] = True
    log: dict = {"loss_before": total_loss(delta, False)[0], "yaw_search": {}, "objects": len(measured)}
    if yaw_search and "environment_rotation" not in hold:
        for v in calibration.variables_of("environment_rotation"):
            start = float(calibration.total[v.index])
            span = yaw_search * v.sigma
            # 1-degree steps over the wide search, half-degree ones over a narrow one
            step = math.radians(1.0 if yaw_search >= YAW_SEARCH_SIGMAS else 0.5)
            count = int(min(73, max(11, math.ceil(2 * span / step) + 1)))
            best = (math.inf, 0.0)
            for t in np.linspace(-span, span, count):
                trial = delta.clone()
                trial[v.index] = t
                loss = total_loss(trial, False, views=v.views)[0]
                best = min(best, (loss, t))
            delta[v.index] = best[1]
            log["yaw_search"][v.key] = {"degrees": math.degrees(best[1] + start), "candidates": count,
                                        "span_degrees": math.degrees(span)}

    u = delta.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([u], lr=1.0, max_iter=evaluations, max_eval=evaluations, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-10)

    def closure():
        opt.zero_grad()
        loss, de, g = total_loss(torch.where(fixed, torch.zeros_like(u), u.detach()), True)
        u.grad = torch.where(fixed, torch.zeros_like(g), g.nan_to_num(0.0))
        if on_evaluation is not None:
            on_evaluation(loss, de if de is not None else math.nan)
        return torch.tensor(loss, dtype=torch.float64)

    opt.step(closure)
    delta = torch.where(fixed, torch.zeros_like(u), u.detach())
    log["loss_after"] = total_loss(delta, False)[0]
    if log["loss_after"] > log["loss_before"]:  # never worse than the job as it stands
        delta.zero_()
        log["loss_after"] = log["loss_before"]
    return delta, log


def fit_cameras(scene, calibration: Calibration, evaluations: int = 30, check=None) -> tuple[torch.Tensor, dict]:
    """The camera corrections (on top of :attr:`Calibration.total`) that align each train view's
    mesh outline with its mask's (:mod:`pbrfit.silhouette`: chamfer distance in pixels, plus the
    prior); the other deltas stay zero. Two passes: the contour is found again at the corrected
    cameras before the second.

    Returns:
        (the deltas, a log: {"outline_px_before", "outline_px_after"}: the mean chamfer distance).
    """
    from .raycast import RayCaster
    from .silhouette import boundary_points, chamfer, contour_points, project

    kinds = [v for v in calibration.variables if v.kind in CAMERA_KINDS]
    delta = torch.zeros(calibration.size, dtype=torch.float64)
    if not kinds:
        return delta, {}
    movable = torch.zeros(calibration.size, dtype=torch.bool)
    for v in kinds:
        movable[v.index:v.index + v.size] = True
    from .scene import merge_meshes

    # the outline of everything the masks cover: the part and the known objects in view
    mesh = merge_meshes([scene.mesh, *(k.mesh for k in scene.known)]) if scene.known else scene.mesh
    caster = RayCaster(mesh)
    views = sorted({vi for v in kinds for vi in v.views})
    boundaries = {vi: torch.as_tensor(boundary_points(scene.views[vi].mask)) for vi in views}

    def outline(d, contours):
        total = torch.zeros((), dtype=torch.float64)
        for vi in views:
            view = scene.views[vi]
            uv = project(contours[vi], view.camera, view.resolution,
                         *calibration.camera_delta(d, camera_key(view)))
            total = total + chamfer(uv, boundaries[vi])
        return total / len(views)

    def contours_at(d):
        out = {}
        for vi in views:
            view = scene.views[vi]
            rotation, translation, log_focal = calibration.camera_delta(d, camera_key(view))
            cam = corrected_camera(view.camera, rotation.numpy(), translation.numpy(), float(log_focal))
            out[vi] = contour_points(mesh, caster, cam)
        return out

    log = {}
    for _ in range(2):
        if check is not None:
            check()
        contours = contours_at(delta)
        with torch.no_grad():
            log.setdefault("outline_px_before", float(outline(delta, contours)))
        u = delta.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([u], lr=1.0, max_iter=evaluations, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-10, tolerance_change=1e-12)

        def closure(opt=opt, u=u, contours=contours):
            opt.zero_grad()
            if check is not None:
                check()
            d = torch.where(movable, u, torch.zeros_like(u))
            loss = outline(d, contours) + calibration.prior(d)
            loss.backward()
            u.grad = torch.where(movable, u.grad, torch.zeros_like(u.grad))
            return loss

        opt.step(closure)
        delta = torch.where(movable, u.detach(), torch.zeros_like(u))
    with torch.no_grad():
        log["outline_px_after"] = float(outline(delta, contours_at(delta)))
    return delta, log


def describe_delta(entry: dict) -> str:
    """One entry of :meth:`Calibration.summary` (as material.json holds it) in words."""
    of = str(entry["of"]).replace("\\", "/").rsplit("/", 1)[-1] or str(entry["of"])
    if entry["kind"] in ("white_balance", "light_color"):
        return f"{entry['kind'].replace('_', ' ')} ({of}) x({', '.join(f'{g:.3f}' for g in entry['value'])})"
    if entry["kind"] in ("camera_translation", "light_position"):
        return f"{entry['kind'].replace('_', ' ')} ({of}) {1000 * entry['value']:.1f} mm ({entry['z']:.1f} sigma)"
    if entry["kind"] == "camera_focal":
        return f"camera focal length ({of}) {100 * entry['value']:+.2f}% ({entry['z']:.1f} sigma)"
    unit = " deg" if entry["unit"] == "degrees" else " stops"
    return f"{entry['kind'].replace('_', ' ')} ({of}) {entry['value']:+.2f}{unit} ({entry['z']:.1f} sigma)"
