"""tools/plot_lr.py stays readable with 30 groups: distinct curves, a legend that hides none."""

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex

from tests.tools.test_plot_lr import load_tool


def layer_decay_curves(groups=30, steps=50):
    """Layer decay 0.75 over `groups` layers, warmup then a step: every curve different."""
    curves = {}
    for i in range(groups):
        scale = 0.75 ** (groups - 1 - i)
        curves[f"layer_{i}"] = [
            0.01 * scale * (min(1.0, (t + 1) / 10)) * (0.1 if t >= 40 else 1.0)
            for t in range(steps)
        ]
    return curves


def test_thirty_groups_each_get_a_distinct_colour_and_style(tmp_path):
    tool = load_tool()
    fig = tool.plot(layer_decay_curves(), str(tmp_path / "lr.png"), log=True)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 30
    looks = {(to_hex(ln.get_color()), ln.get_linestyle()) for ln in lines}
    assert len(looks) == 30


def test_the_legend_is_outside_the_axes(tmp_path):
    tool = load_tool()
    fig = tool.plot(layer_decay_curves(), str(tmp_path / "lr.png"), log=True)
    renderer = FigureCanvasAgg(fig).get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend() or fig.legends[0]
    box, axes_box = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert not box.overlaps(axes_box)
    # the whole legend is inside the figure (nothing cut off)
    assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 + 1
    assert fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1 + 1
    assert len(legend.get_texts()) == 30


def test_groups_with_one_curve_share_one_legend_entry(tmp_path):
    tool = load_tool()
    curves = layer_decay_curves(groups=4)
    curves["head[wd=0]"] = list(curves["layer_3"])
    fig = tool.plot(curves, str(tmp_path / "lr.png"))
    ax = fig.axes[0]
    legend = ax.get_legend() or fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == 4 and "layer_3, head[wd=0]" in texts


def test_the_x_axis_counts_iterations_as_the_console_does(tmp_path):
    tool = load_tool()
    fig = tool.plot(layer_decay_curves(groups=2, steps=20), str(tmp_path / "lr.png"))
    xs = list(fig.axes[0].get_lines()[0].get_xdata())
    assert xs[0] == 1 and xs[-1] == 20  # "iter 20/20" is the last point
