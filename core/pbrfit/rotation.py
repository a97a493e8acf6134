"""Rotations as rotation vectors (axis times angle in radians), differentiable: the small
corrections that calibration applies to cameras and lights."""

from __future__ import annotations

import torch

__all__ = ["exp_so3"]


def exp_so3(w: torch.Tensor) -> torch.Tensor:
    """The rotation matrix (3, 3) of rotation vector ``w`` (3,): ``exp([w]x)``, right-handed,
    acting on column vectors; differentiable, exact at ``w = 0``."""
    zero = torch.zeros((), dtype=w.dtype)
    k = torch.stack([torch.stack([zero, -w[2], w[1]]), torch.stack([w[2], zero, -w[0]]),
                     torch.stack([-w[1], w[0], zero])])
    return torch.linalg.matrix_exp(k)
