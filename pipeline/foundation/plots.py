"""Charts for the self-contained pages (the demo's index.html, dedup's report.html): drawn with
matplotlib and embedded as SVG data URLs, so a page stays one file that needs no script and fetches
nothing, and a chart stays sharp at any zoom.

Every chart has a title, titled axes with their units and readable tick labels; numbers on bars use
the one format of `words` (thousands separated, `percent` for shares). Figures are made with
`matplotlib.figure.Figure` directly (no pyplot): no global state, no GUI backend, safe in any thread.
Cost: ~50-150 ms per chart, a handful per page.
"""
from __future__ import annotations

import base64
import html
import io
from typing import Callable, Sequence

# One palette for both pages: muted, colour-blind safe (Okabe-Ito), so the same meaning keeps its
# colour across charts.
BLUE, ORANGE, GREEN, RED, GREY = "#0072B2", "#E69F00", "#009E73", "#D55E00", "#999999"
WIDTH_IN = 7.5       # inches at 96 dpi: ~720 px, half of a normal screen's page column at most
LABEL_CHARS = 28     # longer tick labels are cut with an ellipsis (the full text is in the page's tables)

# Text stays text (selectable, small files), ids and the date are fixed so a page is reproducible.
_RC = {"svg.fonttype": "none", "svg.hashsalt": "clipdata", "font.size": 10, "axes.titlesize": 11,
       "axes.titleweight": "bold", "axes.spines.top": False, "axes.spines.right": False,
       "font.family": "sans-serif"}


def _short(label: str) -> str:
    label = str(label)
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "\u2026"


def _embed(fig, alt: str) -> str:
    """The figure as an <img> whose source is the SVG itself, base64 in a data URL."""
    import matplotlib

    import warnings

    buf = io.BytesIO()
    with matplotlib.rc_context(_RC), warnings.catch_warnings():
        # Labels in scripts the layout font lacks (CJK, Thai): the SVG keeps them as text and the
        # reader's browser draws them with its own fonts; matplotlib's measuring warns, needlessly.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<img class="plot" alt="{html.escape(alt, quote=True)}" '
            f'src="data:image/svg+xml;base64,{data}">')


def _figure(height_in: float):
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(WIDTH_IN, height_in), dpi=96)
        ax = fig.add_subplot()
    return fig, ax


def _grid(ax, axis: str) -> None:
    ax.grid(axis=axis, color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


def _thousands(ax, axis: str) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(MaxNLocator(nbins=8, integer=True))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))


def horizontal_bars(title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float], str]],
                    xlabel: str, value_text: Callable[[float], str] | None = None,
                    marker: tuple[float, str] | None = None, integer: bool = True) -> str:
    """One row per label, one bar per series (name, values, colour) in it, largest-first as given.
    value_text: the words printed at each bar's end (none when None); marker: (x, label) drawn as a
    dashed vertical line (e.g. a cap)."""
    import matplotlib

    if not labels:
        return f"<p>{html.escape(title)}: nothing to plot.</p>"
    rows = len(labels)
    with matplotlib.rc_context(_RC):
        fig, ax = _figure(0.6 + 0.2 * rows * (1 + 0.35 * (len(series) - 1)))
        band = 0.8 / len(series)
        for j, (name, values, colour) in enumerate(series):
            ys = [i + (j - (len(series) - 1) / 2) * band for i in range(rows)]
            bars = ax.barh(ys, list(values), height=band * 0.92, color=colour, label=name)
            if value_text is not None:
                ax.bar_label(bars, labels=[value_text(v) for v in values], padding=3, fontsize=8)
        ax.set_yticks(range(rows), [_short(label) for label in labels])
        ax.invert_yaxis()  # the first label on top
        ax.set_xlabel(xlabel)
        ax.set_title(title, loc="left")
        if integer:
            _thousands(ax, "x")
        top = max((v for _, values, _ in series for v in values), default=0)
        if marker is not None:
            ax.axvline(marker[0], color="#333", linestyle="--", linewidth=1, label=marker[1])
            top = max(top, marker[0])
        ax.set_xlim(0, (top or 1) * (1.18 if value_text else 1.05))
        if len(series) > 1 or marker is not None:
            ax.legend(loc="lower right", frameon=False, fontsize=9)
        _grid(ax, "x")
        return _embed(fig, title)


def line_chart(title: str, series: Sequence[tuple[str, Sequence[tuple[float, float]], str]], xlabel: str,
               ylabel: str, reference: tuple[float, str] | None = None, percent_axis: bool = False) -> str:
    """(x, y) points per series (name, points, colour) on shared axes; reference: (y, label) drawn as
    a dashed horizontal line (e.g. chance); percent_axis: y values are fractions shown as %."""
    import matplotlib
    from matplotlib.ticker import PercentFormatter

    series = [s for s in series if s[1]]
    if not series:
        return f"<p>{html.escape(title)}: nothing to plot.</p>"
    with matplotlib.rc_context(_RC):
        fig, ax = _figure(3.0)
        for name, points, colour in series:
            xs, ys = zip(*points)
            ax.plot(xs, ys, color=colour, linewidth=1.8, marker="o" if len(points) <= 12 else None,
                    markersize=4, label=name)
        if reference is not None:
            ax.axhline(reference[0], color=GREY, linestyle="--", linewidth=1, label=reference[1])
        if percent_axis:
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
            ax.set_ylim(bottom=0)
        _thousands(ax, "x")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left")
        if len(series) > 1 or reference is not None:
            ax.legend(frameon=False, fontsize=9)
        _grid(ax, "y")
        return _embed(fig, title)


def histogram(title: str, counts: Sequence[int], xlabel: str, ylabel: str, cutoff: int | None = None,
              cutoff_label: str = "") -> str:
    """Columns of counts[x] at x = 0, 1, ...; columns up to cutoff in the alert colour, a dashed line
    just after it."""
    import matplotlib

    if not any(counts):
        return f"<p>{html.escape(title)}: nothing to plot.</p>"
    last = max(i for i, n in enumerate(counts) if n)
    span = max(last, cutoff or 0) + 2
    with matplotlib.rc_context(_RC):
        fig, ax = _figure(2.6)
        colours = [RED if cutoff is not None and x <= cutoff else BLUE for x in range(span)]
        ax.bar(range(span), list(counts[:span]) + [0] * (span - len(counts[:span])), width=0.85, color=colours)
        if cutoff is not None:
            ax.axvline(cutoff + 0.5, color="#333", linestyle="--", linewidth=1, label=cutoff_label)
            ax.legend(frameon=False, fontsize=9)
        ax.set_xlim(-0.7, span - 0.3)
        _thousands(ax, "x")
        _thousands(ax, "y")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left")
        _grid(ax, "y")
        return _embed(fig, title)
