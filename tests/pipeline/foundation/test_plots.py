"""The pages' charts: each an <img> whose source is a matplotlib SVG holding its title, axis titles
and labels as text (what a reader sees), nothing fetched."""
import base64
import re
import xml.etree.ElementTree as ET

from clipdata.pipeline.foundation import plots


def svg_of(img: str) -> str:
    match = re.fullmatch(r'<img class="plot" alt="([^"]*)" src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)">', img)
    assert match, img[:200]
    svg = base64.b64decode(match.group(2)).decode("utf-8")
    ET.fromstring(svg)  # well-formed
    return svg


def texts(svg: str) -> str:
    root = ET.fromstring(svg)
    return " | ".join("".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text"))


def test_horizontal_bars_carry_title_axis_title_labels_values_and_marker():
    img = plots.horizontal_bars("Pairs per entry", ["orange", "a very long entry name that is cut short here", "is"],
                                [("matched", [300, 120, 40], plots.GREY), ("kept", [150, 120, 40], plots.BLUE)],
                                xlabel="image-text pairs", value_text=lambda v: f"{v:,.0f}",
                                marker=(150, "t = 150"))
    words = texts(svg_of(img))
    for expected in ("Pairs per entry", "image-text pairs", "orange", "is", "matched", "kept", "t = 150", "300"):
        assert expected in words
    assert "a very long entry name that is cut short here" not in words   # cut with an ellipsis
    assert 'alt="Pairs per entry"' in img


def test_line_chart_shows_a_percent_axis_and_the_reference_line():
    img = plots.line_chart("Zero-shot accuracy", [("top-1", [(10, 0.05), (20, 0.2)], plots.RED)],
                           xlabel="training step", ylabel="accuracy", percent_axis=True, reference=(0.0125, "chance"))
    words = texts(svg_of(img))
    assert "training step" in words and "accuracy" in words and "chance" in words
    assert re.search(r"\d+%", words)


def test_histogram_marks_the_cutoff_and_labels_both_axes():
    counts = [3, 0, 5, 0, 9] + [0] * 60
    words = texts(svg_of(plots.histogram("Nearest hash", counts, xlabel="distance (bits)", ylabel="test images",
                                         cutoff=6, cutoff_label="search radius (6 bits)")))
    assert "distance (bits)" in words and "test images" in words and "search radius (6 bits)" in words


def test_nothing_to_plot_is_said_not_drawn():
    assert plots.horizontal_bars("Empty", [], [], xlabel="x") == "<p>Empty: nothing to plot.</p>"
    assert "nothing to plot" in plots.line_chart("Empty", [("a", [], plots.RED)], xlabel="x", ylabel="y")
    assert "nothing to plot" in plots.histogram("Empty", [0] * 65, xlabel="x", ylabel="y")


def test_the_same_chart_is_the_same_bytes():
    def draw():
        return plots.horizontal_bars("Same", ["a", "b"], [("n", [1, 2], plots.BLUE)], xlabel="n")
    assert draw() == draw()
