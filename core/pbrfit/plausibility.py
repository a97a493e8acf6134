"""Physical plausibility of a fitted material: what a materials engineer should look at.

A fit can match the photographs with values no real surface has: a half-metal, a base colour
brighter than snow, a coat rougher than what it covers, a parameter that ran into its bound.
:func:`check` returns those as :class:`Flag` objects with a one-line reason each. Flags are
advice, never errors raised: the material is still written.

Severities: ``"error"`` for values no real surface of that kind has (e.g. an IOR below 1),
``"warning"`` for values that are possible but unusual enough to deserve a second look.

Conventions: values are canonical (see :mod:`pbrfit.params`): colours linear Rec.709 in
[0, 1], roughness perceptual (GGX alpha = r**2), thin film thickness in nm. Luminance is
linear Rec.709 / sRGB relative luminance Y = 0.2126 R + 0.7152 G + 0.0722 B (ITU-R BT.709).
Fresnel F0 of a dielectric in air and Blender's effective IOR after Specular IOR Level come
from :mod:`pbrfit.material_mapping`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from .material_mapping import effective_ior, f0_from_ior
from .params import PARAMETERS, normalize_material

__all__ = ["Flag", "check", "findings", "luminance"]

# --- thresholds, with where they come from ------------------------------------------------

#: Metallic values strictly between these are mixtures. Real surfaces are conductors or
#: dielectrics; in-between values only describe blends (dirt or oxide over metal, sub-pixel
#: mixtures). Burley, "Physically-Based Shading at Disney" (SIGGRAPH 2012 course notes):
#: metallic is "a linear blend between two different models"; Unreal Engine's "Physically
#: Based Materials" documentation: "for pure surfaces ... metallic will be either 0 or 1".
METALLIC_MIXTURE = (0.1, 0.9)

#: Diffuse albedo (luminance of base_color) real dielectrics reach. Charcoal and fresh
#: asphalt sit near 0.02-0.04, fresh snow near 0.8-0.9 (Unreal Engine "Physically Based
#: Materials" base colour chart, linear values; Hoffman, "Physics and Math of Shading",
#: SIGGRAPH 2015 course). Only engineered reflectance standards (e.g. sintered PTFE) exceed
#: 0.95; nothing ordinary is blacker than ~0.02 without a light-trapping microstructure.
DIELECTRIC_ALBEDO = (0.02, 0.9)

#: Lowest luminance of a common metal's F0 (its base_color in Blender's F82-tint model).
#: Measured F0 (linear, RGB) from Hoffman's tables (SIGGRAPH 2015 course, reproduced in
#: Real-Time Rendering 4th ed., table 9.2): titanium (0.542, 0.497, 0.449) Y ~ 0.50,
#: chromium (0.549, 0.556, 0.554) Y ~ 0.55, iron (0.562, 0.565, 0.578) Y ~ 0.57; silver,
#: aluminium and gold are far brighter. A darker "metal" is usually a dark dielectric, an
#: oxidised surface, or an exposure mismatch.
METAL_F0_MIN_LUMINANCE = 0.45

#: IOR outside this range is not a dielectric a product surface is made of: vacuum is 1,
#: diamond 2.42, rutile (TiO2) ~2.6-2.9 (refractiveindex.info). Beyond it the value is an
#: artefact of the fit (used to fake a brighter or dimmer specular).
IOR_ERROR_RANGE = (1.0, 3.0)

#: Effective IOR (after Specular IOR Level) of real dielectrics: water 1.33 (F0 0.02),
#: common plastics and glass 1.45-1.6 (F0 0.034-0.053), sapphire 1.77, diamond 2.42 (F0
#: 0.17). Hoffman's F0 table (same source as above) spans 0.02-0.17 for dielectrics.
EFFECTIVE_IOR_RANGE = (1.3, 2.5)
#: Below this effective IOR the surface has practically no specular reflection (F0 < 6e-4),
#: which no solid surface in air has.
EFFECTIVE_IOR_MIN = 1.05

#: Thin-film interference colours are visible only for films up to about a micrometre:
#: thicker films run through many interference orders within the visible band and average
#: out to a colourless reflection (Newton's colour series fades to white after the 4th-5th
#: order, ~1 um for n ~ 1.4), so a fitted thickness there is not identifiable.
THIN_FILM_MAX_NM = 1000.0
#: Thinner films do nothing visible (Cycles skips the film below 0.1 nm; below a few nm the
#: optical path difference is negligible against visible wavelengths).
THIN_FILM_ACTIVE_NM = 1.0
#: A film whose index matches the base's within this is optically invisible (no reflection
#: at the film/base interface, hence no interference), so its thickness is unidentified.
THIN_FILM_IOR_MATCH = 0.02

#: A fitted value this close to a bound, as a fraction of the bound range (of its
#: logarithm for log-scaled parameters), is "pinned": the optimum may lie outside.
PINNED_FRACTION = 0.01

#: Layer weights below which a layer's own parameters have no effect worth judging.
LAYER_ACTIVE = 0.05

#: A clear coat (lacquer, automotive clear, varnish) cures from a levelled liquid film and
#: is normally smoother than what it covers; a fitted coat rougher than the base by more
#: than this, at high coat weight, usually means the fit swapped the two specular lobes.
COAT_ROUGHER_MARGIN = 0.05
COAT_HIGH_WEIGHT = 0.5

#: Sheen models the grazing retro-reflection of fibres (Estevez and Kulla, "Production
#: Friendly Microfacet Sheen BRDF", 2017; Blender's Principled sheen): cloth, velvet, dust.
#: On a metal it usually stands in for something else (F82 tint, roughness, a dust layer).
SHEEN_ON_METAL_WEIGHT = 0.1

# Bounds of the parameter *domain* that are legitimate answers, not clipping: metal or not,
# a layer fully off or fully on, no anisotropy, no film, a colour at full reflectance (F0 of
# gold's red channel is ~1.0) or a neutral tint. The rotation is periodic: both ends are the
# same direction. A user-narrowed bound is never natural.
_NATURAL_LOWER = {"metallic", "coat_weight", "sheen_weight", "subsurface_weight", "transmission_weight",
                  "anisotropic", "anisotropic_rotation", "thin_film_thickness"}
_NATURAL_UPPER = {"metallic", "coat_weight", "sheen_weight", "subsurface_weight", "transmission_weight",
                  "anisotropic_rotation", "base_color", "specular_tint", "coat_tint", "sheen_tint"}


@dataclass(frozen=True)
class Flag:
    """One finding.

    Attributes:
        parameter: the canonical parameter the finding is about.
        severity: ``"warning"`` or ``"error"``.
        message: one line: the value, why it is suspicious, what to check.
    """

    parameter: str
    severity: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"parameter": self.parameter, "severity": self.severity, "message": self.message}


def luminance(rgb: Iterable[float]) -> float:
    """Relative luminance of a linear Rec.709 colour (BT.709 weights)."""
    r, g, b = (float(v) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _fmt(v, name: str | None = None) -> str:
    """A value for a message, with its unit where it has a physical one."""
    if isinstance(v, (list, tuple)):
        text = "(" + ", ".join(f"{float(x):.3g}" for x in v) + ")"
    else:
        text = f"{float(v):.4g}"
    unit = PARAMETERS[name].unit if name in PARAMETERS else ""
    return f"{text} {unit}" if unit in ("nm", "turns", "scene units") else text


def _active(name: str, m: Mapping) -> bool:
    """Whether ``name`` influences the appearance enough to judge it."""
    if name.startswith("coat_"):
        return m["coat_weight"] >= LAYER_ACTIVE
    if name.startswith("sheen_"):
        return m["sheen_weight"] >= LAYER_ACTIVE
    if name.startswith("subsurface_"):
        return m["subsurface_weight"] >= LAYER_ACTIVE
    if name == "thin_film_ior":
        return m["thin_film_thickness"] > THIN_FILM_ACTIVE_NM
    if name == "anisotropic_rotation":
        return m["anisotropic"] >= LAYER_ACTIVE
    if name in ("ior", "specular_ior_level"):
        return m["metallic"] < 0.99 or m["transmission_weight"] >= LAYER_ACTIVE
    return True


def _pinned(name: str, value, lo: float, hi: float) -> str | None:
    """A message if a value sits within PINNED_FRACTION of a non-natural bound."""
    spec = PARAMETERS[name]
    vals = value if isinstance(value, (list, tuple)) else [value]
    logscale = spec.transform == "logbox"
    f = (lambda x: math.log(max(x, 1e-30))) if logscale else (lambda x: x)
    tol = PINNED_FRACTION * (f(hi) - f(lo))
    hits = []
    for v in vals:
        if f(v) - f(lo) <= tol and not (name in _NATURAL_LOWER and lo == spec.lower):
            hits.append(("lower", lo))
        elif f(hi) - f(v) <= tol and not (name in _NATURAL_UPPER and hi == spec.upper):
            hits.append(("upper", hi))
    if not hits:
        return None
    side, bound = hits[0]
    which = "" if spec.size == 1 else f" ({len(hits)} of {spec.size} channels)"
    return (f"{name} = {_fmt(value, name)} is pinned at its {side} bound {bound:g}{which}: the best fit may "
            f"lie outside the allowed range; check lighting, exposure and masks, or widen the bound")


def check(material: Mapping[str, object], fitted: Iterable[str],
          bounds: Mapping[str, tuple[float, float]] | None = None) -> list[Flag]:
    """Flag physically implausible or suspicious values of a (fitted) material.

    Args:
        material: canonical-name values (missing names take Blender's defaults).
        fitted: names of the parameters the fit optimized; only these are checked for
            being pinned at a bound, and messages say whether a value was fitted or given.
        bounds: the fit's ``{name: (lower, upper)}`` overrides, if any (defaults from
            :data:`pbrfit.params.PARAMETERS`).

    Returns:
        Flags, errors first, then in canonical parameter order within a severity.

    Raises:
        InputError: an unknown parameter name or a malformed value (see
            :func:`pbrfit.params.normalize_material`).
    """
    m = normalize_material(material, source="material to check")
    fitted = set(fitted)
    bounds = dict(bounds or {})
    flags: list[Flag] = []

    def add(name: str, severity: str, text: str) -> None:
        origin = "fitted" if name in fitted else "given, not fitted"
        flags.append(Flag(name, severity, f"{name} = {_fmt(m[name], name)} ({origin}): {text}"))

    metallic = m["metallic"]
    is_metal = metallic >= 0.5

    if METALLIC_MIXTURE[0] < metallic < METALLIC_MIXTURE[1]:
        add("metallic", "warning",
            "real surfaces are either metal or not; values between 0.1 and 0.9 only describe blends "
            "(dirt or oxide over metal); expect 0 or 1 for a clean, uniform part")

    albedo = luminance(m["base_color"])
    if not is_metal and m["transmission_weight"] < 0.5:
        if albedo > DIELECTRIC_ALBEDO[1]:
            add("base_color", "warning",
                f"albedo (luminance) {albedo:.3f} is above ~0.9, brighter than fresh snow or white paint; "
                "check the exposure and the lighting's intensity")
        elif albedo < DIELECTRIC_ALBEDO[0]:
            add("base_color", "warning",
                f"albedo (luminance) {albedo:.3f} is below ~0.02, darker than charcoal; "
                "check the exposure, or whether the part is a metal")
    if is_metal and albedo < METAL_F0_MIN_LUMINANCE:
        add("base_color", "warning",
            f"metal F0 luminance {albedo:.3f} is below {METAL_F0_MIN_LUMINANCE}; no common metal is that dark "
            "at normal incidence (titanium, the darkest, is ~0.50); likely a dark dielectric, an oxide, "
            "or an exposure mismatch")

    for name, active in (("ior", _active("ior", m)), ("coat_ior", _active("coat_ior", m))):
        if not active:
            continue
        v, plausible = m[name], PARAMETERS[name].plausible
        if not IOR_ERROR_RANGE[0] <= v <= IOR_ERROR_RANGE[1]:
            add(name, "error", f"outside [{IOR_ERROR_RANGE[0]}, {IOR_ERROR_RANGE[1]}], the range of real "
                               "dielectrics (vacuum 1.0 to rutile ~2.9)")
        elif plausible and not plausible[0] <= v <= plausible[1]:
            kind = "coats and lacquers" if name == "coat_ior" else "plastics, glass, paints and ceramics"
            add(name, "warning", f"outside [{plausible[0]}, {plausible[1]}], the usual range of {kind}")

    level = m["specular_ior_level"]
    if _active("specular_ior_level", m) and abs(level - 0.5) > 0.005:
        eta = effective_ior(m["ior"], level)
        f0 = f0_from_ior(eta)
        detail = f"the effective IOR is {eta:.2f} (F0 {f0:.3f})"
        if eta < EFFECTIVE_IOR_MIN or eta > IOR_ERROR_RANGE[1]:
            add("specular_ior_level", "error",
                f"{detail}: no real dielectric surface reflects {'that little' if eta < 2 else 'that much'} "
                "at normal incidence (F0 0.02 water to 0.17 diamond)")
        elif not EFFECTIVE_IOR_RANGE[0] <= eta <= EFFECTIVE_IOR_RANGE[1]:
            add("specular_ior_level", "warning",
                f"{detail}, outside real dielectrics' {EFFECTIVE_IOR_RANGE[0]}-{EFFECTIVE_IOR_RANGE[1]} "
                "(F0 0.02 water to 0.17 diamond); the specular may be compensating for lighting or roughness")

    thickness = m["thin_film_thickness"]
    if thickness > THIN_FILM_MAX_NM:
        add("thin_film_thickness", "warning",
            f"beyond ~{THIN_FILM_MAX_NM:g} nm interference colours average out to a colourless reflection, "
            "so this thickness is not determined by the images")
    if _active("thin_film_ior", m):
        v, plausible = m["thin_film_ior"], PARAMETERS["thin_film_ior"].plausible
        if not IOR_ERROR_RANGE[0] <= v <= IOR_ERROR_RANGE[1]:
            add("thin_film_ior", "error", f"outside [{IOR_ERROR_RANGE[0]}, {IOR_ERROR_RANGE[1]}], the range of "
                                          "real film materials (oxides, oils, polymers)")
        elif plausible and not plausible[0] <= v <= plausible[1]:
            add("thin_film_ior", "warning", f"outside [{plausible[0]}, {plausible[1]}], the range of common "
                                            "films (oils ~1.4-1.5, oxides such as TiO2 up to ~2.6)")
        elif "thin_film_ior" in fitted and abs(v - m["ior"]) < THIN_FILM_IOR_MATCH and not is_metal:
            add("thin_film_ior", "warning",
                f"matches the base ior {m['ior']:.3g}: such a film is optically invisible and its thickness "
                "is not determined by the images")

    if (m["coat_weight"] >= COAT_HIGH_WEIGHT
            and m["coat_roughness"] > m["roughness"] + COAT_ROUGHER_MARGIN):
        add("coat_roughness", "warning",
            f"the coat is rougher than the base (roughness {m['roughness']:.3g}) at coat_weight "
            f"{m['coat_weight']:.2g}; clear coats are normally smoother than what they cover, so the fit "
            "may have swapped the coat and base highlights")

    if is_metal and m["sheen_weight"] > SHEEN_ON_METAL_WEIGHT:
        add("sheen_weight", "warning",
            f"sheen on a metal (metallic {metallic:.2g}): sheen models fibres (cloth, velvet, dust); on a "
            "metal it usually stands in for a missing specular tint or roughness")

    for name in PARAMETERS:
        if name in fitted and _active(name, m):
            lo, hi = bounds.get(name, (PARAMETERS[name].lower, PARAMETERS[name].upper))
            msg = _pinned(name, m[name], float(lo), float(hi))
            if msg:
                flags.append(Flag(name, "warning", msg))

    order = {n: i for i, n in enumerate(PARAMETERS)}
    flags.sort(key=lambda f: (f.severity != "error", order.get(f.parameter, len(order))))
    return flags


def findings(material: Mapping[str, object], fitted: Iterable[str],
             bounds: Mapping[str, tuple[float, float]] | None = None, notes: Iterable[Mapping] = ()) -> list[dict]:
    """Everything a user should see about a fitted material, as ``{parameter, severity,
    message}`` dicts: the plausibility flags (:func:`check`) and the run's notes (a time
    budget, a downsampled reference, ...: ``{about, severity, message}``). The same list
    goes into material.json, report.html and both hosts' panels."""
    out = [f.as_dict() for f in check(material, fitted, bounds)]
    out += [{"parameter": n.get("about", ""), "severity": n.get("severity", "note"), "message": n["message"]}
            for n in notes]
    return out
