"""Shading runs on the renderer's device.

There is no GPU in CI, so device discipline is checked on the CPU with PyTorch's ``meta``
device: with it as the default device, a tensor created anywhere without the renderer's
device lands on ``meta``, and the first operation mixing it with the renderer's tensors
raises, as mixing CPU and CUDA tensors does on a GPU. Where CUDA exists, the CUDA results
are compared with the CPU's.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from synthetic import bump_normals, render_references, write_job

from pbrfit.fit import FitOptions, fit_material
from pbrfit.job import load_job
from pbrfit.objective import Objective
from pbrfit.params import ParameterSpace, normalize_material
from pbrfit.pathtrace import PathRenderer, PathSettings
from pbrfit.render import RasterRenderer, SampleCounts

TRUTH = {"base_color": [0.7, 0.25, 0.1], "roughness": 0.3, "coat_weight": 0.5, "coat_roughness": 0.1}
WAX = {"base_color": [0.8, 0.7, 0.6], "roughness": 0.4, "subsurface_weight": 0.8,
       "subsurface_radius": [1.0, 0.5, 0.25], "subsurface_scale": 0.3}
FAST = SampleCounts(16, 4, 8, 4)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    job = write_job(tmp_path_factory.mktemp("device"), size=24, cameras=2)
    render_references(job, TRUTH, samples=FAST)
    return load_job(job).scene


@contextlib.contextmanager
def default_device(device: str):
    torch.set_default_device(device)
    try:
        yield
    finally:
        torch.set_default_device("cpu")


def material(values: dict, names: list[str]):
    space = ParameterSpace(normalize_material(values), names)
    u = space.initial_vector().clone().requires_grad_(True)
    return space, u


def raster_and_path(scene, device: str, values: dict = TRUTH, names=("base_color", "roughness", "coat_weight")):
    """Raster and path renders, full images, and the loss gradient of each, on ``device``."""
    out = {}
    for name, renderer in (("raster", RasterRenderer(scene, FAST, seed=3, max_loss_pixels=64, device=device)),
                           ("path", PathRenderer(scene, PathSettings(2, 3), seed=3, max_loss_pixels=64,
                                                 device=device))):
        space, u = material(values, list(names))
        objective = Objective(renderer, [0, 1], {"de2000": 1.0, "l1": 1.0})
        loss, de, grad = objective.loss_and_grad(space.material, u)
        loss_attached, _ = objective(space.material(u))
        loss_attached.backward()
        with torch.no_grad():
            image = renderer.render_image(0, space.material(u.detach()))
        out[name] = (loss, de, grad, u.grad, image)
    return out


def test_shading_creates_no_tensor_off_the_renderers_device(scene):
    """Every tensor of shading, sampling, path replay and the losses is created on the
    renderer's device: under a ``meta`` default device a stray one raises."""
    expected = raster_and_path(scene, "cpu")
    with default_device("meta"):
        got = raster_and_path(scene, "cpu")
    for name in ("raster", "path"):
        (loss, de, grad, grad2, image), (loss_e, de_e, grad_e, grad2_e, image_e) = got[name], expected[name]
        assert loss == loss_e and de == de_e, name
        assert grad.device.type == "cpu" and torch.equal(grad, grad_e) and torch.equal(grad2, grad2_e), name
        assert np.array_equal(image, image_e) and image.any(), name


def test_subsurface_walks_return_to_the_renderers_device(scene):
    names = ["base_color", "subsurface_weight", "subsurface_radius"]
    expected = PathRenderer(scene, PathSettings(2, 3), seed=5, max_loss_pixels=32)
    with default_device("meta"):
        renderer = PathRenderer(scene, PathSettings(2, 3), seed=5, max_loss_pixels=32, device="cpu")
        space, u = material(WAX, names)
        _, _, grad = Objective(renderer, [0], {"l1": 1.0}).loss_and_grad(space.material, u)
    space, u = material(WAX, names)
    _, _, grad_e = Objective(expected, [0], {"l1": 1.0}).loss_and_grad(space.material, u)
    assert torch.equal(grad, grad_e) and bool((grad != 0).any())


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@cuda
def test_cuda_shading_matches_the_cpu(scene):
    """Same random numbers on both devices (drawn on the CPU): raster renders agree to float
    rounding, path renders within the rounding a different ray engine and summation order
    give a path (a few paths per pixel change)."""
    cpu, gpu = raster_and_path(scene, "cpu"), raster_and_path(scene, "cuda")
    r_cpu, r_gpu = cpu["raster"][4], gpu["raster"][4]
    assert np.abs(r_gpu - r_cpu).max() <= 1e-3 * max(float(r_cpu.max()), 1e-6)
    for name in ("raster", "path"):
        assert gpu[name][2].device.type == "cpu"
        np.testing.assert_allclose(gpu[name][0], cpu[name][0], rtol=0.02)
    p_cpu, p_gpu = cpu["path"][4], gpu["path"][4]
    assert abs(float(p_gpu.mean()) - float(p_cpu.mean())) <= 0.02 * float(p_cpu.mean())


@cuda
def test_a_fit_on_cuda_finds_what_the_cpu_finds(tmp_path):
    """A material the fitted parameters can express (a plain dielectric: the coated ``TRUTH``
    fitted without its coat leaves roughness to stand in for the coat along a flat valley,
    where two summation orders ended 0.014 apart on an H200): both devices find the truth, and
    each other to 0.01, about what the sample counts alone move roughness by on the CPU (0.292
    with these, 0.282 with the defaults)."""
    truth = {"base_color": [0.7, 0.25, 0.1], "roughness": 0.3}
    job = write_job(tmp_path / "plain", size=32, cameras=3)
    render_references(job, truth, samples=FAST)
    scene = load_job(job).scene
    results = {}
    for device in ("cpu", "cuda"):
        opts = FitOptions(parameters=["base_color", "roughness"], iterations=40, backend="raster", samples=FAST,
                          device=device)
        results[device] = fit_material(scene, opts).material
    for name in ("base_color", "roughness"):
        np.testing.assert_allclose(results["cuda"][name], results["cpu"][name], atol=0.01, err_msg=name)
        np.testing.assert_allclose(results["cuda"][name], truth[name], atol=0.03, err_msg=name)


def test_the_palette_colour_solve_runs_where_its_terms_are():
    """The label snap's least squares (:func:`pbrfit.texture_fit._palette_colours`) sums its
    systems on the device of the render terms and hands the colours back on the maps' device
    (a CUDA fit once failed here, mixing a CPU matrix with CUDA terms); PyTorch's meta device
    as the default stands in for "not the terms' device" on the CPU."""
    from pbrfit.texture_fit import _palette_colours
    from pbrfit.textures import lookup

    g = torch.Generator().manual_seed(0)
    size, count, n = 4, 2, 200
    uv = torch.rand(n, 2, generator=g)
    s, d = 0.1 * torch.rand(n, 3, generator=g), 0.5 + torch.rand(n, 3, generator=g)
    inks = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.2, 0.9]])
    assign = (torch.arange(size * size) // (size * size // count)).reshape(size, size)
    among = torch.ones(size, size, dtype=torch.bool)
    colours = torch.zeros(size, size, 3)
    terms = [(s, d, uv, s + d * lookup(inks[assign], uv))]
    expected = _palette_colours(terms, colours, assign, among, count)
    with default_device("meta"):
        got = _palette_colours(terms, colours, assign, among, count)
    assert got.device.type == "cpu" and torch.allclose(got, expected)
    assert torch.allclose(expected, inks, atol=1e-4), expected


@pytest.fixture(scope="module")
def uv_scene(tmp_path_factory):
    """(a one-camera scene with texture coordinates, the TRUTH material's tensors)."""
    job = write_job(tmp_path_factory.mktemp("uv"), size=16, cameras=1, uvs=True)
    render_references(job, TRUTH, samples=FAST)
    space = ParameterSpace(normalize_material(TRUTH), [])
    return load_job(job).scene, space.material(space.initial_vector())


def test_texture_maps_create_no_tensor_off_the_renderers_device(uv_scene):
    """Maps (a base colour and a normal map) looked up and turned into shading frames on the
    renderer's device only, raster and path, gradients included."""
    scene, base = uv_scene
    rng = np.random.default_rng(0)
    colour = torch.as_tensor(rng.uniform(0.2, 0.8, (8, 8, 3)), dtype=torch.float32)
    normal = torch.as_tensor(rng.uniform(0.4, 0.6, (8, 8, 3)), dtype=torch.float32)
    normal[..., 2] = 0.95

    def run():
        out = []
        for renderer in (RasterRenderer(scene, FAST, seed=3, max_loss_pixels=32),
                         PathRenderer(scene, PathSettings(2, 3), seed=3, max_loss_pixels=32)):
            c, n = colour.clone().requires_grad_(True), normal.clone().requires_grad_(True)
            renderer.prepare(0)
            value = renderer.shade(0, dict(base, base_color=c, normal=n), renderer.train_subsets[0]).sum()
            g = torch.autograd.grad(value, [c, n])
            out.append((float(value.detach()), g[0], g[1]))
        return out

    expected = run()
    with default_device("meta"):
        got = run()
    for (v, gc, gn), (v_e, gc_e, gn_e) in zip(got, expected):
        assert v == v_e and torch.equal(gc, gc_e) and torch.equal(gn, gn_e) and float(gn.abs().sum()) > 0


def test_the_roughness_table_creates_no_tensor_off_the_renderers_device(uv_scene):
    """The roughness and metallic maps' stand-in (texture_fit._TabulatedInRoughness) builds
    its table and looks the maps up on the renderer's device only, gradients included."""
    from pbrfit.texture_fit import _TabulatedInRoughness

    scene, base = uv_scene
    rng = np.random.default_rng(0)
    rough = torch.as_tensor(rng.uniform(0.1, 0.9, (8, 8, 1)), dtype=torch.float32)
    metal = torch.as_tensor(rng.uniform(0.0, 1.0, (8, 8, 1)), dtype=torch.float32)

    def run():
        renderer = RasterRenderer(scene, FAST, seed=3, max_loss_pixels=32)
        renderer.prepare(0)
        r, m = rough.clone().requires_grad_(True), metal.clone().requires_grad_(True)
        material = dict(base, roughness=r, metallic=m)
        table = _TabulatedInRoughness([renderer], [0], material, (0.0, 1.0))
        value = table.shade(0, material, renderer.train_subsets[0]).sum()
        return float(value.detach()), *torch.autograd.grad(value, [r, m])

    v_e, gr_e, gm_e = run()
    with default_device("meta"):
        v, gr, gm = run()
    assert v == v_e and torch.equal(gr, gr_e) and torch.equal(gm, gm_e) and float(gr.abs().sum()) > 0


def _truth_maps(maps: tuple, res: int) -> dict:
    """Small truth maps for :func:`test_a_texture_fit_on_cuda_finds_what_the_cpu_finds`: a
    blue band on red (base colour), paint patches on metal (roughness, metallic), bumps (a
    height field's normals, encoded (n + 1) / 2)."""
    v, u = np.mgrid[0:res, 0:res]
    band = (v >= res // 4) & (v < 3 * res // 4) & (u < res // 2)
    out = {}
    if "base_color" in maps:
        out["base_color"] = np.where(band[..., None], [0.1, 0.3, 0.8], [0.7, 0.1, 0.1]).astype(np.float32)
    if "metallic" in maps:
        out["metallic"] = np.where(band, 0.0, 1.0)[..., None].astype(np.float32)
        out["roughness"] = np.where(band, 0.6, 0.2)[..., None].astype(np.float32)
    if "normal" in maps:
        out["normal"] = ((bump_normals(res, k=2) + 1) / 2).astype(np.float32)
    return out


@cuda
@pytest.mark.parametrize("maps", [("base_color",), ("roughness", "metallic"), ("normal",)])
def test_a_texture_fit_on_cuda_finds_what_the_cpu_finds(tmp_path, maps):
    """Maps and the scalars fitted on each device from the same raster references, through
    each map kind's own steps (the colour snap, the materials' palette search, the normal
    map's slopes): the maps agree texel by texel, up to float rounding carried through the
    pyramid's Adam steps and the snaps."""
    from pbrfit.textures import TextureSettings

    res = 16
    job = write_job(tmp_path / "maps", uvs=True, size=32, cameras=3)
    render_references(job, {"base_color": [0.5, 0.5, 0.5], "roughness": 0.35}, samples=FAST,
                      maps=_truth_maps(maps, res))
    scene = load_job(job).scene
    fitted, scalars = {}, {}
    for device in ("cpu", "cuda"):
        opts = FitOptions(parameters=["base_color", "roughness"], iterations=10, backend="raster", samples=FAST,
                          device=device, textures=TextureSettings(maps=maps, resolution=res, iterations=24))
        result = fit_material(scene, opts)
        fitted[device] = {m: np.asarray(result.textures[m].texels, np.float64) for m in maps}
        scalars[device] = {n: result.material[n] for n in ("base_color", "roughness") if n not in maps}
    for m in maps:
        assert fitted["cuda"][m].shape == fitted["cpu"][m].shape
        diff = np.abs(fitted["cuda"][m] - fitted["cpu"][m]).mean()
        assert diff < 0.01, (m, diff)
    for n, v in scalars["cpu"].items():
        np.testing.assert_allclose(scalars["cuda"][n], v, atol=0.02, err_msg=n)


def _normal_mapped(size: int = 8):
    """A material with a bumpy normal map (and its flat optimization vector)."""
    from pbrfit.texture_fit import _Layout
    from pbrfit.textures import NORMAL

    space = ParameterSpace(normalize_material(TRUTH), ["base_color", "roughness"])
    layout = _Layout(space, (NORMAL,), size, {NORMAL: None})
    n = bump_normals(size, k=2)
    slopes = torch.as_tensor(n[..., :2] / n[..., 2:], dtype=torch.float32)
    return layout, layout.pack(space.initial_vector().float(), {NORMAL: slopes})


def test_a_chunked_gradient_is_the_whole_views(tmp_path):
    """The texture fit's gradient taken a chunk of pixels at a time (what bounds its memory on
    the CPU) equals the gradient of whole views (what a CUDA device takes, fewer and larger
    kernels): the same loss and gradient up to float rounding."""
    job = write_job(tmp_path / "maps", uvs=True, size=24, cameras=2)
    render_references(job, TRUTH, samples=FAST)
    renderer = RasterRenderer(load_job(job).scene, FAST, seed=1, max_loss_pixels=1 << 40)
    layout, u = _normal_mapped()
    results = [Objective(renderer, [0, 1], {"de2000": 1.0}, chunk=c).loss_and_grad(layout.material, u)
               for c in (50, None)]
    assert len(renderer.train_subsets[0]) > 100  # several chunks
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    assert float(results[1][2].abs().sum()) > 0
    torch.testing.assert_close(results[0][2], results[1][2], rtol=1e-4, atol=1e-6)


def test_strided_gradients_cover_the_whole_views_over_their_phases(tmp_path):
    """``loss_and_grad(stride=k, phase=p)`` (the coarse levels' steps): over the k phases every
    loss pixel once, so the phases' losses and gradients, weighed by their pixel counts, are
    the whole views'; chunked or not; filtered renders too."""
    job = write_job(tmp_path / "maps", uvs=True, size=24, cameras=2)
    render_references(job, TRUTH, samples=FAST)
    layout, u = _normal_mapped()
    for filtered in (False, True):
        renderer = RasterRenderer(load_job(job).scene, FAST, seed=1, max_loss_pixels=1 << 40, filter_pixels=filtered)
        whole = Objective(renderer, [0], {"de2000": 1.0}).loss_and_grad(layout.material, u)
        n = len(renderer.train_subsets[0])
        for chunk in (None, 20):
            objective = Objective(renderer, [0], {"de2000": 1.0}, chunk=chunk)
            phases = [objective.loss_and_grad(layout.material, u, stride=3, phase=p) for p in range(3)]
            counts = [len(range(p, n, 3)) for p in range(3)]
            assert sum(c * r[0] for c, r in zip(counts, phases)) / n == pytest.approx(whole[0], rel=1e-5)
            torch.testing.assert_close(sum(c * r[2] for c, r in zip(counts, phases)) / n, whole[2],
                                       rtol=1e-4, atol=1e-6)
            assert not torch.allclose(phases[0][2], phases[1][2])  # different pixels


def test_the_steps_phases_and_the_filter_switch():
    """Every ``stride`` steps see every pixel phase and each sample set sees every phase; the
    coarse levels' switch to pixel centres is undone after (and after an error)."""
    from pbrfit.texture_fit import _centres_only, _phase

    for rounds, stride in ((3, 4), (2, 4), (1, 4), (3, 1)):
        phases = [_phase(step, rounds, stride) for step in range(4 * rounds * stride)]
        assert all(set(phases[i:i + stride]) == set(range(stride)) for i in range(0, len(phases), stride))
        for j in range(rounds):
            assert set(phases[j::rounds]) == set(range(stride))

    class Renderer:
        filter_pixels = True

    r = Renderer()
    with _centres_only([r], True):
        assert not r.filter_pixels
    assert r.filter_pixels
    with pytest.raises(RuntimeError), _centres_only([r], True):
        raise RuntimeError
    assert r.filter_pixels
    with _centres_only([r], False):
        assert r.filter_pixels


def test_the_base_colour_least_squares_renders_pixel_centres_through_a_filtering_renderer(tmp_path):
    """S + D b holds pixel by pixel only at the centres (through the filter a pixel mixes its
    neighbours' colours): the terms are the unfiltered renderer's, and the filter is back on."""
    from pbrfit.texture_fit import _affine_in_base_color

    job = write_job(tmp_path / "maps", uvs=True, size=24, cameras=1)
    render_references(job, TRUTH, samples=FAST)
    scene = load_job(job).scene
    material = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in normalize_material(TRUTH).items()
                if not isinstance(v, str)}
    material["base_color"] = torch.rand(8, 8, 3, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    terms = []
    for filtered in (True, False):
        renderer = RasterRenderer(scene, FAST, seed=1, max_loss_pixels=1 << 40, filter_pixels=filtered)
        terms.append(list(_affine_in_base_color(Objective(renderer, [0], {"de2000": 1.0}), material)))
        assert renderer.filter_pixels == filtered
    for (s0, d0, _, _), (s1, d1, _, _) in zip(*terms):
        torch.testing.assert_close(s0, s1)
        torch.testing.assert_close(d0, d1)


def test_the_gradient_chunk_is_bounded_on_the_cpu():
    from pbrfit.texture_fit import GRADIENT_CHUNK, gradient_chunk

    assert gradient_chunk("cpu", 4) == GRADIENT_CHUNK


@cuda
def test_the_gradient_chunk_on_cuda_follows_free_memory():
    from pbrfit.texture_fit import CUDA_CHUNK_LIMIT, GRADIENT_CHUNK, GRAPH_BYTES_PER_PIXEL, gradient_chunk

    chunk = gradient_chunk("cuda", 4)
    free, _ = torch.cuda.mem_get_info()
    assert GRADIENT_CHUNK <= chunk <= CUDA_CHUNK_LIMIT
    assert chunk in (GRADIENT_CHUNK, CUDA_CHUNK_LIMIT) or chunk * 4 * GRAPH_BYTES_PER_PIXEL <= free // 2
