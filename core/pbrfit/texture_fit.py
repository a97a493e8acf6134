"""The fit of texture maps: the "textures" phase of a :class:`pbrfit.fit_run.FitRun`.

It starts after the scalar fit, from maps that hold the scalar result everywhere (the
scalar fit is the warm start and the prior), and optimizes every map and the scalars still
in use together:

* **Objective**: the run's image loss on *every* loss pixel of every train view (a raster
  renderer without a pixel subset, :meth:`pbrfit.renderers.Renderers.raster_textures`),
  each pixel of a fit with a normal map as the camera's pixel filter averages its
  neighbours (``filter_pixels``: the bumps are as fine as the pixels), plus per map
  ``tv_weight`` x total variation and ``prior_weight`` x the squared distance
  to the scalar value weighted by 1 / (1 + how much train pixels see the texel), both on
  the parameter's normalized [0, 1] range (:mod:`pbrfit.textures`).
* **Coarse to fine**: the maps are fitted at 1/8, 1/4, 1/2 and the full resolution in turn
  (the full resolution being the finest the train pixels resolve, :data:`MIN_LEVEL_PIXELS`:
  the resolution asked for or a half, a quarter..., the maps upsampled from it at the end),
  each level starting from the last one upsampled: the base colour by per-texel least
  squares, the scalars still fitted by a 1-D search on the fit's own renderer, the other
  scalar maps (roughness, metallic, ...) by a search for the few materials the photos need
  and each texel's among them on the coarse levels (:func:`_texel_search`), then
  ``iterations / levels`` Adam steps on the maps with a cosine-decaying step (on the levels
  coarser than half the resolution, a step that renders takes every :data:`COARSE_STRIDE`-th
  pixel, in turn, at the pixel centres). With a normal map beside a base colour map, the
  levels from half the resolution start from the colours snapped to their few inks and hold
  them for the first :data:`COLOUR_FIRST_SHARE` of the steps, so the shading within an ink
  goes to the normals. After each
  level the validation views (when the job has them) are measured on every pixel; a level
  that makes them worse by more than :data:`LEVEL_TOLERANCE` ends the climb and the best
  level's maps are kept (upsampled to the full resolution). Where a level's steps render
  every pixel, the validation views are also measured every :data:`LEVEL_CHECK_EVERY` steps
  and a check worse than the best level ends the climb there (early stopping). The scalars
  are re-fitted by L-BFGS with the final maps held.
* **Unseen texels**: texels no train pixel reaches (beyond the smoothing the regularizers
  give) are filled from their neighbours (:func:`pbrfit.textures.fill_unseen`) and
  counted: :attr:`MapResult.observed`.
* **Stand-ins**: where the render is simple in the maps, the Adam steps render through a
  per-pixel stand-in built from a few renders while the scalars are held: affine in a
  dielectric's base colour (:class:`_AffineInBaseColor`), or, for roughness and metallic
  maps, affine in metallic and tabulated over roughness (:class:`_TabulatedInRoughness`,
  which the palette search uses too). Other maps (a normal map) render every step.

Scalars keep L-BFGS when no maps are fitted; maps use Adam (thousands of texels, stochastic
regularizer balance, and L-BFGS's line search costs several renders per step).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from .layers import PRUNE_TOLERANCE, SIMPLEST
from .objective import Objective
from .parallel import map_ordered
from .params import PARAMETERS, ParameterSpace, from_unconstrained, to_unconstrained
from .render import apply_taps
from .textures import (
    FLAT_NORMAL,
    NORMAL,
    TextureSettings,
    fill_unseen,
    initial_grid,
    is_map,
    lookup,
    map_values,
    normalized,
    pyramid,
    splat,
    texel_weights,
    total_variation,
    variable_channels,
)
from .warm_start import grid_values as search_grid

__all__ = ["MapResult", "fit_maps", "map_units", "prior_weights", "regularizer"]


@dataclass
class MapResult:
    """One fitted map.

    Attributes:
        name: the parameter.
        texels: (H, W, C) float32 in the parameter's units, row 0 at the top of the image
            (:mod:`pbrfit.textures`).
        observed: (H, W) bool: texels the train pixels constrain (the rest were filled).
        weight: (H, W) float32: how much train pixels see each texel (bilinear weights summed).
        uv: the mesh's texture coordinate primvar the map is laid out on.
    """

    name: str
    texels: np.ndarray
    observed: np.ndarray
    weight: np.ndarray
    uv: str = "st"

    @property
    def observed_share(self) -> float:
        return float(self.observed.mean())

    def summary(self):
        """The map's mean over its observed texels: the scalar that stands for it (a normal
        map has none: None)."""
        if self.name == NORMAL:
            return None
        sel = self.texels[self.observed] if self.observed.any() else self.texels.reshape(-1, self.texels.shape[-1])
        mean = sel.reshape(-1, self.texels.shape[-1]).mean(0)
        return [float(v) for v in mean] if PARAMETERS[self.name].size > 1 else float(mean[0])


def map_units(settings: TextureSettings) -> int:
    """The progress units of the phase: one per Adam step."""
    return settings.iterations


class _Layout:
    """The flat optimization vector: the scalars in use, then each map's grid (row-major)."""

    def __init__(self, space: ParameterSpace, maps: tuple[str, ...], size: int, bounds: dict):
        self.space, self.maps, self.size, self.bounds = space, maps, size, bounds
        self.slices = {}
        i = space.dim
        for n in maps:
            c = variable_channels(n)
            self.slices[n] = slice(i, i + size * size * c)
            i += size * size * c
        self.dim = i

    def grid(self, u: torch.Tensor, name: str) -> torch.Tensor:
        return u[self.slices[name]].reshape(self.size, self.size, variable_channels(name))

    def material(self, u: torch.Tensor) -> dict:
        m = self.space.material(u[: self.space.dim])
        for n in self.maps:
            m[n] = map_values(n, self.grid(u, n), self.bounds[n]).float()
        return m

    def pack(self, scalars: torch.Tensor, grids: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([scalars.float()] + [grids[n].reshape(-1).float() for n in self.maps])


#: least-squares passes on the base colour map at the start of each pyramid level; one where
#: the render is affine in it (:meth:`_AffineInBaseColor.exact_for`: a dielectric, whatever
#: other maps it has), where a second gives the same
BASE_COLOR_PASSES = 2
#: with a normal map fitted beside a base colour map, each level at half the resolution or
#: finer starts from the base colour map snapped to its few colours (:func:`_snap_colours`)
#: and holds it for this share of the level's Adam steps. The per-texel least squares, done
#: under the coarser level's flatter normals, takes the bumps' shading into the colours;
#: given a free colour, the normals' only evidence is the weak specular, and Adam moved them
#: by the sample sets' noise alone. Held to its inks, the colour leaves the shading within
#: each to the normals (woven fabric, 256², Cycles-judged: 4.62 -> 3.92 ΔE2000, novel cameras
#: 5.77 -> 5.22, normals 17.8 -> 14.1 degrees from the truth, base colour 20.2 -> 22.5 dB)
COLOUR_FIRST_SHARE = 0.5
#: the normal map's pull toward flat weighs this much more than the other maps' pull toward
#: the scalar fit: its slopes are unbounded and the renders constrain them weakly, so at the
#: weights the other maps use it fitted noise (Cycles-judged embossed panel, free slopes:
#: 4.41 ΔE2000 and 13.5 degrees from the truth at 1x, 4.13 and 11.8 at 10x, 3.92 and 10.7 at
#: 50x; a flat map: 3.98, 9.8)
NORMAL_PRIOR = 50.0
#: and its total variation (of the slopes: the height field's curvature) this much more. On
#: raster references 15x fitted the embossed panel's ramps steeper and closer to the truth
#: (128² map, 4 views of 128 px: 6.91 -> 4.57 degrees, `scripts/tune_normal_smoothness.py`),
#: but judged against Cycles' references it was worse: 7.8 -> 8.6 degrees, the plateaus 3.9 ->
#: 6.5 (they took up what Cycles renders and pbrfit does not), 256² map, 4 views of 256 px.
#: That was the steps' noise (:data:`HELD_DIRECTIONS`): with the sampled directions held, 25x
#: fitted the ramps steeper against Cycles' references too (session 39: 50x 5.96 degrees, 25x
#: 5.53, 12x 5.42; plateaus 2.47, 2.97, 3.51; Cycles-judged 2.20 -> 2.11 ΔE2000 at 25x)
NORMAL_SMOOTHNESS = 25.0
#: the normal map's Adam step is this many times :attr:`TextureSettings.learning_rate` (the
#: other maps'): its slopes start flat and the ramps must travel far, where the steps at the
#: shared rate stopped short of what the fit's own objective prefers (session 40, embossed
#: panel: the truth scored 3.054 on it, the fit 3.110, its ramps 0.73 of the truth's tilt);
#: at 2x 0.76 of it, normals 5.53 -> 5.37 degrees, the fit's validation 1.923 -> 1.887
#: ΔE2000 at the same cost (twice the steps: 5.27, 1.880); neutral on the woven fabric,
#: whose base colour map keeps the shared rate (10.94 -> 10.81 degrees, 4.01 -> 4.03)
NORMAL_RATE = 2.0
#: on a level whose steps render every pixel (no stand-in, no stride) the scalars still fitted
#: are stepped with the maps, at this multiple of the rate; elsewhere they are held (a stand-in
#: is built for one material). Held, they stay where the scalar fit under the flat map put
#: them: the embossed panel's roughness at 0.42 for 0.3, taking up the ramps' missing
#: shading. And the steps' size ramps up over such a level's first :data:`LEVEL_WARMUP` steps:
#: a level starts with fresh Adam moments, whose first steps are full-sized for every variable,
#: and the scalars' moved the whole part's shading at once (without the ramp the 256² level
#: read 1.3% worse after 10 steps and was turned away). Session 41, embossed panel: normals
#: 5.31 -> 4.98 degrees, ramps' tilt 0.76 -> 0.77 of the truth's, roughness 0.42 -> 0.33, the
#: fit's validation 1.867 -> 1.730 ΔE2000 (the ramp alone, scalars held: 5.33, 1.874)
SCALAR_RATE = 0.3
LEVEL_WARMUP = 10
#: weight of metallic * (1 - metallic) per texel: real surfaces are metal or not, and where
#: the photos cannot tell (a rough paint's weak highlight reads as a little metal under a
#: smoother roughness: worn metal, paint at metallic 0.16 and roughness 0.33 for 0 and 0.6)
#: this decides toward the nearer end; at the full resolution only
METALLIC_EITHER_OR = 2.0
#: a finer level is kept unless it makes the validation ΔE2000 worse by more than this share
LEVEL_TOLERANCE = 0.01
#: the maps are fitted at the finest resolution (the one asked for, or half, a quarter...) whose
#: texels the train pixels see at least this much (the median over its seen texels of
#: :func:`pbrfit.textures.texel_weights`; a texel seen through less than a whole pixel is
#: determined only as an average with its neighbours: session 44's woven fabric, base colour
#: 20-21 dB on such texels against 30 dB on those seen 4+ times), the pyramid's four levels below
#: it, and upsampled to the resolution asked for (:meth:`pbrfit.fit_run.FitRun.texture_notes`
#: says so). From 4 views of 256 px (a median 0.97 pixels a texel at 512²) all four benchmark
#: textures turned a 512² level away at its first check or its end (the printed label and the
#: worn metal in sessions 27 and 31, the embossed panel and the woven fabric in session 46), and
#: the 512² pyramid's 1/4 level, strided as a coarse level, left the fabric at 3.62 ΔE2000
#: (Cycles-judged) where its 256² fit reaches 2.81
MIN_LEVEL_PIXELS = 1.0
#: on a level whose steps render every pixel (no stand-in, no stride) and that has a level to
#: beat, the validation views are also measured every this many Adam steps, and a check worse
#: than the best level by :data:`LEVEL_TOLERANCE` ends the climb there: the embossed panel's
#: 256² level read 3.5% worse than its 128² level after 5 steps and still 0.8% worse after
#: its 40 (sessions 28-33 turned it away or kept it within the tolerance), ~30% of the fit
LEVEL_CHECK_EVERY = 10
#: pixels of a view whose gradient is taken at once (bounds the autograd graph's memory):
#: 8192 took 3.3 s a step where 1024 took 8.5 s (4 views of 256 px, roughness and metallic
#: maps, 2 cores), at the same resident memory; a whole view (32768) no faster, 1.4 GB more
GRADIENT_CHUNK = 8192
#: on a CUDA device, where each chunk's hundreds of small kernels cost their launches rather
#: than arithmetic (session 29: an H200 busy 12-18% of a texture step), a chunk is as large
#: as half the device's free memory allows at this many bytes of autograd graph a pixel
#: (measured 30 KiB with a normal map on the CPU; doubled for coat and further maps), up to
#: :data:`CUDA_CHUNK_LIMIT` pixels: 40k-pixel views then take 23k operations a step, not 115k
GRAPH_BYTES_PER_PIXEL = 64 * 1024
CUDA_CHUNK_LIMIT = 1 << 18


def gradient_chunk(device: str, workers: int = 1) -> int:
    """Pixels of a view whose gradient :class:`pbrfit.objective.Objective` takes at once on
    ``device`` with ``workers`` views in flight: :data:`GRADIENT_CHUNK` on the CPU (memory
    bounded, no slower), on CUDA as many as half the free device memory holds, at least
    :data:`GRADIENT_CHUNK` and at most :data:`CUDA_CHUNK_LIMIT`."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return GRADIENT_CHUNK
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    fits = free // 2 // (GRAPH_BYTES_PER_PIXEL * max(workers, 1))
    return int(min(max(fits, GRADIENT_CHUNK), CUDA_CHUNK_LIMIT))


#: L-BFGS evaluations of the scalars still fitted, the maps held, after the pyramid
SCALAR_EVALUATIONS = 10
#: independent sample sets of the maps' renderer, taken in turn by the Adam steps
SAMPLE_SETS = 3
#: the Adam steps' gradients hold the BSDF-sampled directions
#: (:attr:`pbrfit.render.RasterRenderer.held_directions`): through the sampled directions, a
#: normal map's gradient carries the environment's own gradient at each sample (a sharp sky's
#: edges), noise the maps took in. Measured on the embossed panel (4 views of 256 px, the
#: steps' 3 sample sets): normals 5.96 degrees from the truth for 7.61 (plateaus 2.47 for 3.80,
#: ramps 11.55 for 13.88), the fit's own validation 2.01 ΔE2000 for 2.28, and a step ~15% faster
HELD_DIRECTIONS = True
#: on the levels coarser than half the final resolution, an Adam step that renders (no
#: stand-in: a normal map) takes every this-many-th loss pixel, the phases in turn, at the
#: pixel centres: a texel there is several pixels wide, so the filter changes little and a
#: step's pixels still see every texel (the filter would need every neighbour shaded)
COARSE_STRIDE = 4
#: ...or more, so that a step's pixels still see each seen texel about this many times: the
#: stride is the larger of :data:`COARSE_STRIDE` and the median train pixels per seen texel
#: over this. The embossed panel (4 views of 256 px; a median 186 pixels a texel at 32², 51 at
#: 64²) steps its 1/8 level at stride 31 and its 1/4 level at 8, for 4 and 4 before: those
#: levels took 9 and 19 s for 35 and 32 s, their validation as before (3.03 and 2.71 ΔE2000
#: for 3.03 and 2.72), the normals too (4.95 degrees for 4.94). Every other pixel on the level
#: at half the resolution as well (at the pixel centres, as the coarser levels) took another
#: ~45 s off but cost a quarter of a degree (5.22); 36 steps on each fine level for 40 (44 on
#: the coarse ones) cost a tenth (5.05; session 42)
STEP_PIXELS = 6.0
#: the palette search (:func:`_texel_search`): the most joint candidates its grid renders
#: (each map's grid thinned until their product fits, down to two values a map); the most materials in the palette and
#: the share of the total loss a further one must save to join (a worn metal's paint is one
#: material, where each texel on its own took metal or paint, a rough metal under a uniform
#: sky being as good); halvings of each palette material's bracket after the grid; the window
#: (texels a side) each texel's losses are pooled over; the share by which a texel's palette
#: material must beat its current loss for the texel to take it; how much the pixels the
#: search renders (:data:`SEARCH_PIXELS`) must see a texel for it to move; the median train
#: pixels per seen texel below which a (finer) level is left to Adam
SEARCH_CANDIDATES = 40
PALETTE_SIZE = 4
PALETTE_GAIN = 0.1
SEARCH_REFINEMENTS = 3
SEARCH_WINDOW = 3
SEARCH_MARGIN = 0.25
SEARCH_MIN_WEIGHT = 1.0
SEARCH_MIN_PIXELS = 16.0
#: the median train pixels per seen texel the search renders: a coarse level's beyond it are
#: subsampled (every k-th loss pixel of each view), which scarcely changes a window's mean
SEARCH_PIXELS = 32.0
#: the snap to the palette after Adam (:func:`_snap_to_palette`): a texel keeps its own values
#: only where their pooled loss is lower than its palette material's by more than this share;
#: halvings of each material's step there
SNAP_MARGIN = 0.25
SNAP_REFINEMENTS = 2
#: the colour snap (:func:`_snap_colours`): candidate colours clustered from the fitted base
#: colour map, from which :func:`_palette` picks the few the photos need; Lloyd iterations;
#: the share of its texels' loss a colour must save to join when it saves less than
#: :data:`PALETTE_GAIN` of the total (but :data:`PALETTE_MIN_GAIN` at least); the share by
#: which a texel's own colour must beat its ink's (pooled) to stay. Measured on the
#: Cycles-judged label's fit (4 views of 256 px, 256^2 map, ~4 pixels a texel): the yellow
#: stripe's colour saved 8.4% of the total and 79% on the texels it won; near-duplicates of the
#: red and the white saved 2.3% and 1.3%, 14% and 11% on theirs. Texels of the right ink beat
#: it on their own colours by 8% (median) and 24% (90th percentile): at a 25% margin, one in
#: ten stayed noisy; the yellow's texels, while it was missing, by 79-87%.
COLOUR_CANDIDATES = 8
COLOUR_ITERATIONS = 10
COLOUR_DISTINCT = 0.5
COLOUR_SNAP_MARGIN = 0.5
PALETTE_MIN_GAIN = 0.02
#: roughness values :class:`_TabulatedInRoughness` renders, evenly over the roughness map's
#: bounds (16 over [0, 1]: its values between them as close to the truth as the renderer's own)
ROUGHNESS_NODES = 16
#: the most memory the table may take (bytes; 384 a pixel with both maps); beyond it the steps
#: render (4 views of 256 px: 61 MB; 8 views of 1024 px, the part filling half of each: 1.6 GB)
TABLE_MEMORY = 2 << 30


class _StandIn:
    """What the maps' stand-in renderers share: the first of ``renderers`` (raster renderers of
    the same pixels, one per sample set) prepares the views, gives their whites and pixels;
    subclasses give ``shade``."""

    def __init__(self, renderers: list):
        self.base = renderers[0]
        self.scene, self.device, self.train_subsets = self.base.scene, self.base.device, self.base.train_subsets

    def prepare(self, view_index: int):
        return self.base.prepare(view_index)

    def white(self, view_index: int) -> float:
        return self.base.white(view_index)


class _AffineInBaseColor(_StandIn):
    """A stand-in for the raster renderer (``prepare``, ``shade``, ``white``,
    ``train_subsets``) that renders each loss pixel as ``S + D * base_color``: the maps'
    renderer when the base colour is the only map, and the look-ups of materials that differ
    only in their base colour (the palette snap's candidates) beside any other maps held.

    For a dielectric (metallic 0) the raster estimator is affine in the base colour at each
    pixel: its sampled directions and their densities do not depend on it
    (:func:`pbrfit.bsdf.sample_specular` follows the roughness), Lambert is linear in it and
    the specular, coat and sheen lobes do not use it (the metal's Fresnel is not affine in it:
    0.5% off at metallic 0.35, measured). So two renders per sample set (base colour 0 and 1, the rest of
    the material as it is) give S and D, averaged over every sample set (their noise too),
    and an Adam step only looks the map up: the same values as shading the map
    (``tests/test_textures.py``) at a small share of the cost. Through the pixel filter
    (``filter_pixels``: a normal map's fit) S and D are the taps' centres, each looked up at
    its own texel and averaged as the filter does, so the stand-in stays exact (with the
    filter off, the centres without the lobes' widening). Valid while everything but the base
    colour is held: it is built again whenever they move."""

    def __init__(self, renderers: list, views: list[int], material: dict):
        super().__init__(renderers)
        # as the renderer's: off (``_centres_only``), the centres themselves
        self.filter_pixels = self.centres = bool(getattr(self.base, "filter_pixels", False))
        self.terms, self.uv, self.computed = {}, {}, {}
        black = dict(material, base_color=torch.zeros(3))
        white = dict(material, base_color=torch.ones(3))
        with torch.no_grad():
            for vi in views:
                q = np.asarray(self.train_subsets[vi])
                if self.centres:  # the centres the filter averages
                    q = self.base.filter_taps(vi, q)[0]
                s = sum(self._term(r, vi, black, q) for r in renderers) / len(renderers)
                d = sum(self._term(r, vi, white, q) for r in renderers) / len(renderers) - s
                pixels = len(self.base.prepare(vi).geometry.pixels)
                full_s = torch.zeros(pixels, 3, dtype=s.dtype, device=s.device)
                full_d = torch.zeros_like(full_s)
                rows = torch.as_tensor(q, dtype=torch.long, device=s.device)
                full_s[rows], full_d[rows] = s, d
                self.terms[vi] = (full_s, full_d)
                self.computed[vi] = torch.zeros(pixels, dtype=torch.bool, device=s.device)
                self.computed[vi][rows] = True
                self.uv[vi] = self.base.prepare(vi).geometry.uv

    def _term(self, renderer, view_index: int, material: dict, sel) -> torch.Tensor:
        if self.centres:
            return renderer.shade_centres(view_index, material, sel)
        return renderer.shade(view_index, material, sel)

    @staticmethod
    def exact_for(material: dict) -> bool:
        """Whether the radiance of ``material`` is affine in its base colour: nothing uses the
        base colour other than linearly (a metal's Fresnel, subsurface scattering)."""
        def zero(name):
            v = material.get(name)
            return v is None or float(torch.as_tensor(v).abs().max()) == 0.0

        return zero("metallic") and zero("subsurface_weight")

    @staticmethod
    def applies(maps: tuple[str, ...], material: dict) -> bool:
        """Whether the stand-in renders ``material`` exactly while all of ``maps`` are fitted:
        the base colour is the only map and :meth:`exact_for`."""
        return tuple(maps) == ("base_color",) and _AffineInBaseColor.exact_for(material)

    def shade(self, view_index: int, material: dict, sel) -> torch.Tensor:
        if not (self.centres and self.filter_pixels):
            return self._affine(view_index, material, sel)
        need, index, weights = self.base.filter_taps(view_index, np.asarray(sel))
        return apply_taps(self._affine(view_index, material, need), index, weights)

    def _affine(self, view_index: int, material: dict, sel) -> torch.Tensor:
        s, d = self.terms[view_index]
        rows = torch.as_tensor(sel, dtype=torch.long, device=s.device)
        if not bool(self.computed[view_index][rows].all()):  # its terms are the train pixels' only
            raise ValueError(f"view {view_index}: the base colour stand-in has no terms for some of these pixels")
        b = material["base_color"]
        if is_map(b):
            b = lookup(b.to(s.device), self.uv[view_index][rows].to(s.device))
        return s[rows] + d[rows] * b.to(s.dtype)


def _colour_lookups(objective: Objective, material: dict) -> Objective:
    """``objective`` for materials that differ from ``material`` only in their base colour:
    through :class:`_AffineInBaseColor` of ``objective``'s own renderer (2 renders, then
    look-ups) where that is exact, else ``objective`` itself. Its one sample set, not the
    level's stand-in's average of every set: the snaps judge texels on samples the maps were
    not fitted to alone (through the average, 10,236 label texels kept their noise for 844)."""
    if not _AffineInBaseColor.exact_for(material):
        return objective
    return Objective(_AffineInBaseColor([objective.renderer], objective.view_ids, material), objective.view_ids,
                     objective.loss, objective.check)


class _TabulatedInRoughness(_StandIn):
    """The maps' renderer when the maps are roughness and/or metallic: a stand-in for the
    raster renderer (as :class:`_AffineInBaseColor`) that renders each loss pixel from a
    table over roughness, mixed by metallic.

    At each pixel the raster estimator is affine in metallic: its sampled directions and
    their densities follow the roughness only (:func:`pbrfit.bsdf.pdf_specular`) and the
    Principled BSDF weighs the metal lobe by ``metallic`` and everything else by ``1 -
    metallic``. So a metallic map needs the renders at metallic 0 and 1 only (exact), and a
    roughness map their values at :data:`ROUGHNESS_NODES` roughnesses evenly over the map's
    bounds, Catmull-Rom between them. Measured on the embossed panel's first train view (4
    views of 256 px, `TEXTURE_SAMPLES`, 16 nodes over [0, 1]): the table's values at
    roughnesses between its nodes are no further from a 6-seed mean than the raster renderer's
    own (mean absolute error over the white, metal: 0.051 vs 0.058 at 0.08, 0.097 vs 0.097 at
    0.27, 0.087 vs 0.090 at 0.45; dielectric: 0.100 vs 0.100 at 0.08, 0.103 vs 0.103 at 0.45),
    the mean difference between them at most 0.2% of the white (metal at 0.08). Every sample
    set's renders are averaged, as the base colour's stand-in does. Valid while the scalars
    are held: built again when they move. Costs ``ROUGHNESS_NODES`` x 2 x sample sets renders
    of the train views (a worn metal's 4 views of 256 px: ~2 minutes on 2 cores); an Adam
    step, the palette search's candidates and their refinement then cost look-ups."""

    def __init__(self, renderers: list, views: list[int], material: dict, bounds: tuple[float, float],
                 workers: int = 1, check: Callable[[], None] | None = None, tick: Callable[[], None] | None = None):
        """``check`` is called before each view's render (it raises to cancel), ``tick`` after
        each table column (progress: a column renders the views once per sample set)."""
        super().__init__(renderers)
        rough, metal = material["roughness"], material["metallic"]
        self.lo, self.hi = bounds
        spread = is_map(rough) and self.hi > self.lo
        self.nodes = ([float(x) for x in np.linspace(self.lo, self.hi, ROUGHNESS_NODES)] if spread
                      else [float(torch.as_tensor(rough).reshape(-1)[0])])
        self.metal_levels = [0.0, 1.0] if is_map(metal) else [float(torch.as_tensor(metal).reshape(-1)[0])]
        self.uv = {vi: self.base.prepare(vi).geometry.uv for vi in views}
        tables = {vi: [torch.zeros(len(self.base.prepare(vi).geometry.pixels), len(self.nodes), 3,
                                   device=self.device) for _ in self.metal_levels] for vi in views}
        for k, m in enumerate(self.metal_levels):
            for j, r in enumerate(self.nodes):
                trial = dict(material, roughness=torch.tensor([r], device=self.device),
                             metallic=torch.tensor([m], device=self.device))

                def column(vi, k=k, j=j, trial=trial):
                    if check is not None:
                        check()
                    q = self.train_subsets[vi]
                    with torch.no_grad():
                        mean = sum(rr.shade(vi, trial, q) for rr in renderers).float() / len(renderers)
                    tables[vi][k][torch.as_tensor(q, dtype=torch.long, device=self.device), j] = mean

                map_ordered(column, views, workers)
                if tick is not None:
                    tick()
        self.tables = {vi: [t.reshape(-1, 3) for t in levels] for vi, levels in tables.items()}

    @staticmethod
    def applies(maps: tuple[str, ...], material: dict) -> bool:
        """Whether the stand-in renders ``material`` as the raster renderer: the maps are
        roughness and/or metallic only, and no subsurface (rendered otherwise)."""
        v = material.get("subsurface_weight")
        no_subsurface = v is None or float(torch.as_tensor(v).abs().max()) == 0.0
        return bool(maps) and set(maps) <= {"roughness", "metallic"} and no_subsurface

    @staticmethod
    def table_bytes(renderer, views: list[int], maps: tuple[str, ...]) -> int:
        """The memory the tables of ``views`` (rendered by ``renderer``) take for ``maps``."""
        pixels = sum(len(renderer.prepare(vi).geometry.pixels) for vi in views)
        nodes = ROUGHNESS_NODES if "roughness" in maps else 1
        levels = 2 if "metallic" in maps else 1
        return pixels * nodes * levels * 3 * 4

    def _at(self, table: torch.Tensor, rows: torch.Tensor, rough: torch.Tensor | None) -> torch.Tensor:
        """(N, 3) the table's values of pixels ``rows`` at their roughness ``rough`` (N, 1)."""
        g = len(self.nodes)
        if g == 1:
            return table[rows]
        s = ((rough[:, 0] - self.lo) / (self.hi - self.lo) * (g - 1)).clamp(0.0, g - 1)
        i = torch.floor(s.detach()).clamp(0, g - 2).long()
        f = (s - i.to(s.dtype))[:, None]
        p0, p1, p2, p3 = (table[rows * g + (i + k).clamp(0, g - 1)] for k in (-1, 0, 1, 2))
        # beyond the end nodes: at roughness 0 the mirror image (radiance follows alpha =
        # roughness^2, flat in roughness there), elsewhere points extrapolated linearly (a
        # repeated end node would halve the end segment's slope)
        p0 = torch.where((i == 0)[:, None], p2 if self.lo == 0.0 else 2 * p1 - p2, p0)
        p3 = torch.where((i == g - 2)[:, None], 2 * p2 - p1, p3)
        cubic = p1 + 0.5 * f * ((p2 - p0) + f * ((2 * p0 - 5 * p1 + 4 * p2 - p3) + f * (3 * (p1 - p2) + p3 - p0)))
        return cubic.clamp_min(0.0)  # radiance: a cubic may overshoot below zero

    def shade(self, view_index: int, material: dict, sel) -> torch.Tensor:
        rows = torch.as_tensor(sel, dtype=torch.long, device=self.device)
        uv = self.uv[view_index][rows].to(self.device)

        def per_pixel(name):
            v = material[name]
            return lookup(v.to(self.device), uv) if is_map(v) else torch.as_tensor(v, device=self.device).reshape(1, -1)

        rough = per_pixel("roughness").expand(len(rows), 1) if len(self.nodes) > 1 else None
        levels = [self._at(t, rows, rough) for t in self.tables[view_index]]
        if len(levels) == 1:
            return levels[0]
        m = per_pixel("metallic")
        return levels[0] + m * (levels[1] - levels[0])


def regularizer(name: str, t: torch.Tensor, centre: torch.Tensor, prior_w: torch.Tensor, settings: TextureSettings,
                full_resolution: bool = True) -> torch.Tensor:
    """The regularizers of one map, from its texels ``t`` (H, W, C) as :func:`pbrfit.textures.
    normalized` gives them: total variation, the pull toward ``centre`` (the scalar fit; a
    normal map: flat) weighted per texel by ``prior_w`` (H, W, 1), on a normal map's slopes
    :data:`NORMAL_SMOOTHNESS` and :data:`NORMAL_PRIOR` times stronger, and on a metallic
    map at ``full_resolution`` :data:`METALLIC_EITHER_OR` x metallic (1 - metallic) (coarser
    levels' texels may straddle metal and paint)."""
    tv, prior = (NORMAL_SMOOTHNESS, NORMAL_PRIOR) if name == NORMAL else (1.0, 1.0)
    reg = (tv * settings.tv_weight * total_variation(t)
           + prior * (prior_w * (t - centre) ** 2).sum(-1).mean())
    if name == "metallic" and full_resolution:
        reg = reg + METALLIC_EITHER_OR * (t * (1 - t)).mean()
    return reg


def prior_weights(settings: TextureSettings, uvs: list, size: int) -> torch.Tensor:
    """(size, size, 1) each texel's weight of the pull toward the scalar fit
    (:func:`regularizer`'s ``prior_w``): ``settings.prior_weight`` over one plus how much the
    train pixels ``uvs`` see the texel (:func:`pbrfit.textures.texel_weights`), so the pull
    decides only where the photos do not."""
    return (settings.prior_weight / (1.0 + texel_weights(uvs, size)))[..., None]


def _affine_in_base_color(objective: Objective, material: dict, stride: int = 1):
    """Per train view, ``(S, D, uv, ref)`` with the rendered radiance of each train pixel
    ``S + D * b`` (``b`` its base colour looked up at its ``uv``), all over white:
    rendered radiance is affine in the base colour at each pixel for a dielectric
    (:meth:`_AffineInBaseColor.exact_for`; S is the render with a black base, D a white
    one's less S), nearly so for a metal's Fresnel (D then at the material's own b), so two
    renders give S and D. With
    ``stride``, every ``stride``-th train pixel of each view only (a coarse level's texels
    are each seen by hundreds)."""
    m0 = dict(material, base_color=torch.zeros_like(material["base_color"]))
    # where the render is affine in the base colour, D is a white render's less S for any b (a
    # near-black texel's own b would scale it); else the linearization at the material's b
    exact = _AffineInBaseColor.exact_for(material)
    m1 = dict(material, base_color=torch.ones_like(material["base_color"])) if exact else material
    for vi in objective.view_ids:
        q = objective.renderer.train_subsets[vi]
        rows = slice(None, None, stride)
        q = q[rows]
        white = objective.whites[vi]
        # at the pixel centres: through the pixel filter a pixel mixes its neighbours' colours,
        # and S + D b with its own b would read a dark ink's D hundreds of times too large
        with _centres_only([objective.renderer], True):
            p1 = objective.renderer.shade(vi, m1, q) / white
            p0 = objective.renderer.shade(vi, m0, q) / white
        uv = objective.renderer.prepare(vi).geometry.uv[torch.as_tensor(q, dtype=torch.long)].to(p1.device)
        d = p1 - p0 if exact else (p1 - p0) / lookup(material["base_color"].to(p1.device), uv).clamp_min(1e-3)
        yield p0, d, uv, objective.refs[vi][rows]


def _base_color_least_squares(objective: Objective, layout: _Layout, u: torch.Tensor,
                              bounds: tuple[float, float], stride: int = 1) -> torch.Tensor:
    """``u`` with the base colour map replaced by its per-texel least-squares fit: each texel
    ``sum w D (ref - S) / sum w D^2`` over the pixels that see it (w their bilinear weights;
    :func:`_affine_in_base_color`, every ``stride``-th pixel). Texels too little seen keep
    their value."""
    with torch.no_grad():
        m1 = layout.material(u)
        num, den, uvs = [], [], []
        for s, d, uv, ref in _affine_in_base_color(objective, m1, stride):
            num.append(d * (ref - s))
            den.append(d * d)
            uvs.append(uv)
        size = layout.size
        n, dd = splat(uvs, num, size), splat(uvs, den, size)
        ok = dd > 1e-3 * dd.max().clamp_min(1e-12)
        lo, hi = bounds
        new = torch.where(ok, (n / dd.clamp_min(1e-12)).clamp(lo, hi), m1["base_color"].double())
        out = u.detach().clone()
        out[layout.slices["base_color"]] = to_unconstrained("base_color", new, bounds).float().reshape(-1)
        return out


def _palette_colours(terms: list, colours: torch.Tensor, assign: torch.Tensor, among: torch.Tensor,
                     count: int) -> torch.Tensor:
    """(count, 3) the colours that, given to the texels ``among`` (size, size) by their palette
    index ``assign``, the others keeping ``colours`` (size, size, 3), best explain every train
    pixel: linear least squares on the views' ``terms`` (:func:`_affine_in_base_color` of the
    material with ``colours``; each pixel's bilinear lookup mixes the colours of the texels it
    sees, an ink's edge pixels included), one count x count system per channel. The systems
    are summed and solved where the terms live (the renderer's device); the colours come back
    on ``colours``' device."""
    shares = torch.nn.functional.one_hot(assign, count).to(colours.dtype) * among[..., None]  # (size, size, P)
    kept = colours * ~among[..., None]
    device = terms[0][2].device if terms else colours.device
    a_mat = torch.zeros(3, count, count, dtype=torch.float64, device=device)
    rhs = torch.zeros(3, count, dtype=torch.float64, device=device)
    for s, d, uv, ref in terms:
        a = lookup(shares.to(uv.device), uv).double()  # (N, P)
        y = (ref - s - d * lookup(kept.to(uv.device), uv)).double()
        for ch in range(3):
            ad = a * d[:, ch:ch + 1].double()
            a_mat[ch] += ad.T @ ad
            rhs[ch] += ad.T @ y[:, ch]
    ridge = 1e-9 * a_mat.diagonal(dim1=1, dim2=2).amax(1).clamp_min(1e-12)
    eye = torch.eye(count, dtype=torch.float64, device=device)
    solved = torch.linalg.solve(a_mat + ridge[:, None, None] * eye, rhs)
    return solved.T.float().to(colours.device)


def _scalar_search(objective: Objective, layout: _Layout, u: torch.Tensor,
                   resolve: Callable[[torch.Tensor], torch.Tensor] | None = None, grid: bool = True) -> torch.Tensor:
    """``u`` with each scalar still fitted moved to the best of a 1-D grid of values
    (:func:`pbrfit.warm_start.grid_values`), the other maps held: a scalar that compensated
    for the missing detail of a uniform or coarser material (a rough base standing in for a
    two-colour one) comes back once the maps explain it. ``resolve`` (``u`` -> ``u``): what
    each candidate gets solved for it before it is measured (the base colour map's least
    squares): a scalar and the colours trade off, and a candidate judged under the colours
    solved for another loses to it. The woven fabric's specular level 0.5 (truth) read worse
    than 0.02 under the inks solved at 0.02 (which had taken the missing reflection into the
    colours: a greyer navy), and kept 0.02 through every level; with the colours solved for
    each candidate the fit found specular level 0.50 and roughness 0.70 (the truth: 0.5, 0.7;
    before: 0.02, 0.84), its navy within 0.015 of the truth's (its ochre 0.04 dark).

    A parameter with simplest values (:data:`pbrfit.layers.SIMPLEST`: Blender's default
    specular level; metallic 0 or 1), each tried, goes to the best of them unless another
    value lowers the loss by more than the share :data:`pbrfit.layers.PRUNE_TOLERANCE` (2%) of
    it, as the scalar fit's pruning keeps such a value (which, unlike this search, re-fits the
    other scalars there): the fabric's specular level and roughness trade along a valley the
    photos barely tell apart (the identifiability analysis: ±0.23 changes its train renders by
    under 1 ΔE2000), and its search landed at 0.97 / 0.83 or 0.44 / 0.70 (truth 0.5 / 0.7) as
    the coarse levels' maps varied.

    ``grid`` False: the simplest values only, each against the current value (the fine
    levels': see :func:`fit_maps`)."""
    space = layout.space
    if not space.fit:
        return u
    u = u.detach().clone()
    names = [n for n in space.fit if PARAMETERS[n].size == 1]

    def candidates_of(n):
        found = search_grid(n, *space.bounds_of(n)) if grid else []
        return found + [v for v in _simplest(n, space) if all(abs(v - c) > 1e-9 for c in found)]

    values = space.values(u[: space.dim].double())
    if all(abs(v - values[n]) <= 1e-6 for n in names for v in candidates_of(n)):
        return u  # nothing to try (a fine level at the simplest values): nothing rendered
    with torch.no_grad():
        best = float(objective(layout.material(u))[0])
        for n in names:
            values = space.values(u[: space.dim].double())
            simplest = _simplest(n, space)
            plain = None  # (loss, u) at the best simplest value
            candidates = candidates_of(n)
            current = (best, u)  # the loss of the current value, measured already
            for v in candidates:
                if abs(v - values[n]) <= 1e-6:
                    loss, trial = current
                else:
                    trial = u.clone()
                    trial[: space.dim] = space.initial_vector(dict(values, **{n: v})).float()
                    if resolve is not None:
                        trial = resolve(trial)
                    loss = float(objective(layout.material(trial))[0])
                if any(abs(v - c) <= 1e-9 for c in simplest) and (plain is None or loss < plain[0]):
                    plain = (loss, trial)
                if loss < best - 1e-9:
                    best, u = loss, trial
            if plain is not None and plain[0] <= best * (1 + PRUNE_TOLERANCE):
                best, u = plain
    return u


def _simplest(name: str, space: ParameterSpace) -> list[float]:
    """The simplest values (:data:`pbrfit.layers.SIMPLEST`) of parameter ``name`` within its
    bounds in ``space`` (one outside them is not tried; the pruning clamps it into them), or
    none."""
    lo, hi = space.bounds_of(name)
    return [v for v in SIMPLEST.get(name, ()) if lo <= v <= hi]


def _texel_sums(objective: Objective, material: dict, uvs: list, size: int, rows=slice(None)) -> torch.Tensor:
    """(size, size) the objective's per-pixel loss (:meth:`pbrfit.objective.Objective.
    pixel_losses`) of ``material`` over the train pixels ``rows`` of every view (``uvs``: theirs),
    summed onto the texels with the pixels' bilinear weights."""
    per_pixel = [objective.pixel_losses(vi, material, rows)[:, None] for vi in objective.view_ids]
    return splat(uvs, per_pixel, size)[..., 0].float()


def _window_sum(t: torch.Tensor) -> torch.Tensor:
    """(H, W) each texel's sum over its SEARCH_WINDOW x SEARCH_WINDOW neighbourhood (repeating,
    as the lookup does)."""
    r = SEARCH_WINDOW // 2
    padded = torch.nn.functional.pad(t[None, None], (r, r, r, r), mode="circular")
    return torch.nn.functional.avg_pool2d(padded, SEARCH_WINDOW, stride=1)[0, 0] * SEARCH_WINDOW ** 2


def _joint_grid(names: list[str], bounds: dict, limit: int = SEARCH_CANDIDATES) -> torch.Tensor:
    """(K, len(names)) every combination of the maps' grid values (:func:`pbrfit.warm_start.
    grid_values`), each grid thinned evenly (its end points kept) until the product is at most
    ``limit`` or every grid is down to its two ends (six or more maps exceed it): roughness x
    metallic is 7 x 5, whole."""
    grids = [search_grid(n, *bounds[n]) for n in names]
    while math.prod(len(g) for g in grids) > limit and max(len(g) for g in grids) > 2:
        longest = max(range(len(grids)), key=lambda i: len(grids[i]))
        g = grids[longest]
        grids[longest] = [g[round(i * (len(g) - 1) / (len(g) - 2))] for i in range(len(g) - 1)]
    return torch.cartesian_prod(*[torch.tensor(g, dtype=torch.float64) for g in grids]).reshape(-1, len(names))


def _palette(losses: torch.Tensor, size: int = PALETTE_SIZE, distinct: float | None = None) -> list[int]:
    """The candidates (rows of ``losses``, (K, T): each texel's summed pixel loss) that make the
    palette: the best single material, then greedily the one that lowers the total (each
    texel at its best palette entry) the most, while it pays (:func:`_pays`), up to ``size``
    materials: a material is added only where the photos clearly need it (a facility-location
    choice, as a spatially varying BRDF is fitted from a few basis materials)."""
    chosen = [int(losses.sum(1).argmin())]
    best = losses[chosen[0]]
    while len(chosen) < size:
        k = int(torch.minimum(losses, best).sum(1).argmin())
        if k in chosen or not _pays(best, losses[k], best.sum(), distinct):
            break
        chosen.append(k)
        best = torch.minimum(best, losses[k])
    # then drop what the later ones made redundant (the first, a compromise, once the
    # materials it averaged have joined)
    for k in list(chosen):
        if len(chosen) == 1:
            break
        rest = [c for c in chosen if c != k]
        with_all = losses[chosen].min(0).values
        if not _pays(losses[rest].min(0).values, losses[k], with_all.sum(), distinct):
            chosen = rest
    return chosen


def _pays(best: torch.Tensor, candidate: torch.Tensor, total: torch.Tensor, distinct: float | None) -> bool:
    """Whether the ``candidate`` material's texel losses (T,) lower those of the ``best`` so far
    (T,) enough to join the palette: by :data:`PALETTE_GAIN` of ``total``, or, with
    ``distinct``, by :data:`PALETTE_MIN_GAIN` of it and by ``distinct`` of the loss of the
    texels it wins (a small ink the palette lacks explains its texels far better, where a
    near-duplicate of a palette colour only takes the noise of half of its texels)."""
    won = candidate < best
    saving = float((best - candidate)[won].sum())
    if saving > PALETTE_GAIN * float(total):
        return True
    return (distinct is not None and saving > PALETTE_MIN_GAIN * float(total)
            and saving > distinct * float(best[won].sum()))


class _TexelLosses:
    """The objective's train-pixel losses of materials that differ from ``u``'s only in the
    scalar maps ``names``, summed and pooled onto the texels of ``layout``: what the palette
    search and the palette snap compare. ``rows`` subsamples each view's loss pixels (a coarse
    level's), ``uvs`` are the full train pixels' texture coordinates."""

    def __init__(self, objective: Objective, layout: _Layout, u: torch.Tensor, uvs: list, names: list[str],
                 rows: slice = slice(None)):
        self.objective, self.layout, self.names, self.rows = objective, layout, names, rows
        self.uvs = [uv[rows] for uv in uvs] if rows.step not in (None, 1) else uvs
        pixels = texel_weights(self.uvs, layout.size)
        self.pixels = pixels.clamp_min(1e-6)
        self.window = _window_sum(pixels).clamp_min(1e-6)
        self.seen = pixels >= SEARCH_MIN_WEIGHT
        self.observed = pixels > 0
        self.material = layout.material(u)

    def representable(self, n: str, value: torch.Tensor) -> torch.Tensor:
        """``value`` as the variable of map ``n`` can hold it (clamped, round-tripped)."""
        lo, hi = self.layout.bounds[n]
        return from_unconstrained(n, to_unconstrained(n, value.double().clamp(lo, hi), (lo, hi)), (lo, hi)).float()

    def sums(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """(size, size) texel sums of the loss with the maps ``values`` ((size, size, 1) or
        (1, 1, 1): constant) in place of the current ones."""
        m = self.material
        return _texel_sums(self.objective, dict(m, **{n: v.expand_as(m[n]).float() for n, v in values.items()}),
                           self.uvs, self.layout.size, self.rows)

    def pooled(self, t: torch.Tensor) -> torch.Tensor:
        """(size, size) each texel's mean loss per pixel over its :data:`SEARCH_WINDOW` window."""
        return _window_sum(t) / self.window

    def per_pixel(self, t: torch.Tensor) -> torch.Tensor:
        """(size, size) each texel's own mean loss per pixel."""
        return t / self.pixels

    def explained(self, current: torch.Tensor, values: dict[str, torch.Tensor], margin: float,
                  among: torch.Tensor) -> torch.Tensor:
        """(size, size) the texels ``among`` whose own values (pooled loss ``current``) do not
        beat the maps ``values`` by more than ``margin`` of the latter's pooled loss."""
        return among & ~(current < self.pooled(self.sums(values)) * (1 - margin))

    def constant(self, values: torch.Tensor) -> torch.Tensor:
        """(size, size) texel sums of one material (values: (len(names),)) everywhere."""
        return self.sums({n: values[i].reshape(1, 1, 1) for i, n in enumerate(self.names)})

    def described(self, palette: torch.Tensor) -> list[dict]:
        """``palette`` (P, maps) as the fit's record gives it: [{map: value}], 4 decimals."""
        return [{n: round(float(v), 4) for n, v in zip(self.names, row)} for row in palette]

    def textured(self, palette: torch.Tensor, assign: torch.Tensor) -> dict[str, torch.Tensor]:
        """The maps giving each texel its palette material (``palette`` (P, maps), ``assign``
        (size, size) indices into it)."""
        return {n: palette[assign, i][..., None] for i, n in enumerate(self.names)}

    def refine(self, palette: torch.Tensor, assign: torch.Tensor, steps: list[float], halvings: int,
               tick: Callable[[], None] | None = None, out_of_time: Callable[[], bool] | None = None,
               among: torch.Tensor | None = None) -> torch.Tensor | None:
        """``palette`` with each material's values refined map by map on the summed loss of all
        of its texels (those seen, and ``among`` where given): a step of ``steps[i]`` each way
        on map i, halved ``halvings`` times, kept where it lowers that sum. None when out of
        time."""
        palette = palette.clone()
        judged = self.seen if among is None else self.seen & among
        owners = [(assign == p) & judged for p in range(len(palette))]
        base = self.sums(self.textured(palette, assign))
        for i, n in enumerate(self.names):
            if out_of_time is not None and out_of_time():
                return None
            h = steps[i]
            for _ in range(halvings if h > 0 else 0):
                for sign in (-1.0, 1.0):
                    trial = palette.clone()
                    trial[:, i] = self.representable(n, palette[:, i] + sign * h)
                    t = self.sums(self.textured(trial, assign))
                    for p, own in enumerate(owners):
                        if float(t[own].sum()) < float(base[own].sum()):
                            palette[p, i] = trial[p, i]
                            base = torch.where(assign == p, t, base)
                h /= 2
            if tick is not None:
                tick()
        return palette

    def moved(self, u: torch.Tensor, palette: torch.Tensor, assign: torch.Tensor, move: torch.Tensor
              ) -> torch.Tensor:
        """``u`` with the texels ``move`` (size, size) set to their palette material, the others
        exactly as they were."""
        u = u.detach().clone()
        for i, n in enumerate(self.names):
            lo, hi = self.layout.bounds[n]
            value = to_unconstrained(n, palette[assign, i][..., None].double(), (lo, hi)).float()
            u[self.layout.slices[n]] = torch.where(move[..., None], value, self.layout.grid(u, n)).reshape(-1)
        return u


def _palette_maps(layout: _Layout) -> list[str]:
    """The maps a palette covers: the one-channel maps other than the base colour and normal."""
    return [n for n in layout.maps if n not in ("base_color", NORMAL) and PARAMETERS[n].size == 1]


def _grid_steps(names: list[str], grid: torch.Tensor) -> list[float]:
    """Per map, half the smallest spacing of its values in ``grid`` (K, maps): the first
    refinement step."""
    steps = []
    for i in range(len(names)):
        levels = torch.unique(grid[:, i])
        steps.append(float((levels[1:] - levels[:-1]).min()) / 2 if len(levels) > 1 else 0.0)
    return steps


def _texel_search(objective: Objective, layout: _Layout, u: torch.Tensor, uvs: list,
                  tick: Callable[[], None] | None = None,
                  out_of_time: Callable[[], bool] | None = None) -> tuple[torch.Tensor, dict | None]:
    """(``u`` with the scalar maps other than the base colour (roughness, metallic, ...) moved,
    texel by texel, to one of a few materials where the photos clearly prefer it: a global step
    where Adam's is local. A worn-metal fit's paint, started from the scalar fit (all metal),
    stayed a little metal under a smoother roughness (Cycles-judged: metallic 0.15 and
    roughness 0.33 for 0 and 0.6), a minimum the gradient does not leave; a search texel by
    texel then left some patches metal (a rough metal under the train sky's uniform ground
    looks like the paint) and read the texels away from the highlights smoother.

    Each combination of the maps' values on a grid (:func:`_joint_grid`) is rendered as
    constant maps and every train pixel's loss summed onto the texels; :func:`_palette` picks
    the few materials that explain the photos; each texel takes the palette material best on
    its losses pooled over a :data:`SEARCH_WINDOW` window; each palette material's values are
    then refined, map by map, on the summed loss of all of its texels (the highlights, which
    fix the roughness, are few, and a texel's own few pixels are biased), its bracket halved
    :data:`SEARCH_REFINEMENTS` times. A texel seen by at least :data:`SEARCH_MIN_WEIGHT` pixels
    takes its material when that beats its current loss by :data:`SEARCH_MARGIN`. Levels with
    fewer than :data:`SEARCH_MIN_PIXELS` pixels per texel are skipped; those with more than
    :data:`SEARCH_PIXELS` render a strided subset of the pixels. Costs at most
    :data:`SEARCH_CANDIDATES` (while 5 or fewer maps) + 6 per map + 3 renders of (a subset of)
    the train views per searched level; ``tick`` is called after the grid and each
    map's refinement (progress); ``out_of_time`` ends the search between them. Texels that do
    not move keep their variables exactly. The second value records the search for the fit's
    provenance ({"materials": [{map: value}], "texels_moved": n, "pixel_stride": k}), None
    where it did not run.)"""
    names = _palette_maps(layout)
    if not names:
        return u, None
    size = layout.size
    median = _pixels_per_texel(uvs, size)
    if median < SEARCH_MIN_PIXELS or (out_of_time is not None and out_of_time()):
        return u, None  # a finer level: too few pixels per texel to choose by, Adam's turn
    rows = slice(None, None, max(1, int(median // SEARCH_PIXELS)))
    with torch.no_grad():
        losses = _TexelLosses(objective, layout, u, uvs, names, rows)
        current = losses.pooled(losses.sums({}))
        grid = torch.stack([losses.representable(n, g) for n, g in
                            zip(names, _joint_grid(names, layout.bounds).T)], 1)  # (K, maps)
        raw = torch.stack([losses.constant(g) for g in grid])  # (K, size, size)
        if tick is not None:
            tick()
        if not bool(losses.seen.any()) or (out_of_time is not None and out_of_time()):
            return u, None
        chosen = _palette(raw[:, losses.seen])
        assign = torch.stack([losses.pooled(raw[k]) for k in chosen]).argmin(0)  # (size, size) palette index
        palette = losses.refine(grid[chosen], assign, _grid_steps(names, grid), SEARCH_REFINEMENTS, tick,
                                out_of_time)
        if palette is None:
            return u, None
        found = losses.pooled(losses.sums(losses.textured(palette, assign)))
        move = losses.seen & (found < current * (1 - SEARCH_MARGIN))
        u = losses.moved(u, palette, assign, move)
    record = {"materials": losses.described(palette), "texels_moved": int(move.sum()), "pixel_stride": rows.step}
    return u, record


def _snap_to_palette(objective: Objective, layout: _Layout, u: torch.Tensor, uvs: list, materials: list[dict],
                     out_of_time: Callable[[], bool] | None = None) -> tuple[torch.Tensor, dict | None]:
    """(``u`` with each texel whose fitted values do not clearly beat its best material of the
    palette search's ``materials`` ([{map: value}]) set to that material, the record): after
    Adam, the maps' texels carry the noise of the few pixels each one has (Cycles-judged worn
    metal: the metal's roughness 0.209 +- 0.042 for a uniform 0.2, whose speckled highlights
    were most of the judged error on novel cameras and lighting; the same maps with the metal's
    texels set to their median judged 1.89 -> 1.50). The simpler explanation wins unless the
    photos need the difference: each texel takes its best palette material on pooled losses
    (:data:`SEARCH_WINDOW`), the materials are refined on all of their texels (as the search
    refines them, at its last step size and every pixel), and a seen texel takes its material
    unless its own values' pooled loss is lower by more than :data:`SNAP_MARGIN` (edges between
    materials, wear, anything the palette lacks); the refinement counts only the texels the
    palette explains before it. Costs P + 3 + 4 per map renders of the train views. The
    record: {"materials": [{map: value}], "texels_snapped": n, "texels_kept": n}; None where
    nothing ran."""
    names = _palette_maps(layout)
    if not names or not materials or any(set(m) != set(names) for m in materials) or (
            out_of_time is not None and out_of_time()):
        return u, None
    with torch.no_grad():
        losses = _TexelLosses(objective, layout, u, uvs, names)
        if not bool(losses.seen.any()):
            return u, None
        palette = torch.stack([torch.stack([losses.representable(n, torch.tensor(m[n])) for n in names])
                               for m in materials])  # (P, maps)
        current = losses.pooled(losses.sums({}))
        assign = torch.stack([losses.pooled(losses.constant(p)) for p in palette]).argmin(0)
        grid = torch.stack([losses.representable(n, g) for n, g in zip(names, _joint_grid(names, layout.bounds).T)], 1)
        steps = [h / 2 ** (SEARCH_REFINEMENTS - 1) for h in _grid_steps(names, grid)]  # the search's last step

        def snapping(palette):  # where the palette explains the photos as well as the texels' own values
            return losses.explained(current, losses.textured(palette, assign), SNAP_MARGIN, losses.seen)

        # refined on the texels it explains already: those it does not (another material, an
        # edge) would pull it toward themselves
        palette = losses.refine(palette, assign, steps, SNAP_REFINEMENTS, out_of_time=out_of_time,
                                among=snapping(palette))
        if palette is None:
            return u, None
        snap = snapping(palette)
        u = losses.moved(u, palette, assign, snap)
    return u, {"materials": losses.described(palette), "texels_snapped": int(snap.sum()),
               "texels_kept": int((losses.seen & ~snap).sum())}


def _colour_clusters(colours: torch.Tensor, weights: torch.Tensor, k: int = COLOUR_CANDIDATES) -> torch.Tensor:
    """(<= k, 3) cluster centres of ``colours`` (N, 3, linear) weighted by ``weights`` (N,):
    Lloyd's k-means in the square root of the colours (roughly perceptual spacing), started
    from the heaviest colour and then each colour farthest from the centres so far
    (deterministic). A dozen lines here rather than a clustering dependency for the core."""
    x = colours.double().clamp_min(0).sqrt()
    w = weights.double()
    centres = x[w.argmax()][None]
    while len(centres) < min(k, len(x)):
        far = torch.cdist(x, centres).min(1).values * w.sqrt()
        if float(far.max()) <= 1e-6:
            break
        centres = torch.cat([centres, x[far.argmax()][None]])
    for _ in range(COLOUR_ITERATIONS):
        nearest = torch.cdist(x, centres).argmin(1)
        mass = torch.zeros(len(centres), dtype=x.dtype).index_add_(0, nearest, w)
        total = torch.zeros_like(centres).index_add_(0, nearest, x * w[:, None])
        centres = torch.where(mass[:, None] > 0, total / mass.clamp_min(1e-12)[:, None], centres)
    return (centres ** 2).float()


def _snap_colours(objective: Objective, layout: _Layout, u: torch.Tensor, uvs: list,
                  out_of_time: Callable[[], bool] | None = None) -> tuple[torch.Tensor, dict | None]:
    """(``u`` with each observed texel of the base colour map whose fitted colour does not
    clearly beat its best colour of a small palette set to that colour, the record): the
    palette snap (:func:`_snap_to_palette`) for the base colour. A printed label's few inks,
    fitted texel by texel from ~4 noisy pixels each (4 views of 256 px on a 256^2 map), read
    26 dB PSNR where each ink is one colour.

    Candidates are clusters of the fitted colours (:func:`_colour_clusters`), each rendered as
    a constant map; :func:`_palette` picks those the photos need (a small ink joins when it
    explains its own texels far better, :data:`COLOUR_DISTINCT`); each texel takes the best on
    its own pixels' losses (not pooled over a window as the materials are: a line of text is a
    texel or two wide, and inks differ by far more than their noise), or on its window's where
    it has less than a pixel; the colours are solved by least squares on every pixel
    (:func:`_palette_colours`: a whole ink's pixels, where a texel has a few), and every texel
    any pixel sees takes its colour unless its own values' loss, pooled over its window, is
    lower by more than :data:`COLOUR_SNAP_MARGIN` (edges, gradients, anything the palette
    lacks). Texels seen by less than a pixel are snapped too: their colours are the least
    determined (16% of the label's observed texels, which had left its map at 28.7 dB where
    the snapped ones read 33). Renders through :func:`_colour_lookups` of ``objective`` where
    the render is affine in the base colour (2 renders, then look-ups; the woven fabric's three
    snaps took 90 s of its 519 rendering each candidate, 4 s as look-ups), else
    :data:`COLOUR_CANDIDATES` + 5 renders of the train views.
    The record: {"colours": [[r, g, b]], "texels_snapped": n, "texels_kept": n}; None where
    nothing ran."""
    if out_of_time is not None and out_of_time():
        return u, None
    with torch.no_grad():
        objective = _colour_lookups(objective, layout.material(u))
        losses = _TexelLosses(objective, layout, u, uvs, [])
        seen = losses.observed
        if not bool(seen.any()):
            return u, None
        colours = losses.material["base_color"].float()
        candidates = _colour_clusters(colours[seen], losses.window[seen])
        raw = torch.stack([losses.sums({"base_color": c.reshape(1, 1, 3)}) for c in candidates])
        if out_of_time is not None and out_of_time():
            return u, None
        chosen = _palette(raw[:, seen], size=COLOUR_CANDIDATES, distinct=COLOUR_DISTINCT)
        palette = candidates[chosen].clone()
        # texels seen by less than a pixel choose on their window's
        assign = torch.where(losses.seen, torch.stack([losses.per_pixel(raw[k]) for k in chosen]).argmin(0),
                             torch.stack([losses.pooled(raw[k]) for k in chosen]).argmin(0))
        current = losses.pooled(losses.sums({}))

        def snapping(palette):  # where the palette explains the photos as well as the texels' own colours
            return losses.explained(current, {"base_color": palette[assign]}, COLOUR_SNAP_MARGIN, seen)

        # the colours solved on every pixel, for the texels that take them: first all those
        # assigned, then only those they explain (an ink the palette lacks would pull them)
        lo, hi = layout.bounds["base_color"]
        terms = list(_affine_in_base_color(objective, losses.material))
        among = seen
        for _ in range(2):
            solved = _palette_colours(terms, colours, assign, among, len(palette)).clamp(lo, hi)
            used = torch.tensor([bool((among & (assign == p)).any()) for p in range(len(palette))])
            palette = torch.where(used[:, None], solved, palette)
            among = snapping(palette)
        snap = among
        value = to_unconstrained("base_color", palette[assign].double(), (lo, hi)).float()
        u = u.detach().clone()  # texels that do not move keep their variables exactly
        u[layout.slices["base_color"]] = torch.where(snap[..., None], value,
                                                     layout.grid(u, "base_color")).reshape(-1)
    return u, {"colours": [[round(float(v), 4) for v in c] for c in palette], "texels_snapped": int(snap.sum()),
               "texels_kept": int((seen & ~snap).sum())}


def _still_working(run, stage: str) -> None:
    """A progress event during work that records no evaluation: the last loss, a new time."""
    last = run.history[-1] if run.history else {"loss": float("nan"), "train_de2000": float("nan")}
    run.report("fit", stage, last["loss"], last["train_de2000"])


def fit_maps(run, settings: TextureSettings) -> dict[str, MapResult]:
    """Fit ``settings.maps`` from ``run.values`` (the scalar result); updates
    ``run.values`` (the scalars still in use) and returns the maps."""
    o = run.options
    # a normal map's bumps are as fine as the pixels: Cycles' pixel filter blurs them (rendered
    # at the pixel centres, the truth of the embossed panel read 3.34 ΔE2000 from Cycles, 2.41
    # filtered); the other maps keep the centres with lobes widened by the mesh's curvature
    filtered = NORMAL in settings.maps
    renderer = run.renderers.raster_textures(filter_pixels=filtered)
    chunk = gradient_chunk(o.device, o.threads)
    objective = Objective(renderer, run.train, o.loss, run.check_cancel, o.threads, chunk=chunk)
    # the Adam steps take their turns through independent sample sets, so the maps follow
    # the mean of several renders' noise, not one render's (held samples baked it into the texels)
    step_objectives = [objective]
    for _ in range(1, SAMPLE_SETS):
        renderer_k = run.renderers.raster_textures(pixels_from=step_objectives[-1].renderer, filter_pixels=filtered)
        step_objectives.append(Objective(renderer_k, run.train, o.loss, run.check_cancel, o.threads, chunk=chunk))
    # every covered pixel of the validation views: the levels are compared once each, and a
    # pixel subset's noise was measured to turn away a finer level that was better
    validator = (Objective(renderer, run.val, {"de2000": 1.0}, run.check_cancel, o.threads)
                 if run.val else None)
    uvs = [renderer.prepare(vi).geometry.uv[renderer.train_subsets[vi]] for vi in run.train]

    values = dict(run.values)
    scalars = [n for n in run.parameters_to_refine(values) if n not in settings.maps]
    space = ParameterSpace(values, scalars, o.bounds)
    bounds = {n: run.space.bounds_of(n) if n != NORMAL else None for n in settings.maps}
    start = {n: FLAT_NORMAL if n == NORMAL else values[n] for n in settings.maps}  # the scalar fit's, per map
    grid0 = {n: initial_grid(n, start[n], 1, bounds[n]) for n in settings.maps}  # the prior's centre
    grids = {n: g.clone() for n, g in grid0.items()}
    u_scalars = space.initial_vector().float()

    asked = settings.resolution
    settings, unresolved = _resolved(settings, uvs)  # the pyramid climbs to what the photos resolve
    levels = settings.levels()
    per_level = [settings.iterations // len(levels) + (1 if k < settings.iterations % len(levels) else 0)
                 for k in range(len(levels))]
    best = (math.inf, None)
    started = time.monotonic()
    log = []
    table = None  # (the scalars it was built for, an Objective through _TabulatedInRoughness)
    # a normal map beside a base colour map: the colours trade with the bumps' shading and the
    # scalars, so the scalar search solves them per candidate and the fine levels hold the inks
    colour_and_normals = NORMAL in settings.maps and "base_color" in settings.maps
    for size, steps in zip(levels, per_level):
        grids = {n: pyramid(g, size, n) for n, g in grids.items()}
        layout = _Layout(space, settings.maps, size, bounds)
        u = layout.pack(u_scalars, grids)
        # a coarse level's colours from every _stride-th train pixel (phase 0): each of its
        # texels is seen by hundreds (the woven fabric's 32² and 64² levels spent 140 s here)
        solve_stride = _stride(uvs, size, settings.resolution)
        if "base_color" in settings.maps:
            affine = _AffineInBaseColor.exact_for(layout.material(u))
            for _ in range(1 if affine else BASE_COLOR_PASSES):
                run.check_cancel()
                u = _base_color_least_squares(objective, layout, u, bounds["base_color"], solve_stride)
        # the scalars against the fit's own renderer (its sample counts; fewer samples, as the
        # maps' renderer has, were measured to prefer a rougher base)
        # with a normal map beside the colour map, each candidate with its own colours (see
        # _scalar_search); a colour map alone keeps its colours held: the printed label's
        # scalars went wrong with them solved again (roughness 0.29 and specular level 0.30 for
        # 0.35 and 0.5, the fit's own validation 2.62 ΔE2000; held: 0.34, 0.52, 1.79)
        resolve = None
        if colour_and_normals:
            def resolve(t, layout=layout, stride=solve_stride):
                return _base_color_least_squares(objective, layout, t, bounds["base_color"], stride)
        # the grid on the first level and those coarser than half the resolution; the finer ones
        # try the simplest values only: on all four benchmark textures (session 44) their grids
        # kept the coarser level's values, and with the colours solved per candidate (the
        # woven fabric) they cost 100 of its 519 s
        u = _scalar_search(run.train_obj, layout, u, resolve, grid=size == levels[0] or size < settings.resolution // 2)
        searched = _fitted_scalars(space, u)
        run.check_cancel()
        held = None  # (the variables held, for how many of the level's steps)
        if colour_and_normals and size >= settings.resolution // 2:
            _still_working(run, "textures (colour palette)")
            u, _ = _snap_colours(objective, layout, u, uvs, run.out_of_time)
            held = (layout.slices["base_color"], int(steps * COLOUR_FIRST_SHARE))
        k = space.dim
        tabulate = _TabulatedInRoughness.applies(settings.maps, layout.material(u)) and \
            _TabulatedInRoughness.table_bytes(renderer, run.train, settings.maps) <= TABLE_MEMORY
        stale = table is None or not torch.equal(table[0], u[:k])
        if tabulate and stale and run.out_of_time():
            tabulate, table = False, None  # no time left to build it: the steps that remain render
        elif tabulate and stale:
            _still_working(run, "textures (roughness table)")
            table = None  # the old table's memory first
            table = (u[:k].clone(), Objective(
                _TabulatedInRoughness([o_.renderer for o_ in step_objectives], run.train, layout.material(u.detach()),
                                      bounds.get("roughness") or (0.0, 1.0), o.threads, run.check_cancel,
                                      lambda: _still_working(run, "textures (roughness table)")),
                run.train, o.loss, run.check_cancel))
        tabulated = table[1] if tabulate else None
        u, search = _texel_search(tabulated or objective, layout, u, uvs, out_of_time=run.out_of_time,
                                  tick=lambda: _still_working(run, "textures (texel search)"))
        fast = tabulated
        if _AffineInBaseColor.applies(settings.maps, layout.material(u)):
            run.check_cancel()
            fast = Objective(_AffineInBaseColor([o_.renderer for o_ in step_objectives], run.train,
                                                layout.material(u.detach())), run.train, o.loss, run.check_cancel)
        stride = 1 if fast is not None else solve_stride
        joint = fast is None and stride == 1 and SCALAR_RATE > 0  # the scalars stepped too
        ks = 0 if joint else k  # the variables from ks on are stepped
        u_s, u_g = u[:ks].clone(), u[ks:].clone().requires_grad_(True)
        prior_w = prior_weights(settings, uvs, size)
        centre = {n: normalized(n, grid0[n]).expand(size, size, -1) for n in settings.maps}
        opt = torch.optim.Adam([u_g], lr=settings.learning_rate)
        rates = _step_rates(layout, ks, u_g)
        # a check renders every validation pixel, costing about one step that renders every
        # pixel; strided or stand-in steps cost a fraction of that, so those levels are not checked
        checked = validator is not None and fast is None and stride == 1 and best[1] is not None
        done, score, checks = 0, None, []
        for stop in _check_points(steps, LEVEL_CHECK_EVERY if checked else steps):
            with _centres_only([o_.renderer for o_ in step_objectives], stride > 1), \
                    _held_directions([o_.renderer for o_ in step_objectives], HELD_DIRECTIONS):
                done = _adam_steps(run, settings, layout, steps, opt, u_s, u_g, fast or step_objectives, centre,
                                   prior_w, size, stride, first=done, last=stop, held=held, rates=rates,
                                   warmup=LEVEL_WARMUP if joint else 0)
            if validator is not None:
                with torch.no_grad():
                    score = validator(layout.material(torch.cat([u_s, u_g.detach()])))[1]
                run.last_val = score
                if done == stop < steps:  # a check within the level (not its end, nor out of time)
                    checks.append({"steps": done, "validate_de2000": score})
                    if _behind(score, best[0]):
                        break  # worse than the best level: this level's further steps are not tried
            if done < stop or run.out_of_time():
                break  # out of time (the maps as they are were just measured)
        u = torch.cat([u_s, u_g.detach()])
        u_scalars = u[:k]
        grids = {n: layout.grid(u, n).clone() for n in settings.maps}
        log.append({"resolution": size, "steps": done, "validate_de2000": score,
                    "seconds": time.monotonic() - started, "scalars_searched": searched,
                    "scalars": _fitted_scalars(space, u), **({"search": search} if search else {}),
                    **({"checks": checks} if checks else {})})
        if score is not None:
            if _behind(score, best[0]):
                break  # finer maps made the unseen lighting worse: keep the best level
            best = (score, (u_scalars.clone(), {n: g.clone() for n, g in grids.items()}))
        if run.out_of_time():
            break
    table = tabulated = fast = None  # the table's memory is not needed by what follows
    if best[1] is not None:
        u_scalars, grids = best[1]
    u_scalars, grids = _snap(run, objective, validator, space, settings, bounds, uvs, u_scalars, grids, log, best[0])
    run.texture_log = log + [{"resolution": r, "steps": 0, "validate_de2000": None, "skipped": "unresolved",
                              "pixels_per_texel": seen_by} for r, seen_by in sorted(unresolved.items())]

    size = settings.resolution  # the resolution fitted: filled and scalars refined there, then upsampled
    grids = {n: pyramid(g, size, n) for n, g in grids.items()}
    weight = texel_weights(uvs, size)
    seen = (weight > 0).numpy()
    out = {}
    for n in settings.maps:
        texels = map_values(n, grids[n].double(), bounds[n]).float().numpy()
        filled = fill_unseen(texels, seen, start[n])
        out[n] = MapResult(n, filled, seen, weight.numpy(), run.scene.mesh.uv_name or "st")
    u_scalars = _refine_scalars(run, space, u_scalars, {n: torch.as_tensor(m.texels) for n, m in out.items()})
    run.values = dict(run.values, **{n: v for n, v in space.values(u_scalars.double()).items() if n in scalars})
    return {n: _upsampled(m, asked) for n, m in out.items()}


def _upsampled(result: MapResult, size: int) -> MapResult:
    """``result`` at ``size``² texels (a multiple of its own): its texels bilinearly (texel
    centres aligned; a normal map's decoded normals, renormalized), each texel observed where
    the texel it lies in was, and its weight shared evenly among the texels it became: the
    maps as fitted, finer. Upsampling the variables instead (a normal map's height, the
    colours before their logistic) and filling the texels unseen at ``size`` again changed
    them: the woven fabric fitted at 256² and written at 512² that way read 2.24 ΔE2000 on its
    own train views where the same fit written at 256² reads 1.97 (Cycles-judged 3.10 for 2.81)."""
    k = size // result.texels.shape[0]
    if k <= 1:
        return result
    t = torch.as_tensor(result.texels, dtype=torch.float64)
    if result.name == NORMAL:
        t = 2.0 * t - 1.0
    t = pyramid(t, size)  # bilinear, texel centres aligned (no name: the values as they are)
    if result.name == NORMAL:
        t = 0.5 * (t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12) + 1.0)
    observed = np.repeat(np.repeat(result.observed, k, 0), k, 1)
    weight = np.repeat(np.repeat(result.weight, k, 0), k, 1) / (k * k)
    return MapResult(result.name, t.float().numpy(), observed, weight.astype(np.float32), result.uv)


def _fitted_scalars(space: ParameterSpace, u: torch.Tensor) -> dict:
    """The scalars ``space`` fits, at ``u`` (its first ``space.dim`` variables), rounded for
    the level log: the scalar search and the steps move them level by level."""
    values = space.values(u[: space.dim].detach().double())
    return {n: (round(v, 4) if isinstance(v, float) else [round(x, 4) for x in v])
            for n, v in values.items() if n in space.fit}


def _behind(score: float, best: float) -> bool:
    """A level's validation ``score`` is worse than the ``best`` level's by more than
    :data:`LEVEL_TOLERANCE`: the climb ends (at a level's end or at a check within it)."""
    return score > best * (1 + LEVEL_TOLERANCE)


def _check_points(steps: int, every: int) -> list[int]:
    """The step counts after which a level's validation is measured: every ``every`` steps
    and at the level's end."""
    return list(range(every, steps, every)) + [steps] if every > 0 else [steps]


def _adam_steps(run, settings: TextureSettings, layout: _Layout, steps: int, opt, u_s: torch.Tensor,
                u_g: torch.Tensor, objectives, centre: dict, prior_w: torch.Tensor, size: int, stride: int,
                first: int = 0, last: int | None = None, held: tuple[slice, int] | None = None,
                rates: torch.Tensor | None = None, warmup: int = 0) -> int:
    """Steps ``first`` .. ``last`` (default: the end) of one level's ``steps`` Adam steps on
    the variables ``u_g`` (the full vector's last ones: the maps', with the scalars where
    ``u_s``, those held, is empty), a cosine-decaying step size over the level, ramped up
    linearly over its first ``warmup`` steps; each step through the next of ``objectives`` (a
    list: the sample sets in turn; else one stand-in), over every ``stride``-th loss pixel (the
    phases in turn, :func:`_phase`); ``held``: (variables of the full vector, a step count)
    kept still for the level's first steps (:data:`COLOUR_FIRST_SHARE`); ``rates``: each of
    ``u_g``'s step size as a multiple of the level's (:func:`_step_rates`), None for all alike.
    Returns the steps done so far (less than ``last`` when the time budget ran out)."""
    k = len(u_s)
    rounds = len(objectives) if isinstance(objectives, list) else 1
    last = steps if last is None else last
    for step in range(first, last):
        run.check_cancel()
        if run.out_of_time():
            return step
        opt.param_groups[0]["lr"] = settings.learning_rate * (  # cosine decay to a tenth
            0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1))))
        opt.param_groups[0]["lr"] *= min(1.0, (step + 1) / max(warmup, 1))  # the ramp up
        opt.zero_grad()
        u = torch.cat([u_s, u_g.detach()])
        step_objective = objectives[step % rounds] if isinstance(objectives, list) else objectives
        loss, de, grad = step_objective.loss_and_grad(layout.material, u, stride, _phase(step, rounds, stride))
        u = u.requires_grad_(True)
        with torch.enable_grad():
            reg = sum(regularizer(n, normalized(n, layout.grid(u, n)), centre[n], prior_w, settings,
                                  full_resolution=size == settings.resolution) for n in settings.maps)
            (g_reg,) = torch.autograd.grad(reg, u)
        total = (grad + g_reg).nan_to_num(0.0)
        if held is not None and step < held[1]:
            total[held[0]] = 0.0
        u_g.grad = total[k:].clone()
        before = u_g.detach().clone() if rates is not None else None
        opt.step()
        if rates is not None:  # Adam's moments as they are; the step itself scaled per variable
            with torch.no_grad():
                u_g.copy_(before + rates * (u_g - before))
        run.record("textures", loss + float(reg.detach()), de)
    return last


def _step_rates(layout: _Layout, k: int, u_g: torch.Tensor) -> torch.Tensor | None:
    """Each of the stepped variables ``u_g``'s Adam step as a multiple of the shared learning
    rate (``u_g`` is the full vector from ``k`` on: the maps', and the scalars' where ``k`` is
    0): :data:`NORMAL_RATE` on the normal map's, :data:`SCALAR_RATE` on the scalars', 1
    elsewhere; None when all are 1."""
    normal = NORMAL in layout.slices and NORMAL_RATE != 1.0
    scalars = k == 0 and layout.space.dim > 0 and SCALAR_RATE != 1.0
    if not (normal or scalars):
        return None
    rates = torch.ones_like(u_g, requires_grad=False)
    if normal:
        s = layout.slices[NORMAL]
        rates[s.start - k:s.stop - k] = NORMAL_RATE
    if scalars:
        rates[:layout.space.dim] = SCALAR_RATE
    return rates


def _stride(uvs: list, size: int, resolution: int) -> int:
    """The pixel stride of a level of ``size``² texels whose Adam steps render (no stand-in)
    on the way to ``resolution``²: 1 (every pixel) from half the final resolution on; coarser,
    the larger of :data:`COARSE_STRIDE` and the median train pixels (``uvs``) per seen texel
    over :data:`STEP_PIXELS`."""
    if size >= resolution // 2:
        return 1
    return max(COARSE_STRIDE, int(_pixels_per_texel(uvs, size) // STEP_PIXELS))


def _resolved(settings: TextureSettings, uvs: list) -> tuple[TextureSettings, dict[int, float]]:
    """``settings`` at the finest resolution the train pixels ``uvs`` resolve: the one asked
    for, halved while the median seen texel is seen by less than :data:`MIN_LEVEL_PIXELS`
    pixels (down to 8 texels a side); and each resolution left out, with its pixels a texel."""
    size, left_out = settings.resolution, {}
    while size > 8:
        seen_by = _pixels_per_texel(uvs, size)
        if seen_by >= MIN_LEVEL_PIXELS:
            break
        left_out[size] = round(seen_by, 3)
        size //= 2
    return replace(settings, resolution=size), left_out


def _pixels_per_texel(uvs: list, size: int) -> float:
    """The median, over the texels of a ``size``² map that the train pixels ``uvs`` see, of how
    much they see each (:func:`pbrfit.textures.texel_weights`); 0 when they see none."""
    weight = texel_weights(uvs, size)
    seen = weight[weight > 0]
    return float(seen.median()) if seen.numel() else 0.0


def _phase(step: int, rounds: int, stride: int) -> int:
    """The pixel phase of Adam step ``step`` (:meth:`Objective.loss_and_grad`), the sample
    sets taken in turn over ``rounds``: every ``stride`` steps see every phase, and each set
    sees every phase (shifted by one after each lcm(rounds, stride) steps)."""
    return (step + step // math.lcm(rounds, stride)) % stride


@contextmanager
def _renderers_set(renderers: list, attribute: str, value, active: bool):
    """Within: each of ``renderers`` that has ``attribute`` has it set to ``value`` (where
    ``active``); after: as before, also when the body raises."""
    was = [getattr(r, attribute, None) for r in renderers]
    if active:
        for r in renderers:
            if hasattr(r, attribute):
                setattr(r, attribute, value)
    try:
        yield
    finally:
        for r, w in zip(renderers, was):
            if hasattr(r, attribute):
                setattr(r, attribute, w)


def _held_directions(renderers: list, active: bool):
    """Within: ``renderers`` hold their BSDF-sampled directions in the gradient
    (:attr:`pbrfit.render.RasterRenderer.held_directions`, where ``active``), as before after."""
    return _renderers_set(renderers, "held_directions", True, active)


def _centres_only(renderers: list, active: bool):
    """Within: ``renderers`` shade pixel centres (their pixel filter off, where ``active``),
    as before after."""
    return _renderers_set(renderers, "filter_pixels", False, active)


def _snap(run, objective: Objective, validator: Objective | None, space: ParameterSpace, settings: TextureSettings,
          bounds: dict, uvs: list, u_scalars: torch.Tensor, grids: dict, log: list, score: float
          ) -> tuple[torch.Tensor, dict]:
    """(scalars, grids) after the snaps: a normal map made flat (:func:`_flat_normals`, only
    with validation views: it must earn its place there), :func:`_snap_to_palette` with the
    last palette search's materials, then :func:`_snap_colours` on a base colour map, each kept
    unless it makes the validation views worse by more than :data:`LEVEL_TOLERANCE` (each
    record goes into the kept level's ``log`` entry, as "flat_normals", "snap" and
    "colour_snap", with "kept" and the validation ΔE2000 before and after)."""
    searched = [lv["search"]["materials"] for lv in log if "search" in lv]
    size = next(iter(grids.values())).shape[0]
    layout = _Layout(space, settings.maps, size, bounds)
    u = layout.pack(u_scalars, grids)
    snaps = []
    if NORMAL in settings.maps and validator is not None and math.isfinite(score):
        snaps.append(("flat_normals", lambda u: _flat_normals(layout, u)))
    if searched:
        snaps.append(("snap", lambda u: _snap_to_palette(objective, layout, u, uvs, searched[-1], run.out_of_time)))
    if "base_color" in settings.maps:
        snaps.append(("colour_snap", lambda u: _snap_colours(objective, layout, u, uvs, run.out_of_time)))
    entry = next((lv for lv in reversed(log) if lv["resolution"] == size), None)
    for key, snap in snaps:
        _still_working(run, "textures (palette snap)")
        snapped_u, record = snap(u)
        if record is None:
            continue
        kept = True
        if validator is not None and math.isfinite(score):
            with torch.no_grad():
                snapped = validator(layout.material(snapped_u))[1]
            record["validate_de2000"], record["before_de2000"] = snapped, score
            kept = snapped <= score * (1 + LEVEL_TOLERANCE)
            if kept:
                run.last_val = score = snapped
        record["kept"] = kept
        if entry is not None:
            entry[key] = record
        if kept:
            u = snapped_u
    return u[:space.dim], {n: layout.grid(u, n).clone() for n in settings.maps}


def _flat_normals(layout: _Layout, u: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """(``u`` with the normal map flat, an empty record): the simpler material a fitted normal
    map must beat on the validation views to be kept (:func:`_snap`). Detail the photos cannot
    resolve is fitted to their noise: the woven fabric's threads came out 18.9° from the truth
    where the flat map is 18.3° (BENCHMARKS.md, sessions 28-29)."""
    flat = u.detach().clone()
    flat[layout.slices[NORMAL]] = 0.0  # the height field's zero: flat (textures.initial_grid)
    return flat, {}


def _refine_scalars(run, space: ParameterSpace, u_scalars: torch.Tensor, maps: dict) -> torch.Tensor:
    """The scalars still fitted, after the maps: :data:`SCALAR_EVALUATIONS` of L-BFGS on the
    fit's own objective with the final maps held."""
    if not space.fit or run.out_of_time():
        return u_scalars
    from .fit_run import lbfgs  # the fit run imports this module

    u = u_scalars.double().clone().requires_grad_(True)
    opt = lbfgs(u, SCALAR_EVALUATIONS)

    def material_of(x):
        return dict(space.material(x), **maps)

    def closure():
        opt.zero_grad()
        run.check_cancel()
        loss, de, grad = run.train_obj.loss_and_grad(material_of, u)
        u.grad = grad.nan_to_num(0.0)
        run.record("textures", loss, de)
        return torch.tensor(loss)

    opt.step(closure)
    return u.detach().float()
