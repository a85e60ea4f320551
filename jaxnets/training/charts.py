"""Line charts of a run's history as PNGs, drawn with Pillow: the ``curves.png`` of every ``jaxnets train`` model.

A chart is one or more panels side by side, each with its series, axes, grid, ticks, labels and a legend, in
matplotlib's default look (its colours, 5% margins around the data, "nice" tick steps, a log scale labelled in
plain numbers). matplotlib drew these until 2026-12-07: importing it and drawing the first figure took 0.51 to
0.71 s of CPU in a fresh process, and each later figure 0.12 to 0.18 s, spent in every ``jaxnets train`` on the two
cores the training runs on (a 40-epoch run on the digits takes about 5 s). Pillow takes 36 to 41 ms for the first
and about 20 ms for each later one (measured 2026-12-07, three processes each, under the CPU lock).

Non-finite values are left out of a series, and so are values of zero or less on a log scale: the line breaks
there, as matplotlib's does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .._files import atomic_write

COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))
"""matplotlib's first four default colours (tab:blue, tab:orange, tab:green, tab:red), one per series in turn."""

_SCALE = 2
"""Supersampling: drawn at twice the size and reduced, so lines and markers come out anti-aliased (1 without
FreeType, whose absence leaves Pillow's fixed bitmap font, which would come out half its size)."""


@dataclass
class Series:
    """One line: ``y`` against ``x``, with a marker at every point (``"o"`` circle or ``"s"`` square)."""

    label: str
    x: list
    y: list
    marker: str = "o"


@dataclass
class Panel:
    """One set of axes: its title, axis labels, series and whether the y axis is logarithmic."""

    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    series: list[Series] = field(default_factory=list)
    log_y: bool = False


def save_chart(panels: list[Panel], path: str | Path, *, title: str = "", size: tuple[int, int] = (1000, 400)) -> None:
    """Draw ``panels`` side by side, ``title`` above them, as a ``size`` (width, height) PNG at ``path``.

    Written atomically: a crash leaves the previous file or none, never half a PNG.
    """
    picture = draw_chart(panels, title=title, size=size)
    atomic_write(Path(path), lambda tmp: picture.save(tmp, format="PNG"))


def draw_chart(panels: list[Panel], *, title: str = "", size: tuple[int, int] = (1000, 400)):
    """:func:`save_chart`'s picture, a ``PIL.Image`` in RGB."""
    from PIL import Image, ImageDraw

    if not panels:
        raise ValueError("draw_chart: `panels` is empty; give at least one Panel.")
    fonts = _Fonts()
    s = fonts.scale
    width, height = size
    image = Image.new("RGB", (width * s, height * s), "white")
    draw = ImageDraw.Draw(image)
    top = 40 if title else 26
    if title:
        draw.text((width * s / 2, 6 * s), title, fill="black", font=fonts.title, anchor="ma")
    slot = width / len(panels)
    for i, panel in enumerate(panels):
        box = (i * slot + 68, top + 10, (i + 1) * slot - 14, height - 46)  # left, top, right, bottom (pixels)
        _draw_panel(image, draw, fonts, panel, tuple(v * s for v in box))
    return image.reduce(s)


class _Fonts:
    """Pillow's own scalable font (Pillow 10.1 or later, with FreeType) at three sizes, drawn at :data:`_SCALE`;
    without FreeType, Pillow's fixed bitmap font for all three, drawn at scale 1."""

    def __init__(self):
        from PIL import ImageFont, features

        self.scale = _SCALE if features.check("freetype2") else 1
        sizes = (10, 11, 12)
        if self.scale == 1:
            self.tick = self.label = self.title = ImageFont.load_default()
        else:
            self.tick, self.label, self.title = (ImageFont.load_default(size=size * self.scale) for size in sizes)


def _draw_panel(image, draw, fonts, panel: Panel, box: tuple) -> None:
    from PIL import Image, ImageDraw

    s = fonts.scale
    left, top, right, bottom = box
    points = [_finite(series, panel.log_y) for series in panel.series]
    drawn = [p for pts in points for p in pts if p is not None]
    xs, ys = [x for x, _ in drawn], [y for _, y in drawn]
    x_lo, x_hi = _view(xs, log=False)
    y_lo, y_hi = _view(ys, log=panel.log_y)
    fy = math.log10 if panel.log_y else (lambda v: v)

    def px(x, y):
        return (
            left + (x - x_lo) / (x_hi - x_lo) * (right - left),
            bottom - (fy(y) - fy(y_lo)) / (fy(y_hi) - fy(y_lo)) * (bottom - top),
        )

    grid, ink = (222, 222, 222), (0, 0, 0)
    x_ticks = _linear_ticks(x_lo, x_hi, integer=all(x == int(x) for x in xs))  # epochs: 1, 2, 3, not 1.5
    y_major, y_minor = _log_ticks(y_lo, y_hi) if panel.log_y else (_linear_ticks(y_lo, y_hi), [])
    for x in x_ticks:
        u, _ = px(x, y_lo)
        draw.line([(u, top), (u, bottom)], fill=grid, width=s)
        draw.line([(u, bottom), (u, bottom + 4 * s)], fill=ink, width=s)
        draw.text((u, bottom + 6 * s), _label(x), fill=ink, font=fonts.tick, anchor="ma")
    for y, labelled in [(y, True) for y in y_major] + [(y, False) for y in y_minor]:
        _, v = px(x_lo, y)
        if labelled:
            draw.line([(left, v), (right, v)], fill=grid, width=s)
            draw.text((left - 6 * s, v), _label(y), fill=ink, font=fonts.tick, anchor="rm")
        draw.line([(left - (4 if labelled else 2) * s, v), (left, v)], fill=ink, width=s)
    for i, (series, pts) in enumerate(zip(panel.series, points, strict=True)):
        color = COLORS[i % len(COLORS)]
        for run in _runs(pts):
            line = [px(x, y) for x, y in run]
            if len(line) > 1:
                draw.line(line, fill=color, width=round(1.5 * s), joint="curve")
            for u, v in line:
                r = 3 * s
                if series.marker == "s":
                    draw.rectangle([u - r, v - r, u + r, v + r], fill=color)
                else:
                    draw.ellipse([u - r, v - r, u + r, v + r], fill=color)
    draw.rectangle([left, top, right, bottom], outline=ink, width=s)
    if panel.title:
        draw.text(((left + right) / 2, top - 6 * s), panel.title, fill=ink, font=fonts.title, anchor="md")
    if panel.xlabel:
        draw.text(((left + right) / 2, bottom + 22 * s), panel.xlabel, fill=ink, font=fonts.label, anchor="ma")
    if panel.ylabel:  # drawn across, then turned to read upwards
        w = round(draw.textlength(panel.ylabel, font=fonts.label)) + 4 * s
        text = Image.new("RGB", (w, 16 * s), "white")
        ImageDraw.Draw(text).text((w / 2, 8 * s), panel.ylabel, fill=ink, font=fonts.label, anchor="mm")
        text = text.rotate(90, expand=True)
        image.paste(text, (round(left - 62 * s), round((top + bottom - text.height) / 2)))
    if panel.series:
        _legend(draw, fonts, panel.series, [px(*p) for p in drawn], box)


def _legend(draw, fonts, series: list[Series], placed: list[tuple], box: tuple) -> None:
    """A framed legend in the corner of ``box`` that covers the fewest of the ``placed`` points (as matplotlib's
    ``loc="best"`` does)."""
    s = fonts.scale
    left, top, right, bottom = box
    row = 16 * s
    width = 34 * s + max(draw.textlength(item.label, font=fonts.tick) for item in series)
    height = row * len(series) + 6 * s
    pad = 8 * s
    corners = [
        (right - pad - width, top + pad),  # upper right first, as matplotlib tries it first
        (left + pad, top + pad),
        (left + pad, bottom - pad - height),
        (right - pad - width, bottom - pad - height),
    ]

    def covered(corner):
        x0, y0 = corner
        return sum(x0 <= u <= x0 + width and y0 <= v <= y0 + height for u, v in placed)

    x0, y0 = min(corners, key=covered)  # the first of the least covered
    draw.rounded_rectangle([x0, y0, x0 + width, y0 + height], radius=3 * s, fill="white", outline=(204, 204, 204),
                           width=s)  # fmt: skip
    for i, item in enumerate(series):
        v = y0 + 3 * s + row * i + row / 2
        color = COLORS[i % len(COLORS)]
        draw.line([(x0 + 6 * s, v), (x0 + 26 * s, v)], fill=color, width=round(1.5 * s))
        r, u = 3 * s, x0 + 16 * s
        shape = draw.rectangle if item.marker == "s" else draw.ellipse
        shape([u - r, v - r, u + r, v + r], fill=color)
        draw.text((x0 + 32 * s, v), item.label, fill=(0, 0, 0), font=fonts.tick, anchor="lm")


def _finite(series: Series, log: bool) -> list:
    """The series' points as floats, ``None`` where a point cannot be drawn (the line breaks there)."""
    out = []
    for x, y in zip(series.x, series.y, strict=True):
        x, y = float(x), float(y)
        out.append((x, y) if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log) else None)
    return out


def _runs(points: list) -> list[list]:
    """The unbroken stretches of ``points`` (``None`` breaks them)."""
    runs, run = [], []
    for p in points:
        if p is None:
            if run:
                runs.append(run)
            run = []
        else:
            run.append(p)
    return runs + ([run] if run else [])


def _view(values: list, *, log: bool) -> tuple[float, float]:
    """The axis' range: the data's with a 5% margin on each side (in log space on a log scale), as matplotlib's."""
    values = [v for v in values if v is not None]
    if not values:
        return (0.1, 10.0) if log else (0.0, 1.0)
    lo, hi = min(values), max(values)
    f, g = (math.log10, lambda v: 10.0**v) if log else ((lambda v: v), (lambda v: v))
    a, b = f(lo), f(hi)
    if a == b:  # one value: a range around it
        a, b = (a - 1, b + 1) if log else (a - (abs(a) * 0.05 or 0.05), b + (abs(b) * 0.05 or 0.05))
    m = (b - a) * 0.05
    return g(a - m), g(b + m)


def _linear_ticks(lo: float, hi: float, most: int = 9, integer: bool = False) -> list[float]:
    """Ticks at a "nice" step (1, 2, 2.5 or 5 times a power of ten; a whole number if ``integer``) inside
    ``[lo, hi]``: at most ``most`` of them."""
    span = hi - lo
    base = 10.0 ** math.floor(math.log10(span / most))
    steps = [base * k for k in (1, 2, 2.5, 5, 10, 20)]
    if integer:  # a span of fewer than `most` units has no whole step among them: then 1
        steps = [k for k in steps if k >= 1 and k == int(k)] or [1.0]
    step = next(k for k in steps if span / k <= most)
    first = math.ceil(lo / step - 1e-9)
    ticks = [(first + i) * step for i in range(int(math.floor(hi / step + 1e-9)) - first + 1)]
    return [round(t, 12) for t in ticks]


def _log_ticks(lo: float, hi: float) -> tuple[list[float], list[float]]:
    """``(labelled, unlabelled)`` ticks of a log axis over ``[lo, hi]``.

    Labelled: the powers of ten inside it; where the axis spans less than a decade (so at most one power of ten
    shows), every multiple 2 to 9 of a power of ten inside it too, as matplotlib labels its minor ticks there;
    where even those are fewer than two, the linear ticks. Unlabelled: the other multiples, as short marks.
    """
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    inside = lambda v: lo <= v <= hi  # noqa: E731
    majors = [10.0**d for d in decades if inside(10.0**d)]
    minors = [float(f"{k}e{d}") for d in decades for k in range(2, 10) if inside(float(f"{k}e{d}"))]
    if hi < 10 * lo:
        labelled = sorted(majors + minors)
        return (labelled, []) if len(labelled) >= 2 else (_linear_ticks(lo, hi, most=6), [])
    return majors, minors


def _label(value: float) -> str:
    """A tick's label in plain numbers: 0.01, 0.5, 40 (never 10^-2; 1e-05 from a hundred-thousandth on)."""
    return f"{value:g}"
