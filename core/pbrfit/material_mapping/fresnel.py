"""Dielectric Fresnel reflectance at normal incidence, and the IOR Blender actually uses.

Conventions: ``ior`` is the relative index of refraction of the surface in air (>= 1 for a
surface denser than air); ``f0`` is the reflectance at normal incidence, in [0, 1].
"""

from __future__ import annotations

import math

__all__ = ["F0_MAX", "f0_from_ior", "ior_from_f0", "effective_ior"]

#: Largest F0 turned back into an IOR (MaterialX's OpenPBR graph clamps likewise); it gives
#: an IOR of about 4e5 instead of infinity.
F0_MAX = 0.99999


def f0_from_ior(ior: float) -> float:
    """Normal-incidence Fresnel reflectance ``((ior - 1) / (ior + 1))**2`` of a dielectric."""
    r = (ior - 1.0) / (ior + 1.0)
    return r * r


def ior_from_f0(f0: float) -> float:
    """The IOR (>= 1) whose normal-incidence reflectance is ``f0`` (clamped to [0, F0_MAX])."""
    s = math.sqrt(min(max(f0, 0.0), F0_MAX))
    return (1.0 + s) / (1.0 - s)


def effective_ior(ior: float, specular_ior_level: float) -> float:
    """The IOR Cycles' Principled BSDF uses for its dielectric specular lobe.

    Cycles (``svm/closure.h``, "Apply IOR adjustment"): when Specular IOR Level is not 0.5,
    ``f0 = F0(ior) * 2 * level`` and ``eta = ior_from_F0(f0)`` (inverted for ior < 1); 0.5
    leaves ``ior`` unchanged. The refraction lobe keeps the unadjusted ``ior``.
    """
    level = max(float(specular_ior_level), 0.0)
    if level == 0.5:
        return float(ior)
    eta = ior_from_f0(f0_from_ior(ior) * 2.0 * level)
    return 1.0 / eta if ior < 1.0 else eta
