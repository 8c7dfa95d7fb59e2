"""pipeline/demo/synthetic_web.py: the synthetic web the demo runs on, its server and its test sets."""
import hashlib
import html
import http.client
import io
import json
import os
import threading
import urllib.error
import urllib.request
from collections import Counter

import ftfy
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageEnhance

from clipdata.pipeline.demo import synthetic_web as sw
from clipdata.pipeline.demo.synthetic_web import captions as sw_captions, drawing as sw_drawing, web as sw_web
from clipdata.pipeline.foundation.imaging import to_rgb

N_IMAGES = 160  # two per class
VOCABULARY = ["zorbak", "lumitte", "tessovar", "quill"]


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    return sw.build_web(str(tmp_path_factory.mktemp("web")), N_IMAGES, seed=3, vocabulary=VOCABULARY)


def _good(web):
    return [e for e in web["images"] if e["fault"] is None]


def _file_hashes(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if name not in ("web.json", "test_set.json"):  # they hold the folder's own path
                out[os.path.relpath(path, folder)] = hashlib.sha1(open(path, "rb").read()).hexdigest()
    return out


def _without_folder(manifest):
    return {k: v for k, v in manifest.items() if k != "folder"}


# ---------------------------------------------------------------------------------------------
# The web


def test_build_is_deterministic_per_seed_and_worker_count(tmp_path):
    a = sw.build_web(str(tmp_path / "a"), 40, seed=1)
    b = sw.build_web(str(tmp_path / "b"), 40, seed=1, workers=2)
    c = sw.build_web(str(tmp_path / "c"), 40, seed=2)
    assert _without_folder(a) == _without_folder(b)
    assert _file_hashes(tmp_path / "a") == _file_hashes(tmp_path / "b")
    assert [e["caption"] for e in a["images"]] != [e["caption"] for e in c["images"]]
    assert _file_hashes(tmp_path / "a") != _file_hashes(tmp_path / "c")


def test_manifest_on_disk_is_the_returned_one(web):
    assert sw.load_web(web["folder"]) == web
    assert len(web["classes"]) == len(sw.SHAPES) * len(sw.COLOURS) == 80


def test_every_valid_image_decodes_as_the_manifest_says(web):
    checked = 0
    for e in web["images"]:
        if e["fault"] not in (None, *sw_web.VALID_IMAGE_FAULTS):
            continue
        with Image.open(os.path.join(web["folder"], e["path"])) as im:
            im.load()
            assert (im.width, im.height, im.mode) == (e["width"], e["height"], e["mode"]), e["id"]
            assert im.format.lower() == e["format"]
        checked += 1
    assert checked == N_IMAGES + sum(e["fault"] in sw_web.VALID_IMAGE_FAULTS for e in web["images"])


def test_broken_files_are_broken_the_way_the_manifest_says(web):
    by_fault = {}
    for e in web["images"]:
        by_fault.setdefault(e["fault"], []).append(e)
    folder = web["folder"]
    for e in by_fault["truncated"]:
        with pytest.raises(OSError, match="truncated"):
            with Image.open(os.path.join(folder, e["path"])) as im:
                im.load()
    for e in by_fault["random-bytes"]:
        with pytest.raises(Image.UnidentifiedImageError):
            Image.open(os.path.join(folder, e["path"]))
    for e in by_fault["empty-file"]:
        assert os.path.getsize(os.path.join(folder, e["path"])) == 0
    for e in by_fault["html"]:
        assert open(os.path.join(folder, e["path"]), "rb").read().startswith(b"<!DOCTYPE html>")
    for e in by_fault["dead-link"]:
        assert e["path"] is None and not os.path.exists(os.path.join(folder, e["url"].lstrip("/")))


def test_classes_are_balanced(web):
    counts = Counter(e["class"] for e in _good(web))
    assert set(counts) == set(web["classes"])
    assert max(counts.values()) - min(counts.values()) <= 1


def test_formats_sizes_and_modes_vary(web):
    good = _good(web)
    assert {e["format"] for e in good} == {"jpeg", "png", "webp"}
    assert {e["mode"] for e in good} == {"RGB", "RGBA"}
    assert all(e["format"] != "jpeg" for e in good if e["mode"] == "RGBA")
    assert any(e["width"] * e["height"] > 2_000_000 for e in good)  # exercises resizing
    assert any(e["width"] != e["height"] for e in good)
    assert min(min(e["width"], e["height"]) for e in good) < 128
    assert {e["spec"]["background"]["kind"] for e in good} == {
        "plain", "gradient", "noise", "photo", "transparent"}
    assert any(e["spec"]["distractor"] for e in good)


def test_captions_are_alt_text_of_every_kind(web):
    good = _good(web)
    kinds = Counter(e["caption_kind"] for e in good)
    assert set(kinds) == set(sw_captions.CAPTION_KINDS) - {"foreign"}   # no languages asked for
    assert kinds["class"] > 0.7 * N_IMAGES
    class_words = set(sw.SHAPES) | set(sw.COLOURS)
    for e in good:
        text = ftfy.fix_text(e["caption"]).lower()
        kind = e["caption_kind"]
        if kind in sw_captions.CLASS_CAPTION_KINDS:
            assert e["colour"] in text and e["shape"] in text, e["caption"]
        elif kind == "shape-only":
            assert e["shape"] in text and not any(c in text.split() for c in sw.COLOURS), e["caption"]
        elif kind == "no-match":
            assert not class_words & set(text.replace("-", " ").split()), e["caption"]
        elif kind == "empty":
            assert not text.strip(), repr(e["caption"])
        elif kind == "vocabulary-only":
            assert set(text.split()) <= set(VOCABULARY), e["caption"]
    # The noisy ones are noisy before cleaning and repaired by ftfy.
    for e in good:
        if e["caption_kind"] == "html-entities":
            assert "&" in e["caption"] and html.unescape(e["caption"]) != e["caption"]
        if e["caption_kind"] == "mojibake":
            assert any(c in e["caption"] for c in "ÃÂâ")
            assert ftfy.fix_text(e["caption"]) != e["caption"]
    # Filler words from the vocabulary appear in class captions too.
    assert any(w in e["caption"].split() for e in good if e["caption_kind"] == "class"
               for w in VOCABULARY)


def test_faults_are_added_at_the_fraction_with_every_kind(web):
    faults = [e for e in web["images"] if e["fault"]]
    assert len(faults) == web["n_faults"] == max(len(sw_web.FAULT_KINDS), round(0.05 * N_IMAGES))
    assert len(web["images"]) == N_IMAGES + len(faults)
    assert set(e["fault"] for e in faults) == set(sw_web.FAULT_KINDS)
    by_id = {e["id"]: e for e in web["images"]}
    assert len(by_id) == len(web["images"])
    for e in faults:
        if e["fault"] == "duplicate":
            source = by_id[e["duplicate_of"]]
            assert source["fault"] is None
            assert (e["url"], e["caption"]) == (source["url"], source["caption"])
    # Faults spread through the pool rather than trailing it.
    rows = [i for i, e in enumerate(web["images"]) if e["fault"]]
    assert rows[0] < len(web["images"]) - len(faults)


def test_unknown_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown fault kind"):
        sw.build_web(str(tmp_path), 4, seed=0, fault_kinds=["dead-link", "gremlins"])
    with pytest.raises(ValueError, match="unknown shape"):
        sw.build_web(str(tmp_path), 4, seed=0, shapes=["blob"])
    with pytest.raises(ValueError, match="unknown transform"):
        sw.build_test_set(str(tmp_path), 4, seed=0, transforms=["sepia"])


def test_every_shape_is_drawn_and_differs_from_the_others():
    masks = {}
    for shape in sw.SHAPES:
        mask = np.asarray(sw_drawing.shape_mask(shape, 40, 0)) > 127
        assert 0.15 < mask.mean() < 0.8, shape
        masks[shape] = mask
    for a in sw.SHAPES:
        for b in sw.SHAPES:
            if a < b:
                iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
                assert iou < 0.85, (a, b, iou)


def test_the_shape_carries_its_colour():
    import random
    for colour, rgb in sw.COLOURS.items():
        spec = sw.make_spec("square", colour, random.Random(0), 96, 96)
        spec.background = {"kind": "plain", "colours": [[255, 255, 255]]}
        pixels = np.asarray(sw.draw_image(spec), dtype=int)
        centre = pixels[spec.cy, spec.cx]
        assert np.abs(centre - np.array(rgb)).max() <= 18, colour


# ---------------------------------------------------------------------------------------------
# The server


def test_server_serves_files_concurrently_with_types_and_404(web):
    good = _good(web)[:50]
    results = {}

    def fetch(e):
        with urllib.request.urlopen(base + e["url"], timeout=10) as response:
            results[e["id"]] = (response.status, response.headers["Content-Type"],
                                int(response.headers["Content-Length"]), response.read())

    with sw.serve(web["folder"]) as base:
        assert base.startswith("http://127.0.0.1:")
        threads = [threading.Thread(target=fetch, args=(e,)) for e in good]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(base + "/img/nope.jpg", timeout=10)
        assert missing.value.code == 404
    types = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
    for e in good:
        status, content_type, length, body = results[e["id"]]
        data = open(os.path.join(web["folder"], e["path"]), "rb").read()
        assert (status, content_type, length, body) == (200, types[e["format"]], len(data), data)


def test_server_keeps_connections_alive_and_answers_head(web):
    good = _good(web)[:5]
    with sw.serve(web["folder"]) as base:
        conn = http.client.HTTPConnection(base.split("//")[1], timeout=10)
        for e in good:  # one connection, several requests
            conn.request("GET", e["url"])
            response = conn.getresponse()
            assert response.status == 200 and response.version == 11
            assert len(response.read()) == int(response.getheader("Content-Length"))
        conn.request("HEAD", good[0]["url"])
        response = conn.getresponse()
        assert response.status == 200 and int(response.getheader("Content-Length")) > 0
        assert response.read() == b""
        for odd in ("/../../../etc/passwd", "/img/%00.jpg", "/img/"):  # outside, NUL, a folder
            conn.request("GET", odd)
            response = conn.getresponse()
            assert response.status == 404, odd
            response.read()
        conn.close()


def test_server_holds_64_connections_at_once(web):
    n = 64
    barrier = threading.Barrier(n)
    statuses = []
    url = _good(web)[0]["url"]

    def client():
        conn = http.client.HTTPConnection(host, timeout=10)
        conn.connect()
        barrier.wait(timeout=10)  # every connection open before any request
        conn.request("GET", url)
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
        conn.close()

    with sw.serve(web["folder"]) as base:
        host = base.split("//")[1]
        threads = [threading.Thread(target=client) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert statuses == [200] * n


def test_server_plays_the_faults_the_routes_describe(web):
    first = {}
    for e in web["images"]:
        first.setdefault(e["fault"], e)
    with sw.serve(web["folder"]) as base:
        with urllib.request.urlopen(base + first["html"]["url"], timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/html")
        with urllib.request.urlopen(base + first["opt-out"]["url"], timeout=10) as response:
            assert "noai" in response.headers["X-Robots-Tag"]
            Image.open(io.BytesIO(response.read())).load()
        with pytest.raises(urllib.error.HTTPError) as limited:
            urllib.request.urlopen(base + first["retry-after"]["url"], timeout=10)
        assert limited.value.code == 429 and limited.value.headers["Retry-After"] == "1"
        with urllib.request.urlopen(base + first["retry-after"]["url"], timeout=10) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as dead:
            urllib.request.urlopen(base + first["dead-link"]["url"], timeout=10)
        assert dead.value.code == 404


def test_server_stops_cleanly_even_with_idle_connections(web):
    with sw.serve(web["folder"]) as base:
        host, port = base.split("//")[1].split(":")
        idle = http.client.HTTPConnection(host, int(port), timeout=10)
        idle.request("GET", _good(web)[0]["url"])
        idle.getresponse().read()  # the connection stays open, kept alive
    assert idle.sock.recv(1) == b""  # closed by the server on exit
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection(host, int(port), timeout=2).connect()
    assert not [t for t in threading.enumerate() if t.name == "synthetic-web"]


def test_pool_has_absolute_urls_on_the_servers_port(web, tmp_path):
    with sw.serve(web["folder"]) as base:
        sw.write_pool(web, base, str(tmp_path / "pool.parquet"))
    table = pq.read_table(tmp_path / "pool.parquet")
    assert table.column_names == ["url", "caption"]
    assert table.num_rows == N_IMAGES + web["n_faults"]
    urls, captions = table.column("url").to_pylist(), table.column("caption").to_pylist()
    assert captions == [e["caption"] for e in web["images"]]
    for url, e in zip(urls, web["images"]):
        if e["fault"] in ("ftp-url", "data-url", "malformed-url"):
            assert url == e["url"] and not url.startswith(base + "/")
        else:
            assert url == base + e["url"], e
    assert any(u.startswith("ftp://") for u in urls)
    assert any(u.startswith("data:image/png") for u in urls)


# ---------------------------------------------------------------------------------------------
# Test sets


def _thumb(image):
    return np.asarray(image.convert("L").resize((24, 24), Image.BILINEAR), dtype=float)


def test_test_set_is_labelled_folders_with_planted_copies_and_lookalikes(web, tmp_path):
    test = sw.build_test_set(str(tmp_path / "t"), 80, seed=5, planted_from=web, planted_count=10,
                             lookalike_count=6)
    folder = tmp_path / "t"
    assert json.loads((folder / "classes.json").read_text()) == test["classes"]
    assert json.loads((folder / "test_set.json").read_text()) == json.loads(json.dumps(test))
    assert len(test["classes"]) == 80 and test["classes"]["red_circle"] == "red circle"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(test["classes"])
    assert Counter(e["kind"] for e in test["images"]) == {"new": 64, "planted": 10, "lookalike": 6}
    assert len({e["path"] for e in test["images"]}) == 80

    web_by_id = {e["id"]: e for e in web["images"]}
    transforms = Counter()
    for e in test["images"]:
        assert e["path"] == f"{e['class_folder']}/{e['id']}.png"
        assert test["classes"][e["class_folder"]] == e["class"]
        with Image.open(folder / e["path"]) as im:
            im.load()
            assert im.mode == "RGB" and (im.width, im.height) == (e["width"], e["height"])
            image = im.copy()
        if e["kind"] == "new":
            assert e["source"] is None and e["transform"] is None
            continue
        source = web_by_id[e["source"]]
        assert source["fault"] is None and source["class"] == e["class"]
        with Image.open(os.path.join(web["folder"], source["path"])) as im:
            original = to_rgb(im)
        if e["kind"] == "planted":
            # Undone with the recorded parameters, the planted copy is its source again, up to
            # resampling and JPEG loss.
            params = e["transform"]
            transforms[params["name"]] += 1
            if params["name"] == "mirror":
                original = original.transpose(Image.FLIP_LEFT_RIGHT)
            elif params["name"] == "crop10":
                original = original.crop(params["box"])
            elif params["name"] == "brightness":
                original = ImageEnhance.Brightness(original).enhance(params["factor"])
            assert np.abs(_thumb(image) - _thumb(original)).mean() < 3, e
        else:
            # Same class, background and size, the shape elsewhere: near, but not a copy.
            assert e["transform"] is None
            assert (image.width, image.height) == (source["width"], source["height"])
            assert np.abs(_thumb(image) - _thumb(original)).mean() > 5, e
    assert transforms == {name: 2 for name in sw.TRANSFORMS}
    # The planted copies come from distinct web images, and lookalikes from others still.
    sources = [e["source"] for e in test["images"] if e["source"] is not None]
    assert len(sources) == len(set(sources)) == 16


def test_test_set_without_planting_is_balanced_and_deterministic(tmp_path):
    a = sw.build_test_set(str(tmp_path / "a"), 48, seed=2, shapes=["circle", "star", "heart"],
                          colours=["red", "blue"])
    b = sw.build_test_set(str(tmp_path / "b"), 48, seed=2, shapes=["circle", "star", "heart"],
                          colours=["red", "blue"])
    assert _without_folder(a) == _without_folder(b)
    assert _file_hashes(tmp_path / "a") == _file_hashes(tmp_path / "b")
    assert set(Counter(e["class"] for e in a["images"]).values()) == {8}
    assert {e["kind"] for e in a["images"]} == {"new"}


def test_test_set_refuses_to_plant_without_a_web(tmp_path):
    with pytest.raises(ValueError, match="planted_from"):
        sw.build_test_set(str(tmp_path), 10, seed=0, planted_count=2)


def test_a_web_with_languages_writes_a_fifth_of_its_alt_texts_in_them(tmp_path):
    from clipdata.pipeline.demo.synthetic_web import languages

    web = sw.build_web(str(tmp_path / "web"), 200, seed=3, fault_kinds=(), languages=languages.LANGUAGES)
    foreign = [e for e in web["images"] if e["caption_kind"].startswith("foreign:")]
    assert len(foreign) == 40
    assert {e["caption_kind"] for e in foreign} == {f"foreign:{lang}" for lang in languages.LANGUAGES}
    for e in foreign:
        lang = e["caption_kind"].split(":")[1]
        assert languages.COLOURS[lang][e["colour"]] in e["caption"] and languages.SHAPES[lang][e["shape"]] in e["caption"]


def test_language_articles_carry_the_wikis_own_namespaces_and_a_long_tail():
    from clipdata.pipeline.demo.synthetic_web import languages

    pages = languages.article_pages("de", 50, seed=0)
    assert any("[[Kategorie:" in p["text"] for p in pages) and any("[[Datei:" in p["text"] for p in pages)
    assert [p["ns"] for p in pages].count(1) == 1 and sum(p["redirect"] for p in pages) == 1
    words = [w for p in pages if p["ns"] == 0 for w in p["text"].split()]
    assert len(set(words)) > 10 * len(languages.COLOURS["de"])     # the tail the 10% cap needs
