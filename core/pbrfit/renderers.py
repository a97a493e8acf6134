"""Every renderer a run makes, with its seed and sample counts decided here and nowhere else.

Seeds: the renderers the fit optimizes through use ``options.seed``; the renderers that
judge it (the path refinement's checks, the final metrics and report images) use
``options.seed + 1``, so that their Monte Carlo noise is independent of the fit's.
Samples: the fit's raster renderer uses ``options.samples``; final metrics use twice as
many (raster) or :meth:`Renderers.metrics_spp` paths per pixel (path): ΔE2000 of a noisy
pixel reads high, so the judge must be less noisy than the fit.
"""

from __future__ import annotations

from .pathtrace import PathRenderer, PathSettings
from .render import RasterRenderer, SampleCounts

__all__ = ["Renderers", "PATH_CHECK_SPP", "PATH_CHECK_PIXELS", "TEXTURE_SAMPLES", "SUBSURFACE_TRIAL_PIXELS",
           "SUBSURFACE_TRIAL_BLOCK", "SUBSURFACE_TRIAL_SPP"]

#: samples per pixel of the texture maps' fit (:mod:`pbrfit.texture_fit`): it shades every
#: covered pixel of every train view at each step, so fewer than the scalar fit's; half
#: those counts were measured to bias roughness up (noisy highlights read as rough ones)
TEXTURE_SAMPLES = SampleCounts(32, 8, 16, 8)

#: paths per pixel and pixels per view of the path refinement's checks (fixed paths: many
#: per pixel on few pixels, as ΔE2000 of noisy pixels reads high)
PATH_CHECK_SPP, PATH_CHECK_PIXELS = 64, 256

#: the subsurface trial's renderer (:meth:`pbrfit.fit_run.FitRun.choose_subsurface`): pixels
#: per view, taken as whole blocks of this side (32 per view), and paths per pixel: it compares
#: block means, in which the references' noise is 16x smaller than in single pixels (a wax's
#: references at 256 samples read 8 ΔE2000 from their own noise, which hid what its walks buy).
#: Its own noise then matters: 64 blocks per view at 16 paths per pixel read a glossy plastic's
#: error anywhere within +-25% (three path sets), 16 at 64 within +-4% (the error of two
#: renders' product falls with the square of the paths); 16 blocks per view left the wax on
#: Suzanne's 29% gain on its two validation views at 1.3 standard errors
SUBSURFACE_TRIAL_PIXELS, SUBSURFACE_TRIAL_BLOCK, SUBSURFACE_TRIAL_SPP = 512, 4, 64


class Renderers:
    """The renderers of one run of ``scene`` with ``options`` (:class:`pbrfit.options.FitOptions`)."""

    def __init__(self, scene, options):
        self.scene, self.options = scene, options

    @property
    def judge_seed(self) -> int:
        return self.options.seed + 1

    def raster_fit(self) -> RasterRenderer:
        """The raster stages' renderer."""
        o = self.options
        return RasterRenderer(self.scene, o.samples, o.seed, o.max_loss_pixels, o.device)

    def raster_twin(self, fit: RasterRenderer) -> RasterRenderer:
        """The raster fit renderer ``fit``'s pixels with independent samples (the judge's seed):
        the pair estimates a material's error without its Monte Carlo noise
        (:func:`pbrfit.objective.unbiased_relative_error`)."""
        o = self.options
        return RasterRenderer(self.scene, o.samples, self.judge_seed, o.max_loss_pixels, o.device, pixels_from=fit)

    def raster_calibration(self, yaw_spread: float) -> RasterRenderer:
        """The calibration's renderer (:mod:`pbrfit.calibration`): the fit's samples and seed,
        environments sampled evenly for any yaw within ``yaw_spread`` radians."""
        o = self.options
        return RasterRenderer(self.scene, o.samples, o.seed, o.max_loss_pixels, o.device, yaw_spread=yaw_spread)

    def raster_known(self, index: int, yaw_spread: float = 0.0) -> RasterRenderer:
        """A renderer of the known object ``scene.known[index]`` (the calibration's reference,
        :mod:`pbrfit.calibration`) as :meth:`raster_calibration` renders the part; the part and
        the other known objects hide it where they are in front."""
        from dataclasses import replace

        from .scene import KnownObject

        o, scene = self.options, self.scene
        known = scene.known[index]
        hiding = (KnownObject(scene.mesh, {}),) + tuple(k for j, k in enumerate(scene.known) if j != index)
        scene = replace(scene, mesh=known.mesh, known=hiding, initial_material=known.material)
        return RasterRenderer(scene, o.samples, o.seed, o.max_loss_pixels, o.device, yaw_spread=yaw_spread)

    def raster_textures(self, pixels_from: RasterRenderer | None = None, filter_pixels: bool = False
                        ) -> RasterRenderer:
        """The texture maps' renderer: every loss pixel of a view, :data:`TEXTURE_SAMPLES`.
        With ``pixels_from`` (another such renderer), the same pixels with random numbers of
        its own (a seed of its own): another, independent set of samples. ``filter_pixels``:
        each pixel the filtered mean of its neighbours' centres (a normal map's detail,
        :class:`pbrfit.render.RasterRenderer`)."""
        o = self.options
        seed = o.seed if pixels_from is None else pixels_from.seed + 7919
        return RasterRenderer(self.scene, TEXTURE_SAMPLES, seed, 1 << 40, o.device, pixels_from=pixels_from,
                              filter_pixels=filter_pixels)

    def path_fit(self) -> PathRenderer:
        """The path refinement's renderer (fresh paths each iteration; spp rises during it)."""
        o = self.options
        return PathRenderer(self.scene, PathSettings(o.path_spp, o.path_depth), o.seed, o.max_loss_pixels, o.device)

    def path_check(self) -> PathRenderer:
        """The path refinement's checks: fixed paths, :data:`PATH_CHECK_SPP` on
        :data:`PATH_CHECK_PIXELS` pixels per view."""
        o = self.options
        return PathRenderer(self.scene, PathSettings(PATH_CHECK_SPP, o.path_depth), self.judge_seed,
                            PATH_CHECK_PIXELS, o.device)

    def subsurface_trial(self) -> PathRenderer:
        """The subsurface trial's renderer: fixed paths, :data:`SUBSURFACE_TRIAL_SPP` on
        :data:`SUBSURFACE_TRIAL_PIXELS` pixels per view in whole blocks of
        :data:`SUBSURFACE_TRIAL_BLOCK` x :data:`SUBSURFACE_TRIAL_BLOCK` pixels."""
        o = self.options
        return PathRenderer(self.scene, PathSettings(SUBSURFACE_TRIAL_SPP, o.path_depth), self.judge_seed,
                            SUBSURFACE_TRIAL_PIXELS, o.device, block=SUBSURFACE_TRIAL_BLOCK)

    def metrics_spp(self, material: dict | None = None) -> int:
        """Paths per pixel of the final metrics of ``material`` (default: the scene's initial
        material): twice the refinement's most, at least 64; half that when its subsurface is
        on (a random walk costs ~20x a surface path)."""
        o = self.options
        spp = max(64, 2 * o.path_max_spp)
        material = self.scene.initial_material if material is None else material
        if (material or {}).get("subsurface_weight", 0.0) > 0.0:
            spp //= 2
        return spp

    def metrics(self, spp: int | None = None, material: dict | None = None):
        """The final metrics' and report images' renderer of ``material`` (default: the
        scene's initial material): the fit's own backend (path traced for auto and path) with
        more samples than the fit used (:meth:`metrics_spp`). ``spp`` overrides the paths per
        pixel (a time budget cuts them)."""
        o = self.options
        if o.backend == "raster":
            s = o.samples
            return RasterRenderer(self.scene, SampleCounts(2 * s.light, 2 * s.cosine, 2 * s.specular, 2 * s.coat),
                                  self.judge_seed, o.max_loss_pixels, o.device)
        return PathRenderer(self.scene, PathSettings(spp or self.metrics_spp(material), o.path_depth), self.judge_seed,
                            o.max_loss_pixels, o.device)
