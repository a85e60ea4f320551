"""jaxnets.training.charts: the line charts of curves.png (and the DCGAN's), drawn with Pillow."""

import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxnets.training import charts
from jaxnets.training import digits as training


def history(train_loss, test_loss):
    return [dict(epoch=e, train_loss=a, test_loss=b, train_accuracy=0.5, test_accuracy=0.6)
            for e, (a, b) in enumerate(zip(train_loss, test_loss, strict=True), 1)]  # fmt: skip


def loss_axis_labels(h) -> list[str]:
    """The labels of curves.png's loss axis for history ``h``: the range plot_curves' data gives, ticked."""
    lo, hi = charts._view([v for e in h for v in (e["train_loss"], e["test_loss"])], log=True)
    return [charts._label(v) for v in charts._log_ticks(lo, hi)[0]]


def test_the_log_loss_axis_is_labelled_in_plain_numbers_at_decades_or_within_one():
    wide = history([10.0**-e for e in range(1, 5)], [0.5 / e for e in range(1, 5)])
    assert loss_axis_labels(wide) == ["0.0001", "0.001", "0.01", "0.1"]
    narrow = history([0.3 + 0.05 * i for i in range(4)], [0.5 - 0.02 * i for i in range(4)])
    assert loss_axis_labels(narrow) == ["0.3", "0.4", "0.5"]  # less than a decade: its multiples 2 to 9
    tight = history([0.31, 0.32], [0.315, 0.33])  # no multiple inside: linear steps
    assert loss_axis_labels(tight) == ["0.31", "0.315", "0.32", "0.325", "0.33"]


@pytest.mark.parametrize(
    ("lo", "hi", "integer", "ticks"),
    [
        (-0.95, 41.95, True, [0, 5, 10, 15, 20, 25, 30, 35, 40]),  # 40 epochs with matplotlib's 5% margins
        (0.8, 5.2, True, [1, 2, 3, 4, 5]),  # whole epochs, never 1.5
        (0.95, 1.05, True, [1]),  # one epoch
        (0.95, 1.05, False, [0.96, 0.98, 1.0, 1.02, 1.04]),
        (33.0, 101.0, False, [40, 50, 60, 70, 80, 90, 100]),
        (-49.0, 1050.0, True, [0, 200, 400, 600, 800, 1000]),
    ],
)
def test_linear_ticks_take_a_nice_step_inside_the_range(lo, hi, integer, ticks):
    assert charts._linear_ticks(lo, hi, integer=integer) == ticks


def colour_pixels(image, colour) -> int:
    return int(np.all(np.asarray(image) == colour, axis=-1).sum())


def test_every_drawable_point_is_drawn_and_the_rest_break_the_line():
    blue = charts.COLORS[0]
    series = lambda y: charts.Series("train", [1, 2, 3, 4], y)  # noqa: E731
    drawn = charts.draw_chart([charts.Panel(series=[series([1.0, 0.5, 0.25, 0.125])], log_y=True)])
    assert drawn.size == (1000, 400) and drawn.mode == "RGB"
    full = colour_pixels(drawn, blue)
    assert full > 500  # the line and its four markers, in tab:blue
    # NaN, inf and (on a log scale) zero or less cannot be drawn: fewer points, no error.
    broken = charts.draw_chart([charts.Panel(series=[series([1.0, math.nan, 0.0, -1.0])], log_y=True)])
    assert 0 < colour_pixels(broken, blue) < full / 2
    nothing = charts.draw_chart([charts.Panel(series=[series([math.nan, math.inf, 0.0, -1.0])], log_y=True)])
    assert colour_pixels(nothing, blue) < 60  # only the legend's sample line and marker
    linear = charts.draw_chart([charts.Panel(series=[series([1.0, 0.0, -1.0, math.inf])])])
    assert colour_pixels(linear, blue) > colour_pixels(broken, blue)  # zero and below are drawn on a linear scale


def test_a_chart_needs_a_panel():
    with pytest.raises(ValueError, match="`panels` is empty"):
        charts.draw_chart([])


def test_plot_curves_writes_a_png_of_both_panels_without_matplotlib(tmp_path):
    # In a fresh process: the test session may have imported matplotlib already.
    code = (
        "import sys; from pathlib import Path; from jaxnets.training import digits as t; "
        "h = [dict(epoch=e, train_loss=1 / e, test_loss=2 / e, train_accuracy=e / 9, test_accuracy=e / 10) "
        "for e in range(1, 9)]; "
        f"t.plot_curves(h, Path({str(tmp_path / 'curves.png')!r}), 'a title'); "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]
    image = Image.open(tmp_path / "curves.png")
    assert image.format == "PNG" and image.size == (1000, 400)
    rgb = image.convert("RGB")
    left, right = rgb.crop((0, 0, 500, 400)), rgb.crop((500, 0, 1000, 400))
    for panel in (left, right):  # train in blue, test in orange, in each panel
        assert colour_pixels(panel, charts.COLORS[0]) > 200 and colour_pixels(panel, charts.COLORS[1]) > 200


def test_dcgan_losses_chart_is_one_panel(tmp_path):
    from jaxnets.training import dcgan

    h = [dict(epoch=e, loss_D=1.0 / e, loss_G=2.0 + e) for e in range(1, 6)]
    dcgan.plot_losses(h, tmp_path / "curves.png", "DCGAN")
    image = Image.open(tmp_path / "curves.png").convert("RGB")
    assert image.size == (600, 400)
    assert colour_pixels(image, charts.COLORS[0]) > 200 and colour_pixels(image, charts.COLORS[1]) > 200


def test_plot_curves_is_drawn_from_training_history_keys(tmp_path):
    h = history([1.0, 0.5], [1.2, 0.8])
    for entry in h:
        entry["valid_loss"], entry["valid_accuracy"] = entry.pop("test_loss"), entry.pop("test_accuracy")
    training.plot_curves(h, tmp_path / "curves.png", held_out="valid")  # word_lm's curves: valid, not test
    with pytest.raises(KeyError, match="test_loss"):
        training.plot_curves(h, tmp_path / "other.png")


def test_without_freetype_the_chart_is_drawn_in_pillows_bitmap_font_at_full_size(monkeypatch):
    from PIL import features

    check = features.check
    monkeypatch.setattr(features, "check", lambda name: False if name == "freetype2" else check(name))
    panel = charts.Panel("loss", "epoch", "cross-entropy", [charts.Series("train", [1, 2, 3], [1.0, 0.5, 0.2])])
    image = charts.draw_chart([panel, panel], title="no FreeType")
    assert image.size == (1000, 400)
    assert colour_pixels(image, charts.COLORS[0]) > 500
    # The labels are drawn: dark pixels left of the first panel's axes (its tick labels and axis label).
    assert int((np.asarray(image.crop((0, 40, 66, 360))).sum(axis=-1) < 300).sum()) > 100
