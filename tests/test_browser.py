"""The browser check the page tests rely on can fail: a broken image, a missing file, a script error
and a page wider than the window are each seen."""
import os

import pytest

import browser


@pytest.fixture(scope="module")
def chromium():
    path = browser.chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium on this machine: `make system-deps` installs Debian's chromium")
        pytest.skip("no Chromium installed (make system-deps installs it)")
    return path


def test_a_broken_page_is_seen_as_broken(chromium, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><html><body><img alt="corrupt" src="data:image/png;base64,AAAA">'
                    '<img alt="missing" src="missing.png"><div style="width:3000px">wide</div>'
                    '<script>console.error("boom"); undefinedFunction();</script></body></html>')
    with browser.Browser(chromium) as b:
        loaded = b.load(str(page), width=1000)
    assert [(i["alt"], i["loaded"]) for i in loaded.images] == [("corrupt", False), ("missing", False)]
    assert any("boom" in e for e in loaded.errors)
    assert any("undefinedFunction" in e for e in loaded.errors)
    assert any("missing.png" in e for e in loaded.errors)       # the failed load, from the browser's log
    assert loaded.overflow_px >= 2000


def test_a_good_page_is_clean_and_its_screenshot_is_a_png(chromium, tmp_path):
    from PIL import Image

    page = tmp_path / "good.html"
    page.write_text('<!doctype html><html><head><title>ok</title></head><body><p>fine</p>'
                    '<img alt="dot" src="data:image/svg+xml;base64,'
                    'PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHdpZHRoPSIxMCIgaGVpZ2h0PSIxMCIvPg=="></body></html>')
    with browser.Browser(chromium) as b:
        loaded = b.load(str(page), width=800)
        b.screenshot(str(tmp_path / "shot.png"), width=800, height=300)
    assert loaded.errors == [] and loaded.overflow_px == 0 and loaded.title == "ok"
    assert [(i["loaded"], i["width"]) for i in loaded.images] == [(True, 10)]
    assert Image.open(tmp_path / "shot.png").size == (800, 300)
