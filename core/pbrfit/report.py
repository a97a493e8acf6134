"""The fit report: one self-contained HTML file a person can read at a glance.

Everything is inline: images are PNG ``data:`` URIs, styles sit in one ``<style>`` element,
charts are inline SVG, and a Content-Security-Policy ``<meta>`` forbids loading anything
else (and running any script), so the file can be mailed, archived or opened offline.
The file is pure ASCII (non-ASCII characters become character references), which makes it
independent of the platform's default text encoding.

Input conventions (see :func:`write_report` for the full ``data`` layout): images are
linear Rec.709 float (H, W, 3), row 0 at the top; ``exposure`` is a display multiplier in
linear light; ΔE is CIEDE2000; SSIM in [-1, 1] (1 = identical); L1 the mean absolute
difference of linear values. All user-provided strings are HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from typing import Any, Iterable, Mapping

import numpy as np

from . import fit_health
from .atomic import atomic_write_text
from .figures import DE_VMAX, view_figure
from .heatmap import colorbar_svg, png_bytes, to_srgb8
from .params import STAGES

__all__ = ["GRADE_THRESHOLDS", "grade", "render_report", "write_report"]

#: Validation mean ΔE2000 at or below which a fit is graded "good" and "fair"; above the
#: second it is "poor". A ΔE2000 of about 1 is a just-noticeable difference side by side;
#: 2 is visible only on close comparison; above 5 the colours read as different.
GRADE_THRESHOLDS: tuple[float, float] = (2.0, 5.0)

_SPLIT_ORDER = ("train", "validate")
_SPLIT_LABEL = {"train": "Training", "validate": "Validation"}


def grade(de2000_mean: float | None) -> str:
    """``"good"``, ``"fair"`` or ``"poor"`` for a mean ΔE2000 (``"unknown"`` for None/NaN)."""
    if de2000_mean is None or not math.isfinite(float(de2000_mean)):
        return "unknown"
    if de2000_mean <= GRADE_THRESHOLDS[0]:
        return "good"
    if de2000_mean <= GRADE_THRESHOLDS[1]:
        return "fair"
    return "poor"


# --- small formatting helpers ------------------------------------------------------------

def _e(value: Any) -> str:
    """HTML-escape any value's ``str`` (quotes too, so it is safe in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def _get(item: Any, key: str, default: Any = None) -> Any:
    """``item[key]`` for mappings, ``item.key`` for objects (e.g. plausibility Flags)."""
    if isinstance(item, Mapping):
        return item.get(key, default)
    return getattr(item, key, default)


def _num(value: Any, digits: int) -> str:
    if value is None:
        return "&mdash;"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return _e(value)
    if not math.isfinite(v):
        return "&mdash;"
    return f"{v:.{digits}f}"


def _value(value: Any) -> str:
    """A parameter value: scalars to 4 significant digits, colours as a tuple."""
    if value is None:
        return "&mdash;"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "(" + ", ".join(f"{float(v):.4g}" for v in np.asarray(value, dtype=float).ravel()) + ")"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float, np.floating, np.integer)):
        return f"{float(value):.4g}"
    return _e(value)


def _swatch(value: Any) -> str:
    """A small square showing a linear RGB colour in sRGB, or '' for non-colours."""
    arr = np.asarray(value, dtype=float) if isinstance(value, (list, tuple, np.ndarray)) else None
    if arr is None or arr.size != 3:
        return ""
    r, g, b = to_srgb8(arr.reshape(1, 1, 3))[0, 0]
    return f'<span class="swatch" style="background:rgb({r},{g},{b})"></span>'


def _data_uri(image_u8: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image_u8)).decode("ascii")


def _stage_label(stage: Any) -> str:
    if isinstance(stage, (int, np.integer)) and int(stage) in STAGES:
        return f"{int(stage)} {STAGES[int(stage)]}"
    return str(stage)


# --- images ------------------------------------------------------------------------------

def _view_images(view: Mapping, max_size: int, vmax: float) -> tuple[str, str, str, tuple[int, int]]:
    """Data URIs of the view's figures (:func:`pbrfit.figures.view_figure`) and their size."""
    try:
        fig = view_figure(view["reference"], view["fit"], view["de_map"], view.get("mask"),
                          exposure=float(view.get("exposure", 1.0) or 1.0), max_size=max_size, vmax=vmax)
    except ValueError as e:
        raise ValueError(f"report view '{view.get('name', '?')}': {e}") from None
    return _data_uri(fig.reference), _data_uri(fig.fit), _data_uri(fig.heatmap), fig.reference.shape[:2]


# --- convergence chart -------------------------------------------------------------------

def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo if hi > lo else 1.0
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if raw <= m * mag)
    start = math.ceil(lo / step - 1e-9) * step
    out, v = [], start
    while v <= hi + 1e-9 * span:
        out.append(round(v, 10))
        v += step
    return out


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


_LOSS_COLOUR, _TRAIN_COLOUR, _VALIDATE_COLOUR = "#1f4e79", "#d9822b", "#2e8b57"
# Presentation attributes rather than CSS classes: the chart stays right if copied out.
_LINE_STYLE = {
    "loss": f'stroke="{_LOSS_COLOUR}" stroke-width="1.8"',
    "train": f'stroke="{_TRAIN_COLOUR}" stroke-width="1.8"',
    "validate": f'stroke="{_VALIDATE_COLOUR}" stroke-width="1.8" stroke-dasharray="5 3"',
}


def _svg_text(x: float, y: float, content: str, *, size: int = 11, fill: str = "#556",
              anchor: str = "start", rotate: int = 0) -> str:
    """An SVG text element; ``content`` must already be escaped markup."""
    turn = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" text-anchor="{anchor}"{turn}>'
            f'{content}</text>')


def _path_stage_caption(history: list[Mapping]) -> str:
    """A note under the chart when a path-traced stage ran: its loss is another quantity."""
    if not any(_get(h, "stage") == "path" for h in history):
        return ""
    return ('<p class="muted">The path-traced stage minimizes a relative squared error (unbiased under '
            'Monte Carlo noise) instead of the raster stages\' ΔE2000 + L1, so the loss curve changes scale '
            'there; its ΔE2000 values come from fixed-path check renders every few iterations.</p>')


def _convergence_svg(history: list[Mapping]) -> str:
    """Loss (log scale, left axis) and ΔE2000 (linear, right axis) against iteration."""
    pts = [h for h in history if _finite(_get(h, "iteration")) is not None]
    if not pts:
        return '<p class="muted">No optimization history was recorded.</p>'
    W, H, ml, mr, mt, mb = 760, 320, 64, 64, 28, 66
    pw, ph = W - ml - mr, H - mt - mb
    its = [float(_get(h, "iteration")) for h in pts]
    x0, x1 = min(its), max(its)
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5

    def sx(x: float) -> float:
        return ml + pw * (x - x0) / (x1 - x0)

    loss = [(float(_get(h, "iteration")), _finite(_get(h, "loss"))) for h in pts]
    loss = [(x, math.log10(v)) for x, v in loss if v is not None and v > 0]
    train = [(float(_get(h, "iteration")), _finite(_get(h, "train_de2000"))) for h in pts]
    train = [(x, v) for x, v in train if v is not None]
    val = [(float(_get(h, "iteration")), _finite(_get(h, "validate_de2000"))) for h in pts]
    val = [(x, v) for x, v in val if v is not None]

    out = [f'<svg class="chart" width="100%" viewBox="0 0 {W} {H}" role="img" '
           f'aria-label="Convergence: loss and Delta E 2000 against iteration">']
    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fff" stroke="#ccd"/>')

    # Left axis: log10(loss), whole decades.
    if loss:
        l0, l1 = math.floor(min(v for _, v in loss)), math.ceil(max(v for _, v in loss))
        if l1 == l0:
            l1 = l0 + 1

        def sy_loss(v: float) -> float:
            return mt + ph * (1 - (v - l0) / (l1 - l0))

        step = max(1, math.ceil((l1 - l0) / 6))
        for d in range(l0, l1 + 1, step):
            y = sy_loss(d)
            out.append(f'<line x1="{ml}" y1="{y:.1f}" x2="{ml + pw}" y2="{y:.1f}" stroke="#eef" />')
            out.append(_svg_text(ml - 6, y + 4, f'10<tspan dy="-5" font-size="8">{d}</tspan>', anchor="end"))
        out.append(_svg_text(14, mt + ph / 2, "loss (log scale)", fill=_LOSS_COLOUR, anchor="middle", rotate=-90))
    # Right axis: ΔE2000, linear from 0.
    des = [v for _, v in train + val]
    if des:
        dmax = max(des) * 1.1 or 1.0
        dticks = _ticks(0.0, dmax)
        dmax = max(dmax, dticks[-1])

        def sy_de(v: float) -> float:
            return mt + ph * (1 - v / dmax)

        for t in dticks:
            out.append(_svg_text(ml + pw + 6, sy_de(t) + 4, f"{t:g}"))
        out.append(_svg_text(W - 12, mt + ph / 2, "&#916;E2000", fill=_TRAIN_COLOUR, anchor="middle", rotate=90))
    # Bottom axis: iteration.
    for t in _ticks(x0, x1, 6):
        if x0 <= t <= x1:
            out.append(_svg_text(sx(t), mt + ph + 16, f"{t:g}", anchor="middle"))
    out.append(_svg_text(ml + pw / 2, mt + ph + 32, "iteration", anchor="middle"))

    # Stage boundaries: a dashed line where the stage changes, labelled with the new stage.
    # A label that would run into the next one is dropped (e.g. a one-point "initial" stage).
    stages = [(float(_get(h, "iteration")), _get(h, "stage")) for h in pts]
    labels: list[tuple[float, str]] = []
    if stages and stages[0][1] is not None:
        labels.append((ml + 4, f"stage {_stage_label(stages[0][1])}"))
    for (xa, sa), (xb, sb) in zip(stages, stages[1:]):
        if sb != sa:
            x = sx((xa + xb) / 2)
            out.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{mt + ph}" stroke="#888" '
                       f'stroke-dasharray="4 3"/>')
            if labels and x + 4 < labels[-1][0] + 6.5 * len(labels[-1][1]):
                labels.pop()
            labels.append((x + 4, f"stage {_stage_label(sb)}"))
    out.extend(_svg_text(x, mt - 8, _e(t), fill="#666") for x, t in labels)

    def polyline(points: list[tuple[float, float]], ys, style: str) -> str:
        coords = " ".join(f"{sx(x):.1f},{ys(v):.1f}" for x, v in points)
        return f'<polyline {_LINE_STYLE[style]} fill="none" points="{coords}"/>'

    if loss:
        out.append(polyline(loss, sy_loss, "loss"))
    if train:
        out.append(polyline(train, sy_de, "train"))
    if val:
        out.append(polyline(val, sy_de, "validate"))
        # A dot where a validation was measured: the recorded value holds between checks.
        dots = [p for i, p in enumerate(val) if i == 0 or p[1] != val[i - 1][1]]
        out.extend(f'<circle fill="{_VALIDATE_COLOUR}" cx="{sx(x):.1f}" cy="{sy_de(v):.1f}" r="2.5"/>'
                   for x, v in dots)
    # Legend.
    lx, ly = ml, H - 8
    for label, style, present in (("loss", "loss", loss), ("train \u0394E2000", "train", train),
                                  ("validation \u0394E2000", "validate", val)):
        if present:
            out.append(f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 18}" y2="{ly - 4}" {_LINE_STYLE[style]}/>')
            out.append(_svg_text(lx + 22, ly, _e(label), size=12, fill="#334"))
            lx += 34 + 7 * len(label)
    out.append("</svg>")
    return "".join(out)


# --- sections ----------------------------------------------------------------------------

def _ordered_splits(keys: Iterable[str]) -> list[str]:
    keys = list(keys)
    return [k for k in _SPLIT_ORDER if k in keys] + [k for k in keys if k not in _SPLIT_ORDER]


def _header(data: Mapping) -> str:
    summary = data.get("summary") or {}
    views = data.get("views") or []
    history = data.get("history") or []
    if "validate" in summary:
        basis, de_mean = "validation views", _get(summary["validate"], "de2000_mean")
    elif "train" in summary:
        basis = "training views only (no validation views: optimistic)"
        de_mean = _get(summary["train"], "de2000_mean")
    else:
        basis, de_mean = "no metrics recorded", None
    g = grade(de_mean)
    t_good, t_fair = GRADE_THRESHOLDS
    rows = []
    for split in _ordered_splits(summary):
        s = summary[split]
        n = sum(1 for v in views if v.get("split") == split)
        rows.append(f'<tr><th scope="row">{_e(_SPLIT_LABEL.get(split, split))}</th><td>{n}</td>'
                    f'<td>{_num(_get(s, "de2000_mean"), 2)}</td><td>{_num(_get(s, "de2000_p95"), 2)}</td>'
                    f'<td>{_num(_get(s, "ssim"), 3)}</td><td>{_num(_get(s, "l1"), 4)}</td></tr>')
    table = ('<table class="summary"><thead><tr><th>Split</th><th>Views</th><th>&#916;E2000 mean</th>'
             '<th>&#916;E2000 p95</th><th>SSIM</th><th>L1</th></tr></thead><tbody>'
             + ("".join(rows) or '<tr><td colspan="6" class="muted">No summary metrics.</td></tr>')
             + "</tbody></table>")
    facts = [f'<div><span>Job</span>{_e(data.get("job", "")) or "&mdash;"}</div>',
             f'<div><span>Created</span>{_e(data.get("created", "")) or "&mdash;"}</div>']
    if history:
        last = history[-1]
        facts.append(f'<div><span>Iterations</span>{_e(_get(last, "iteration", len(history)))}</div>')
        if _finite(_get(last, "time")) is not None:
            facts.append(f'<div><span>Fit time</span>{float(_get(last, "time")):.1f} s</div>')
    badge = (f'<div class="badge {g}"><div class="grade">{_e(g.upper())}</div>'
             f'<div class="score">{_num(de_mean, 2)}</div><div class="what">mean &#916;E2000</div></div>')
    scale = (f'<b>good</b> &le; {t_good:g} (hard to see side by side), <b>fair</b> &le; {t_fair:g} '
             f'(visible on close comparison), <b>poor</b> &gt; {t_fair:g}')
    if de_mean is None:
        legend = f'<p class="thresholds">No summary metrics were recorded, so no grade. Scale: {scale}.</p>'
    else:
        legend = (f'<p class="thresholds">Grade from the mean CIEDE2000 colour difference on {_e(basis)}: '
                  f'{scale}.</p>')
    return (f'<header><div class="head-text"><h1>{_e(data.get("title", "Material fit report"))}</h1>'
            f'<div class="facts">{"".join(facts)}</div>{table}{legend}</div>{badge}</header>')


def _views(data: Mapping, max_size: int, vmax: float) -> str:
    views = list(data.get("views") or [])
    if not views:
        return '<section><h2>Views</h2><p class="muted">No views.</p></section>'
    bar = colorbar_svg(vmax)
    groups = {}
    for v in views:
        groups.setdefault(v.get("split", "train"), []).append(v)
    out = ['<section><h2>Views</h2>']
    for split in _ordered_splits(groups):
        out.append(f'<h3>{_e(_SPLIT_LABEL.get(split, split))} views</h3>')
        for v in groups[split]:
            ref, fit, heat, (h, w) = _view_images(v, max_size, vmax)
            m = v.get("metrics") or {}
            name = _e(v.get("name", "?"))
            exposure = float(v.get("exposure", 1.0) or 1.0)
            out.append(
                f'<article class="view"><div class="view-head"><h4>{name}</h4>'
                f'<span class="tag {_e(split)}">{_e(split)}</span>'
                f'<dl class="metrics"><dt>&#916;E2000 mean</dt><dd>{_num(_get(m, "de2000_mean"), 2)}</dd>'
                f'<dt>p95</dt><dd>{_num(_get(m, "de2000_p95"), 2)}</dd>'
                f'<dt>SSIM</dt><dd>{_num(_get(m, "ssim"), 3)}</dd>'
                f'<dt>L1</dt><dd>{_num(_get(m, "l1"), 4)}</dd>'
                f'<dt>display exposure</dt><dd>&times;{exposure:.3g}</dd></dl></div>'
                f'<div class="triple">'
                f'<figure><img src="{ref}" width="{w}" height="{h}" alt="reference photograph, view {name}">'
                f'<figcaption>Reference</figcaption></figure>'
                f'<figure><img src="{fit}" width="{w}" height="{h}" alt="fitted rendering, view {name}">'
                f'<figcaption>Fit</figcaption></figure>'
                f'<figure><img src="{heat}" width="{w}" height="{h}" alt="Delta E 2000 heat map, view {name}">'
                f'<figcaption>&#916;E2000 per pixel (grey: outside the mask){bar}</figcaption></figure>'
                f'</div></article>')
    out.append("</section>")
    return "".join(out)


def _maps(data: Mapping, max_size: int) -> str:
    """Each fitted texture map beside how much the train pixels see each texel."""
    maps = list(data.get("maps") or [])
    if not maps:
        return ""
    out = ['<section><h2>Texture maps</h2><p class="muted">Each map as fitted (base colour at display '
           'sRGB; other maps from black = 0 to white = 1), next to its visibility: how many train pixels '
           'see each texel (black: none; such texels were filled from their neighbours).</p>']
    for m in maps:
        texels = np.asarray(m["texels"], np.float32)
        step = max(1, int(math.ceil(max(texels.shape[:2]) / max_size)))
        texels = texels[::step, ::step]
        if texels.shape[-1] == 3:
            shown = to_srgb8(texels, 1.0)
        else:
            shown = np.round(np.clip(np.repeat(texels[..., :1], 3, -1), 0, 1) * 255).astype(np.uint8)
        weight = np.asarray(m["weight"], np.float32)[::step, ::step]
        vis = np.round(np.clip(weight / max(float(np.percentile(weight, 99)), 1e-6), 0, 1) * 255).astype(np.uint8)
        vis = np.repeat(vis[..., None], 3, -1)
        h, w = shown.shape[:2]
        name = _e(m["name"])
        out.append(
            f'<article class="view"><div class="view-head"><h4>{name}</h4>'
            f'<dl class="metrics"><dt>texels</dt><dd>{int(m["resolution"])}&sup2;</dd>'
            f'<dt>observed</dt><dd>{100 * float(m["observed_share"]):.0f}%</dd>'
            f'<dt>file</dt><dd>{_e(m["file"])}</dd></dl></div><div class="triple">'
            f'<figure><img src="{_data_uri(shown)}" width="{w}" height="{h}" alt="fitted {name} map">'
            f'<figcaption>Fitted {name}</figcaption></figure>'
            f'<figure><img src="{_data_uri(vis)}" width="{w}" height="{h}" alt="visibility of the {name} map">'
            f'<figcaption>Train pixels per texel</figcaption></figure></div></article>')
    out.append("</section>")
    return "".join(out)


def _parameters(data: Mapping) -> str:
    params = list(data.get("parameters") or [])
    flagged = {_get(f, "parameter") for f in data.get("plausibility") or []}
    if not params:
        return '<section><h2>Parameters</h2><p class="muted">No parameters recorded.</p></section>'
    rows = []
    for p in params:
        name = _get(p, "name", "?")
        initial, final = _get(p, "initial"), _get(p, "final")
        fitted = bool(_get(p, "fitted", False))
        changed = False
        try:
            changed = not np.allclose(np.asarray(initial, dtype=float), np.asarray(final, dtype=float),
                                      rtol=1e-4, atol=1e-6)
        except (TypeError, ValueError):
            changed = initial != final
        mark = ' <span class="flagmark" title="see plausibility">&#9888;</span>' if name in flagged else ""
        tol = _get(p, "tolerance")
        tol = "" if tol is None else ("any" if not math.isfinite(tol) else f"&plusmn;{tol:.2g}")
        rows.append(
            f'<tr class="{"fitted" if fitted else "frozen"}">'
            f'<th scope="row"><code>{_e(name)}</code>{mark}</th>'
            f'<td>{"<span class=yes>fitted</span>" if fitted else "<span class=no>fixed</span>"}</td>'
            f'<td class="num">{_swatch(initial)}{_value(initial)}</td>'
            f'<td class="arrow">{"&rarr;" if changed else "="}</td>'
            f'<td class="num{" changed" if changed else ""}">{_swatch(final)}{_value(final)}</td>'
            f'<td class="num">{tol}</td>'
            f'<td class="num">{_value(_get(p, "lower"))}</td><td class="num">{_value(_get(p, "upper"))}</td>'
            f'<td>{_e(_get(p, "unit", ""))}</td></tr>')
    return ('<section><h2>Parameters</h2><table class="params"><thead><tr><th>Parameter</th><th>Status</th>'
            '<th>Initial</th><th></th><th>Final</th>'
            '<th title="how far it can move before the train renders change by 1 &#916;E on average">Unseen</th>'
            '<th>Lower</th><th>Upper</th><th>Unit</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></section>')


def _fit_warnings(data: Mapping) -> str:
    """The run-level warnings (:mod:`pbrfit.fit_health`: over-fitting, not converged) as a
    banner at the top: they decide whether the parameters below can be trusted."""
    items = [f for f in data.get("plausibility") or []
             if _get(f, "parameter", "") == fit_health.ABOUT and _get(f, "severity", "") in ("warning", "error")]
    if not items:
        return ""
    rows = "".join(f"<li>{_e(_get(f, 'message', ''))}</li>" for f in items)
    return f'<section class="fitwarn" id="fit-warnings"><h2>Read this first</h2><ul>{rows}</ul></section>'


def _structure(data: Mapping) -> str:
    """Which structures the fit tried (pbrfit.hypotheses) and which layers it pruned."""
    st = data.get("structure")
    if not st:
        return ""
    rows = "".join(
        f'<tr><td>{_e(t.get("hypothesis"))}</td><td>{_num(t.get("error"), 5)}</td>'
        f'<td>{"" if t.get("margin") is None else _num(t["margin"], 3)}</td>'
        f'<td>{"chosen" if t.get("chosen") else ""}</td></tr>' for t in st.get("tried") or [])
    table = (f'<table class="params"><thead><tr><th>Structure tried</th><th>Noise-free train error</th>'
             f'<th>Better than the warm start by (standard errors)</th>'
             f'<th></th></tr></thead><tbody>{rows}</tbody></table>' if rows else "")
    pruned = st.get("pruned") or []
    pruned_text = (f'<p>Layers switched off as not paying for themselves: {_e(", ".join(pruned))}.</p>'
                   if pruned else "")
    simplified = st.get("simplified") or {}
    if simplified:
        pruned_text += ("<p>Set to their simplest value, as the photos do not ask for another: "
                        + _e(", ".join(f"{n} {v:g}" for n, v in simplified.items())) + ".</p>")
    return (f'<section id="structure"><h2>Structure</h2>{table}{pruned_text}{_layer_tests(st.get("tests") or [])}'
            f'<p class="muted">{_e(st.get("rule", ""))}</p></section>')


def _layer_tests(tests: list) -> str:
    """Pruning's trials (pbrfit.layers.prune_layers): each layer or parameter moved to its
    simplest value, how much each criterion rose, and the noise-free error's margin."""
    def rise(r):
        return "" if r is None else f"{r:+.1%}"

    rows = "".join(
        f'<tr><td>{_e(t.get("parameter"))} to {_num(t.get("to"), 3)}</td>'
        f'<td>{"re-fitted" if t.get("refit") else "as it was"}</td>'
        f'<td>{_e(" / ".join(rise(r) for r in t.get("rises") or []))}</td>'
        f'<td>{"" if t.get("margin") is None else _num(t["margin"], 1)}</td>'
        f'<td>{"does not pay" if t.get("dropped") else "pays"}</td></tr>' for t in tests)
    if not rows:
        return ""
    return ('<table class="params"><thead><tr><th>Tested without</th><th>The rest</th>'
            '<th>Train loss / noise-free error rise</th><th>Standard errors</th><th>Result</th></tr></thead>'
            f'<tbody>{rows}</tbody></table>')


def _calibration(data: Mapping) -> str:
    """The capture's corrections fitted with ``[calibrate]`` (pbrfit.calibration)."""
    cal = data.get("calibration")
    if not cal:
        return ""
    rows = []
    for e in cal.get("deltas") or []:
        value = e.get("value")
        shown = (", ".join(_num(v, 4) for v in value) if isinstance(value, list)
                 else f'{_num(value, 3)} {_e(e.get("unit", ""))}')
        rows.append(f'<tr><td>{_e(str(e.get("kind", "")).replace("_", " "))}</td><td>{_e(e.get("of"))}</td>'
                    f'<td>{shown}</td><td>{_num(e.get("sigma"), 3)}</td><td>{_num(e.get("z"), 2)}</td></tr>')
    rounds = cal.get("rounds") or []
    seconds = sum(r.get("seconds") or 0.0 for r in rounds)
    return (f'<section id="calibration"><h2>Calibration</h2><table class="params"><thead><tr><th>Correction</th>'
            f'<th>Of</th><th>Value</th><th>Prior sigma</th><th>Sigmas from the job</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table><p class="muted">Fitted in {len(rounds)} rounds between the '
            f'material stages ({seconds:.1f} s), each with the material held; white balance as gains on the photo '
            f'(R, G, B), luminance kept. Exposure and white balance trade against the base colour unless highlights '
            f'or a known reference tell them apart.</p></section>')


def _plausibility(data: Mapping) -> str:
    flags = list(data.get("plausibility") or [])
    if not flags:
        return ('<section><h2>Plausibility</h2><p class="ok">No physically implausible or suspicious values '
                'found.</p></section>')
    rows = []
    for f in flags:
        severity = _e(_get(f, "severity", "warning"))
        rows.append(f'<tr><td><span class="sev {severity}">{severity}</span></td>'
                    f'<td><code>{_e(_get(f, "parameter", ""))}</code></td>'
                    f'<td>{_e(_get(f, "message", ""))}</td></tr>')
    rows = "".join(rows)
    return ('<section><h2>Plausibility</h2><table class="flags"><thead><tr><th>Severity</th><th>Parameter</th>'
            f'<th>Finding</th></tr></thead><tbody>{rows}</tbody></table></section>')


def _drops(data: Mapping) -> str:
    drops = data.get("drops") or {}
    if not drops:
        return '<section><h2>Export</h2><p class="muted">No exports recorded.</p></section>'
    out = ['<section><h2>Export</h2><p>What each export format could not carry:</p><div class="drops">']
    for target, items in drops.items():
        items = list(items or [])
        if items:
            lis = "".join(f'<li><code>{_e(_get(i, "parameter", ""))}</code>: {_e(_get(i, "reason", ""))}</li>'
                          for i in items)
            body = f'<ul>{lis}</ul>'
        else:
            body = '<p class="ok">Carries every parameter.</p>'
        out.append(f'<div class="drop"><h4>{_e(target)}</h4>{body}</div>')
    out.append("</div></section>")
    return "".join(out)


def _provenance(data: Mapping) -> str:
    prov = data.get("provenance") or {}
    rows = []
    for k, v in prov.items():
        if isinstance(v, (dict, list, tuple)):
            cell = f"<pre>{_e(json.dumps(v, indent=2, default=str, ensure_ascii=False))}</pre>"
        else:
            cell = _e(v)
        rows.append(f'<tr><th scope="row">{_e(k)}</th><td>{cell}</td></tr>')
    body = (f'<table class="prov"><tbody>{"".join(rows)}</tbody></table>' if rows
            else '<p class="muted">No provenance recorded.</p>')
    return f'<section><details><summary>Provenance</summary>{body}</details></section>'


_CSS = """
:root{--ink:#1d2433;--muted:#6b7385;--line:#e3e6ee;--bg:#f6f7fa;--card:#fff;--accent:#2f5d9e}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
main{max-width:1240px;margin:0 auto;padding:24px}
header{display:flex;gap:24px;align-items:flex-start;background:var(--card);border:1px solid var(--line);
border-radius:10px;padding:20px 24px}
.head-text{flex:1;min-width:0}
h1{margin:0 0 8px;font-size:22px}
h2{font-size:17px;margin:0 0 12px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:14px;margin:18px 0 8px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
h4{margin:0;font-size:15px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 24px;margin-top:18px}
.facts{display:flex;flex-wrap:wrap;gap:4px 22px;margin-bottom:12px;color:var(--ink);word-break:break-all}
.facts span{color:var(--muted);margin-right:6px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 10px;border-bottom:1px solid var(--line);vertical-align:top}
thead th{font-size:12px;color:var(--muted);font-weight:600;border-bottom:2px solid var(--line)}
tbody tr:nth-child(even){background:#fafbfd}
table.summary{width:auto}
table.summary td,.num{font-variant-numeric:tabular-nums}
.thresholds{color:var(--muted);font-size:12.5px;margin:10px 0 0}
.badge{flex:none;width:150px;border-radius:10px;padding:14px;text-align:center;color:#fff}
.badge .grade{font-weight:700;letter-spacing:.08em}
.badge .score{font-size:30px;font-weight:700;line-height:1.2}
.badge .what{font-size:12px;opacity:.9}
.badge.good{background:#2e7d4f}.badge.fair{background:#b7791f}.badge.poor{background:#b83a3a}
.badge.unknown{background:#7a8194}
.view{border-top:1px solid var(--line);padding:14px 0}
.view:first-of-type{border-top:0}
.view-head{display:flex;flex-wrap:wrap;align-items:baseline;gap:10px;margin-bottom:8px}
.tag{font-size:11px;padding:1px 8px;border-radius:9px;background:#e8edf6;color:var(--accent)}
.tag.validate{background:#e6f3ea;color:#2e7d4f}
dl.metrics{display:flex;flex-wrap:wrap;gap:2px 6px;margin:0 0 0 auto;font-size:13px}
dl.metrics dt{color:var(--muted)}dl.metrics dd{margin:0 12px 0 0;font-weight:600;font-variant-numeric:tabular-nums}
.triple{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:12px}
figure{margin:0}
figure img{width:100%;height:auto;display:block;border-radius:4px;background:#222}
figcaption{font-size:12px;color:var(--muted);margin-top:4px}
svg.colorbar{display:block;margin-top:4px;max-width:100%}
svg.chart{display:block;max-width:100%;height:auto}
svg text{font-family:inherit}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;border:1px solid #0003;margin-right:6px;
vertical-align:-1px}
tr.frozen{color:var(--muted)}
.changed{font-weight:600}
.arrow{color:var(--muted);text-align:center}
.yes{color:#2e7d4f;font-weight:600}.no{color:var(--muted)}
.flagmark{color:#b7791f}
.sev{display:inline-block;font-size:11px;font-weight:700;text-transform:uppercase;padding:1px 8px;
border-radius:9px}
.sev.warning{background:#fdf1dc;color:#8a5a12}
.fitwarn{background:#fdf1dc;border-left:4px solid #c98a1c}.sev.error{background:#fbe3e3;color:#a02a2a}
.ok{color:#2e7d4f}.muted{color:var(--muted)}
.drops{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}
.drop{border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.drop ul{margin:6px 0 0;padding-left:18px}
details summary{cursor:pointer;font-weight:600;font-size:15px}
table.prov th{width:220px;color:var(--muted);font-weight:500}
pre{margin:0;white-space:pre-wrap;word-break:break-all;font-size:12px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
@media (max-width:800px){header{flex-direction:column}.triple{grid-template-columns:1fr}}
@media print{body{background:#fff}section,header{break-inside:avoid}}
"""

#: Nothing may be fetched and nothing run: images only from data: URIs, styles only inline.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render_report(data: Mapping, *, de_vmax: float = DE_VMAX, max_image_size: int = 768) -> str:
    """The report as an HTML string (pure ASCII). See :func:`write_report` for ``data``."""
    if max_image_size < 16:
        raise ValueError(f"max_image_size must be >= 16 pixels, got {max_image_size}")
    body = "".join([
        _header(data),
        _fit_warnings(data),
        _views(data, max_image_size, de_vmax),
        _maps(data, max_image_size),
        f'<section><h2>Convergence</h2>{_convergence_svg(list(data.get("history") or []))}'
        f'{_path_stage_caption(list(data.get("history") or []))}</section>',
        _parameters(data),
        _structure(data),
        _calibration(data),
        _plausibility(data),
        _drops(data),
        _provenance(data),
    ])
    doc = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
           f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">'
           f'<title>{_e(data.get("title", "Material fit report"))}</title><style>{_CSS}</style></head>'
           f'<body><main>{body}</main></body></html>\n')
    return doc.encode("ascii", "xmlcharrefreplace").decode("ascii")


def write_report(path: str | os.PathLike, data: Mapping, *, de_vmax: float = DE_VMAX,
                 max_image_size: int = 768) -> None:
    """Write the fit report as one self-contained HTML file, atomically.

    Args:
        path: the ``.html`` file to write (its directory must exist).
        data: a mapping with (all optional except that views need their arrays):

            * ``title`` (str), ``job`` (path of the job file), ``created`` (ISO 8601 time);
            * ``views``: list of ``{name, split ("train"/"validate"), reference, fit,
              de_map, mask, exposure, metrics}`` where ``reference`` and ``fit`` are linear
              float (H, W, 3), ``de_map`` (H, W) ΔE2000, ``mask`` (H, W) in [0, 1] or None,
              ``exposure`` a display multiplier and ``metrics`` ``{de2000_mean, de2000_p95,
              ssim, l1}``;
            * ``summary``: ``{split: {de2000_mean, de2000_p95, ssim, l1}}``;
            * ``history``: list of ``{iteration, stage, loss, train_de2000, validate_de2000
              (or None), time (s)}``;
            * ``parameters``: list of ``{name, initial, final, fitted, unit, lower, upper}``;
            * ``plausibility``: list of ``{parameter, severity, message}`` (or
              :class:`pbrfit.plausibility.Flag` objects);
            * ``drops``: ``{target: [{parameter, reason}]}``, what each export lost;
            * ``provenance``: a flat or nested mapping, shown collapsed.
        de_vmax: ΔE2000 at the top of the heat maps' colour scale.
        max_image_size: images larger than this (pixels, longest side) are box-filtered
            down by an integer factor to keep the file small.
    """
    atomic_write_text(path, render_report(data, de_vmax=de_vmax, max_image_size=max_image_size))
