"""`clipdata dedup` end to end: planted near duplicates in training shards are found, nothing else.

One world is built at test time and the job runs once over it (module fixture):

    test set   an ImageNet-style folder of drawn images (class per subfolder), one unreadable file
    shards/    our layout (clipdata download): 00000, 00001 and a corrupt 00002 (cut tar, bad parquet)
    elsewhere/ a tar + parquet without a phash column (img2dataset's layout): hashed from the tar
    plain/     a WebDataset tar with no parquet at all

The training images are transformed copies of five test images (JPEG re-encode, resize, 10% crop,
mirror, brightness: synthetic_web.transform), lookalikes of six others (the same shape moved, or
recoloured on white) and unrelated fillers, all passed through the downloader's resizer as real
shards hold them. The report must name exactly the planted pairs, with their training keys.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import random
import re
import tarfile

import imagehash
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clipdata.dedup import hashed_test_sets, overlap, semantic, training_shards
from clipdata.pipeline import cli
from clipdata.pipeline.demo import synthetic_web
from clipdata.pipeline.download import images
from clipdata.pipeline.foundation import eval_sets, shards
from clipdata.pipeline.foundation.imaging import to_rgb
from clipdata.pipeline.foundation.shards import ShardRow, sample_key

HOSTILE_CAPTION = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
HOSTILE_URL = 'http://evil.example/a.jpg?"><script>alert(2)</script>'


# ---------------------------------------------------------------------------------------------
# The world


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def draw(rng: random.Random, shape=None, colour=None, white=False) -> tuple[Image.Image, synthetic_web.ImageSpec]:
    shape = shape or rng.choice(synthetic_web.SHAPES)
    colour = colour or rng.choice(list(synthetic_web.COLOURS))
    spec = synthetic_web.make_spec(shape, colour, rng, rng.randint(120, 240), rng.randint(120, 240))
    if white:
        spec = dataclasses.replace(spec, background={"kind": "plain", "colours": [[255, 255, 255]]}, distractor=None)
    return to_rgb(synthetic_web.draw_image(spec)), spec


class ShardMaker:
    """Training samples through the downloader's resizer, as clipdata download stores them."""

    def __init__(self):
        self.config = images.ImageConfig()
        self.resizer = images.make_resizer(self.config)

    def row(self, shard: int, i: int, image: Image.Image, caption: str, url: str | None = None) -> ShardRow:
        stored = images.store_image(png(image), self.resizer, self.config)
        assert stored.error is None
        return ShardRow(key=sample_key(shard, i), url=url or f"http://train.test/{shard}/{i}.png", caption=caption,
                        status="success", width=stored.width, height=stored.height,
                        original_width=stored.original_width, original_height=stored.original_height,
                        sha256=stored.sha256, phash=stored.phash, phash_centre=stored.phash_centre,
                        thumb=stored.thumb, image=stored.data, image_ext=stored.ext,
                        extra={"uid": f"u{shard}-{i}"})


def build_world(root: str) -> dict:
    rng = random.Random(7)
    test_dir = os.path.join(root, "test")
    test_images = {}          # id -> image
    # 5 planted sources, 6 lookalike sources (drawn on white: the hard case), 12 new test images.
    for i in range(23):
        image, spec = draw(rng, white=5 <= i < 11)
        folder = synthetic_web.class_folder(spec.shape, spec.colour)
        tid = f"{folder}/{i:06d}.png"
        os.makedirs(os.path.join(test_dir, folder), exist_ok=True)
        image.save(os.path.join(test_dir, tid))
        test_images[tid] = (image, spec)
    with open(os.path.join(test_dir, "broken_000099.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really a png")
    ids = list(test_images)
    planted_ids, lookalike_ids = ids[:5], ids[5:11]

    # Training images: transformed copies, lookalikes, fillers, spread over the three layouts.
    trng = random.Random(11)
    copies = [synthetic_web.transform(test_images[tid][0], name, trng)[0]
              for tid, name in zip(planted_ids, synthetic_web.TRANSFORMS)]
    lookalikes = []
    for n, tid in enumerate(lookalike_ids):
        spec = test_images[tid][1]
        if n % 2 == 0:    # the same drawing, the shape moved and turned
            spec = synthetic_web.lookalike_spec(spec, trng)
        else:             # the same drawing in another colour
            other = next(c for c in synthetic_web.COLOURS if c != spec.colour)
            spec = dataclasses.replace(spec, colour=other, rgb=list(synthetic_web.COLOURS[other]))
        lookalikes.append(to_rgb(synthetic_web.draw_image(spec)))
    fillers = [draw(trng)[0] for _ in range(14)]

    maker = ShardMaker()
    planted = {}              # (test id, training key)
    layout = {0: [("copy", 0), ("copy", 1), ("look", 0), ("look", 1), ("fill", 0), ("fill", 1), ("fill", 2)],
              1: [("copy", 2), ("look", 2), ("fill", 3), ("fill", 4), ("fill", 5)],
              2: [("fill", 6), ("fill", 7)],
              5: [("copy", 3), ("look", 3), ("look", 4), ("fill", 8), ("fill", 9), ("fill", 10)],
              6: [("copy", 4), ("look", 5), ("fill", 11), ("fill", 12), ("fill", 13)]}
    rows = {}
    for shard, items in layout.items():
        rows[shard] = []
        for i, (kind, n) in enumerate(items):
            image = {"copy": copies, "look": lookalikes, "fill": fillers}[kind][n]
            caption = HOSTILE_CAPTION if (kind, n) == ("copy", 0) else f"{kind} {n}"
            url = HOSTILE_URL if (kind, n) == ("copy", 0) else None
            rows[shard].append(maker.row(shard, i, image, caption, url))
            if kind == "copy":
                planted[(planted_ids[n], sample_key(shard, i))] = synthetic_web.TRANSFORMS[n]
        if shard in (0, 1):
            rows[shard].append(ShardRow(key=sample_key(shard, len(items)), url="http://train.test/dead",
                                        caption="a dead link", status="failed", error_message="http-404"))

    ours = os.path.join(root, "shards")
    for shard in (0, 1, 2):
        shards.write_shard(ours, shard, rows[shard], {"start_time": 0.0, "end_time": 1.0})
    shards.write_manifest(ours)
    # Shard 2 broken after its commit: the tar cut mid-member, the parquet overwritten.
    tar_path = os.path.join(ours, "00002.tar")
    data = open(tar_path, "rb").read()
    with open(tar_path, "wb") as f:
        f.write(data[:1500])
    with open(os.path.join(ours, "00002.parquet"), "wb") as f:
        f.write(b"PAR1 this is not a parquet file")

    # img2dataset's layout: the parquet has no phash column.
    elsewhere = os.path.join(root, "elsewhere")
    shards.write_shard(elsewhere, 5, rows[5], {"start_time": 0.0, "end_time": 1.0})
    path = os.path.join(elsewhere, "00005.parquet")
    pq.write_table(pq.read_table(path).drop(["phash"]), path)
    os.remove(os.path.join(elsewhere, "00005_stats.json"))

    # A plain WebDataset tar: images, txt and json, no parquet.
    plain = os.path.join(root, "plain")
    shards.write_shard(plain, 6, rows[6], {"start_time": 0.0, "end_time": 1.0})
    for name in ("00006.parquet", "00006_stats.json"):
        os.remove(os.path.join(plain, name))

    # Per-example results: planted images right, a few clean ones wrong.
    predictions = os.path.join(root, "preds.csv")
    correct = {tid: (tid in planted_ids or k % 3 != 0) for k, tid in enumerate(ids)}
    with open(predictions, "w") as f:
        f.write("id,correct\n" + "".join(f"{tid},{int(c)}\n" for tid, c in correct.items()))
    return {"root": root, "test_dir": test_dir, "ids": ids, "planted": planted, "planted_ids": planted_ids,
            "lookalike_ids": lookalike_ids, "predictions": predictions, "correct": correct,
            "shards": ours, "elsewhere": elsewhere, "plain": plain, "rows": rows}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("dedup_world"))
    w = build_world(root)
    w["output"] = os.path.join(root, "report")
    w["exit"] = cli.main([
        "dedup", "--shards", w["shards"], "--shards", w["elsewhere"],
        "--shards", os.path.join(w["plain"], "0000{6..6}.tar"),
        "--test-set", f"shapes={w['test_dir']}", "--predictions", f"shapes={w['predictions']}",
        "--output", w["output"]])
    with open(os.path.join(w["output"], "report.json")) as f:
        w["report"] = json.load(f)
    return w


# ---------------------------------------------------------------------------------------------
# The report names exactly the planted pairs


def test_exactly_the_planted_pairs_are_reported(world):
    assert world["exit"] == 0
    (shapes,) = world["report"]["test_sets"]
    found = {(m["test_id"], m["key"]): m for m in shapes["matches"]}
    missed = {pair: world["planted"][pair] for pair in world["planted"] if pair not in found}
    extra = {pair: (m["distance"], m["method"], m["detail"]) for pair, m in found.items()
             if pair not in world["planted"]}
    assert not missed, f"planted copies not reported (transform per pair): {missed}"
    assert not extra, f"reported pairs that were not planted (lookalikes?): {extra}"
    assert shapes["overlap"] == 5
    assert shapes["size"] == 24 and shapes["unreadable"] == 1
    assert shapes["overlap_percent"] == pytest.approx(100 * 5 / 24, abs=1e-3)
    assert sorted(shapes["overlap_ids"]) == sorted(world["planted_ids"])
    for (test_id, key), m in found.items():
        assert m["verdict"] == "duplicate" and m["distance"] <= world["report"]["options"]["radius"]
        assert m["shard"] in ("00000", "00001", "00005", "00006")
        assert m["label"] == test_id.split("/")[0]


def test_blocklist_holds_the_matched_training_keys(world):
    with open(os.path.join(world["output"], "blocklist.txt")) as f:
        lines = f.read().splitlines()
    matched = {m["key"] for m in world["report"]["test_sets"][0]["matches"]}
    assert lines == sorted(matched)
    assert {key for _, key in world["planted"]} <= set(lines)


def test_pairs_csv_lists_every_checked_candidate(world):
    with open(os.path.join(world["output"], "pairs.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    (shapes,) = world["report"]["test_sets"]
    assert {(r["test_id"], r["key"]) for r in rows if r["verdict"] == "duplicate"} == \
        {(m["test_id"], m["key"]) for m in shapes["matches"]}
    assert {(r["test_id"], r["key"]) for r in rows if r["verdict"] == "rejected"} == \
        {(m["test_id"], m["key"]) for m in shapes["rejected"]}
    assert len(rows) == world["report"]["training"]["candidates"]
    hostile = [r for r in rows if r["key"] == "000000000"]
    assert hostile and hostile[0]["caption"] == HOSTILE_CAPTION and hostile[0]["url"] == HOSTILE_URL


def test_unreadable_test_image_and_corrupt_shard_are_named(world):
    report = world["report"]
    (shapes,) = report["test_sets"]
    assert [u["id"] for u in shapes["unreadable_images"]] == ["broken_000099.png"]
    bad = [e for e in report["shard_errors"] if e["shard"] == "00002"]
    assert bad, report["shard_errors"]
    text = " ".join(bad[0]["errors"])
    assert "parquet unreadable" in text and "tar unreadable" in text
    assert report["training"]["shards"] == 5
    assert {e["shard"] for e in report["shard_errors"]} == {"00002"}


def test_shards_without_phash_are_hashed_from_the_tar(world):
    training = world["report"]["training"]
    # elsewhere/00005 (6 images, no phash column) and plain/00006 (5 images, no parquet); shard 2's
    # tar is cut inside its first image, so nothing is hashed from it.
    assert training["train_hashed_from_tar"] == 11
    assert training["train_hashes"] == 7 + 5 + 11
    found = {m["key"]: m for m in world["report"]["test_sets"][0]["matches"]}
    assert found["000060000"]["caption"] == "copy 4"            # from the tar's txt member
    assert found["000060000"]["url"] == "http://train.test/6/0.png"  # from its json member
    assert found["000050000"]["url"] == "http://train.test/5/0.png"  # from the parquet


# ---------------------------------------------------------------------------------------------
# The stored thumbnails: candidates decided without the tar, and shards written before them


@pytest.fixture(scope="module")
def thumb_runs(world, tmp_path_factory):
    """The good shards 0 and 1 written three ways and checked against the same test set: as
    clipdata download writes them now (thumbnails in the parquet), as it wrote them before the
    thumbnail column, and without their tars (the parquet and stats alone)."""
    root = str(tmp_path_factory.mktemp("thumb_runs"))
    runs = {}
    for name in ("new", "old", "no_tar", "bad_thumb"):
        folder = os.path.join(root, name)
        for shard in (0, 1):
            rows = world["rows"][shard]
            if name == "old":
                rows = [dataclasses.replace(r, thumb=None) for r in rows]
            if name == "bad_thumb":   # bytes that are not a picture: the pixels decide instead
                rows = [dataclasses.replace(r, thumb=b"not a png" if r.thumb else None) for r in rows]
            shards.write_shard(folder, shard, rows, {"start_time": 0.0, "end_time": 1.0})
            if name == "old":  # the column itself absent, as in shards written before it
                path = os.path.join(folder, f"{shard:05d}.parquet")
                pq.write_table(pq.read_table(path).drop(["thumb"]), path)
            if name == "no_tar":
                os.remove(os.path.join(folder, f"{shard:05d}.tar"))
        output = os.path.join(root, f"report_{name}")
        code = cli.main(["dedup", "--shards", folder, "--test-set", f"shapes={world['test_dir']}",
                         "--output", output])
        assert code == 0
        with open(os.path.join(output, "report.json")) as f:
            report = json.load(f)
        with open(os.path.join(output, "pairs.csv"), newline="") as f:
            runs[name] = (report, list(csv.DictReader(f)))
    return runs


def test_download_stores_a_thumbnail_of_the_stored_image(world):
    from clipdata.pipeline.foundation import thumbs

    table = pq.read_table(os.path.join(world["shards"], "00000.parquet"), columns=["key", "status", "thumb"])
    with tarfile.open(os.path.join(world["shards"], "00000.tar")) as tar:
        stored = {m.name.split(".")[0]: tar.extractfile(m).read() for m in tar if m.name.endswith(".jpg")}
    rows = table.to_pylist()
    assert [r["key"] for r in rows if r["thumb"]] == sorted(stored)
    for r in rows:
        if r["status"] == "success":
            assert r["thumb"] == thumbs.from_stored_bytes(stored[r["key"]])
            assert max(Image.open(io.BytesIO(r["thumb"])).size) == thumbs.THUMB_SIDE
        else:
            assert r["thumb"] is None


def test_most_candidates_are_decided_on_the_stored_thumbnails(thumb_runs):
    report, rows = thumb_runs["new"]
    training = report["training"]
    stages = [r["stage"] for r in rows]
    assert training["candidates"] == len(rows) > 0
    assert training["screened_out"] == stages.count("screen") > 0
    assert training["checked_on_pixels"] == stages.count("pixels")
    assert training["thumbnails_from_tar"] == 0
    # every pair the screen rejected says why, in words; every duplicate was seen on the pixels
    assert all(r["reason"] and r["verdict"] == "rejected" for r in rows if r["stage"] == "screen")
    assert all(r["stage"] == "pixels" for r in rows if r["verdict"] == "duplicate")


def test_shards_written_before_the_thumbnail_give_the_same_report(thumb_runs):
    (new, new_rows), (old, old_rows) = thumb_runs["new"], thumb_runs["old"]

    def verdicts(rows):
        return {(r["test_id"], r["key"]): (r["verdict"], r["stage"], r["reason"], r["score"]) for r in rows}

    assert verdicts(old_rows) == verdicts(new_rows)
    assert old["test_sets"][0]["overlap_ids"] == new["test_sets"][0]["overlap_ids"]
    # ... the thumbnails made from the tars (every image: the copy descriptor reads them all),
    # counted and said
    assert old["training"]["thumbnails_from_tar"] == old["training"]["train_hashes"] > 0
    assert old["training"]["train_described"] == new["training"]["train_described"] == old["training"]["train_hashes"]
    assert old["training"]["candidates"] == new["training"]["candidates"]
    assert old["training"]["screened_out"] == new["training"]["screened_out"]


def test_an_unreadable_stored_thumbnail_leaves_the_pair_to_the_pixels(thumb_runs):
    (new, new_rows), (report, rows) = thumb_runs["new"], thumb_runs["bad_thumb"]
    # no descriptor either: every pHash match is a candidate, as before the descriptor
    assert report["training"]["train_described"] == report["training"]["descriptor_matches_hash_far"] == 0
    assert report["training"]["descriptor_matches_window_weak"] == 0
    assert report["training"]["candidates"] == len(rows) >= len(new_rows)
    assert {r["stage"] for r in rows} == {"pixels"}
    assert report["test_sets"][0]["overlap_ids"] == new["test_sets"][0]["overlap_ids"]


def test_the_screen_needs_no_tar(thumb_runs):
    (_, new_rows), (report, rows) = thumb_runs["new"], thumb_runs["no_tar"]
    screened = {(r["test_id"], r["key"]): r["reason"] for r in new_rows if r["stage"] == "screen"}
    assert {(r["test_id"], r["key"]): r["reason"] for r in rows if r["stage"] == "screen"} == screened
    # the pairs the screen passed need the pixels, which are gone: said, never a duplicate
    rest = [r for r in rows if r["stage"] != "screen"]
    assert rest and all(r["stage"] == "error" and r["verdict"] == "rejected" for r in rest)
    assert {e["shard"] for e in report["shard_errors"]} == {"00000", "00001"}


def photo_like(seed: int, size=(200, 160)) -> Image.Image:
    """Smooth random colour blobs plus grain: a picture with a stable pHash (not a drawing)."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(grid, "RGB").resize(size, Image.BICUBIC), dtype=np.int16)
    noise = rng.integers(-8, 9, (size[1], size[0], 1), dtype=np.int16)
    return Image.fromarray((base + noise).clip(0, 255).astype(np.uint8), "RGB")


def test_a_test_image_cropped_from_a_training_picture_is_found_by_its_centre_view(tmp_path):
    """The test image is the crop (a test set cut from web photos): found through the shard's
    phash_centre column; a shard written before that column existed is searched by its phash
    alone and misses it, without failing."""
    test_dir = tmp_path / "test" / "photos"
    test_dir.mkdir(parents=True)
    maker = ShardMaker()
    rows = []
    for i in range(3):
        picture = photo_like(40 + i)
        w, h = picture.size
        if i == 0:  # the bottom-left 80% of training picture 0 is a test image
            picture.crop((0, round(0.2 * h), round(0.8 * w), h)).save(test_dir / "crop_of_0.png")
        rows.append(maker.row(0, i, picture, f"photo {i}"))
    photo_like(99).save(test_dir / "unrelated.png")
    for name, keep_centre in (("with_centre", True), ("old", False)):
        folder = str(tmp_path / name)
        shards.write_shard(folder, 0, rows, {"start_time": 0.0, "end_time": 1.0})
        if not keep_centre:
            path = os.path.join(folder, "00000.parquet")
            pq.write_table(pq.read_table(path).drop(["phash_centre"]), path)
        out = str(tmp_path / f"report_{name}")
        assert cli.main(["dedup", "--shards", folder, "--test-set", f"photos={tmp_path / 'test'}",
                         "--output", out]) == 0
        with open(os.path.join(out, "report.json")) as f:
            (photos,) = json.load(f)["test_sets"]
        found = [(m["test_id"], m["key"], m["view"]) for m in photos["matches"]]
        if keep_centre:
            assert len(found) == 1 and found[0][:2] == ("photos/crop_of_0.png", sample_key(0, 0)), found
            assert found[0][2].endswith(" / train centre")
        else:
            assert found == []


def test_nearest_distance_histogram_counts_every_readable_test_image(world):
    (shapes,) = world["report"]["test_sets"]
    histogram = shapes["nearest_distance_histogram"]
    assert len(histogram) == 65
    assert sum(histogram) + shapes["nearest_distance_none"] == 23
    radius = world["report"]["options"]["radius"]
    assert sum(histogram[: radius + 1]) >= 5
    assert sum(histogram[radius + 1:]) == 0      # the search looks no further than the radius


def test_accuracy_split_from_predictions(world):
    (shapes,) = world["report"]["test_sets"]
    acc = shapes["accuracy"]
    correct = world["correct"]
    overlap_ids = set(shapes["overlap_ids"])
    clean = [t for t in correct if t not in overlap_ids]
    assert acc["n_overlap"] == len(overlap_ids) and acc["correct_overlap"] == sum(correct[t] for t in overlap_ids)
    assert acc["n_clean"] == len(clean) and acc["correct_clean"] == sum(correct[t] for t in clean)
    assert acc["missing"] == ["broken_000099.png"]
    p_clean = acc["correct_clean"] / acc["n_clean"]
    if acc["correct_overlap"] == acc["n_overlap"]:
        assert acc["p_value"] == pytest.approx(p_clean ** acc["n_overlap"])


def test_html_is_self_contained_and_escapes_web_text(world):
    with open(os.path.join(world["output"], "report.html"), encoding="utf-8") as f:
        page = f.read()
    assert "<script" not in page.lower()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"<link\b|@import|url\(", page, re.I)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    pairs = world["report"]["training"]["candidates"]
    assert html_count(page, "data:image/jpeg;base64,") == 2 * pairs   # test image beside its twin
    assert '<img class="plot"' in page and "shapes" in page


def html_count(page: str, needle: str) -> int:
    return page.count(needle)


def test_blocklist_from_the_report_removes_the_planted_samples(world, tmp_path):
    clean = str(tmp_path / "clean")
    assert cli.main(["dedup", "apply-blocklist", "--shards", world["shards"], "--blocklist",
                     os.path.join(world["output"], "blocklist.txt"), "--output", clean]) == 1  # shard 2 is corrupt
    table = shards.read_shard_table(clean, 0)
    blocked = {r["key"]: r["error_message"] for r in table.to_pylist() if r["status"] == "blocked"}
    listed = open(os.path.join(world["output"], "blocklist.txt")).read().split()
    assert set(blocked) == {k for k in listed if k.startswith("00000")} >= {"000000000", "000000001"}
    assert all(msg.startswith("contamination: test set shapes (") for msg in blocked.values())
    with tarfile.open(os.path.join(clean, "00000.tar")) as tar:
        assert not any(name.startswith(("000000000.", "000000001.")) for name in tar.getnames())


# ---------------------------------------------------------------------------------------------
# Pieces


def test_test_set_formats(tmp_path):
    rng = random.Random(3)
    pictures = [draw(rng)[0] for _ in range(3)]
    encoded = [png(p) for p in pictures]
    # WebDataset tar with cls / json labels, and a sample without an image.
    tar_path = str(tmp_path / "test-0000.tar")
    with tarfile.open(tar_path, "w") as tar:
        members = [("s0.png", encoded[0]), ("s0.cls", b"3"), ("s1.png", encoded[1]),
                   ("s1.json", b'{"label": "cat"}'), ("s2.txt", b"no image")]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    wds = eval_sets.load_test_set("w", str(tmp_path / "test-{0000..0000}.tar"))
    assert [(i.id, i.label) for i in wds.images] == [("s0", "3"), ("s1", "cat"), ("s2", None)]
    assert wds.images[1].read() == encoded[1]
    hashed = hashed_test_sets.hash_test_set(wds, views=("image", "mirror"), workers=1)
    assert hashed.readable == 2 and [u["id"] for u in wds.unreadable] == ["s2"]
    assert set(hashed.views[0]) == {"image", "mirror"}
    with Image.open(io.BytesIO(encoded[0])) as first:
        assert hashed.views[0]["image"] == int(str(imagehash.phash(first.convert("RGB"))), 16)

    # Parquet with bytes (a Hugging Face style struct) and one with paths.
    import pyarrow as pa

    pq.write_table(pa.table({"image": [{"bytes": b, "path": None} for b in encoded],
                             "label": [0, 1, 2], "id": ["a", "b", "c"]}), tmp_path / "bytes.parquet")
    by_bytes = eval_sets.load_test_set("b", str(tmp_path / "bytes.parquet"))
    assert [(i.id, i.label) for i in by_bytes.images] == [("a", "0"), ("b", "1"), ("c", "2")]
    assert by_bytes.images[2].read() == encoded[2]
    (tmp_path / "imgs").mkdir()
    for n, data in enumerate(encoded):
        (tmp_path / "imgs" / f"{n}.png").write_bytes(data)
    pq.write_table(pa.table({"file": [f"imgs/{n}.png" for n in range(3)], "y": [5, 6, 7]}),
                   tmp_path / "paths.parquet")
    by_path = eval_sets.load_test_set("p", str(tmp_path / "paths.parquet"), eval_sets.Columns(label="y"))
    assert [(i.id, i.label) for i in by_path.images] == [("imgs/0.png", "5"), ("imgs/1.png", "6"), ("imgs/2.png", "7")]
    assert by_path.images[0].read() == encoded[0]
    with pytest.raises(eval_sets.TestSetError, match="no image column"):
        pq.write_table(pa.table({"x": [1]}), tmp_path / "bad.parquet")
        eval_sets.load_test_set("x", str(tmp_path / "bad.parquet"))

    # A flat folder: no labels.
    flat = eval_sets.load_test_set("f", str(tmp_path / "imgs"))
    assert [(i.id, i.label) for i in flat.images] == [("0.png", None), ("1.png", None), ("2.png", None)]


def test_test_set_views_in_worker_processes(tmp_path, monkeypatch):
    rng = random.Random(5)
    for n in range(6):
        draw(rng)[0].save(tmp_path / f"{n}.png")
    monkeypatch.setattr(hashed_test_sets, "POOL_THRESHOLD", 2)
    test_set = eval_sets.load_test_set("t", str(tmp_path))
    in_pool = hashed_test_sets.hash_test_set(test_set, views=("image", "crop90"), workers=2, chunk=2)
    here = hashed_test_sets.hash_test_set(eval_sets.load_test_set("t", str(tmp_path)), views=("image", "crop90"),
                                          workers=1)
    assert in_pool.views == here.views and in_pool.readable == 6


def test_test_set_argument_and_missing_paths(tmp_path):
    assert eval_sets.parse_test_set_arg("cifar10=/data/c=1") == ("cifar10", "/data/c=1")
    with pytest.raises(ValueError):
        eval_sets.parse_test_set_arg("no-equals-sign")
    with pytest.raises(eval_sets.TestSetError):
        eval_sets.load_test_set("x", str(tmp_path / "nothing-here"))


def test_cli_errors_are_usage_errors(tmp_path, capsys):
    assert cli.main(["dedup", "--shards", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert "--test-set" in capsys.readouterr().err
    assert cli.main(["dedup", "--shards", str(tmp_path), "--test-set", f"a={tmp_path}", "--test-set",
                     f"a={tmp_path}", "--output", str(tmp_path / "o")]) == 2
    assert "more than once" in capsys.readouterr().err
    assert cli.main(["dedup", "--shards", str(tmp_path / "none"), "--test-set", f"a={tmp_path}",
                     "--output", str(tmp_path / "o")]) == 2
    assert "no training shards" in capsys.readouterr().err
    for flag, value, words in (("--per-image", "0", "--per-image must be at least 1"),
                               ("--similar", "1.5", "--similar is a cosine")):
        assert cli.main(["dedup", "--shards", str(tmp_path), "--test-set", f"a={tmp_path}", flag, value,
                         "--output", str(tmp_path / "o")]) == 2
        assert words in capsys.readouterr().err


def test_semantic_pairs_finds_pairs_above_the_cosine_threshold():
    rng = np.random.default_rng(0)
    test = rng.normal(size=(50, 32)).astype(np.float32)
    train = rng.normal(size=(400, 32)).astype(np.float32)
    train[17] = test[3] * 2.5 + rng.normal(scale=0.05, size=32)      # a near copy, other scale
    train[250] = test[41] * 0.3                                      # an exact copy, scaled
    test_idx, train_idx, cosine = semantic.semantic_pairs(test, train, threshold=0.95)
    assert sorted(zip(test_idx.tolist(), train_idx.tolist())) == [(3, 17), (41, 250)]
    assert cosine.min() >= 0.95 and cosine.max() <= 1.0001
    # Brute force agrees at a lower threshold.
    t, r, _ = semantic.semantic_pairs(test, train, threshold=0.5)
    tn = test / np.linalg.norm(test, axis=1, keepdims=True)
    rn = train / np.linalg.norm(train, axis=1, keepdims=True)
    expected = {(int(i), int(j)) for j, i in zip(*np.nonzero(rn @ tn.T >= 0.5))}
    assert set(zip(t.tolist(), r.tolist())) == expected


def _random_checkpoint(run: str) -> str:
    """A clipdata checkpoint of an untrained tiny-vit: its embeddings are arbitrary but fixed."""
    import torch

    from clipdata.trainer import checkpoint, model as clip_model

    torch.manual_seed(0)
    config = clip_model.load_config("tiny-vit")
    model = clip_model.build_model(config)
    return checkpoint.save_checkpoint(os.path.join(run, "checkpoints"), 1,
                                      {"step": 1, "model_config": model.config, "model": model.state_dict()})


def test_semantic_stage_adds_the_pairs_above_the_cosine_threshold(world, tmp_path):
    from clipdata.trainer.embed import ImageEmbedder

    run = str(tmp_path / "run")
    _random_checkpoint(run)
    embedder = ImageEmbedder.load(run)          # the run folder resolves to its latest checkpoint
    test_ids = list(world["ids"])
    test_vectors = embedder.embed_images([hashed_test_sets.decode(open(os.path.join(world["test_dir"], t), "rb").read())
                                          for t in test_ids])
    train = training_shards.read_train_images(os.path.join(world["shards"], "00000.tar"), {sample_key(0, i) for i in range(8)})
    keys = sorted(train)
    train_vectors = embedder.embed_images([hashed_test_sets.decode(train[k]) for k in keys])
    assert np.allclose(np.linalg.norm(train_vectors, axis=1), 1, atol=1e-4)
    cosine = train_vectors @ test_vectors.T
    threshold = float(np.quantile(cosine, 0.8))          # about a fifth of the pairs

    output = str(tmp_path / "semantic")
    assert cli.main(["dedup", "--shards", os.path.join(world["shards"], "00000.tar"), "--test-set",
                     f"shapes={world['test_dir']}", "--output", output, "--no-verify",
                     "--embeddings", run, "--semantic-threshold", str(threshold)]) == 0
    rows = list(csv.DictReader(open(os.path.join(output, "pairs.csv"))))
    semantic = {(r["test_id"], r["key"]) for r in rows if r["view"] == "semantic"}
    hashed = {(r["test_id"], r["key"]) for r in rows if r["view"] != "semantic"}
    above = {(test_ids[j], keys[i]) for i, j in zip(*np.nonzero(cosine >= threshold + 1e-5))}
    near = {(test_ids[j], keys[i]) for i, j in zip(*np.nonzero(np.abs(cosine - threshold) <= 1e-5))}
    assert semantic and not semantic & hashed
    assert above - hashed <= semantic <= (above | near) - hashed


def test_embeddings_need_a_checkpoint(tmp_path):
    with pytest.raises(semantic.SemanticUnavailable, match="no clipdata checkpoint"):
        semantic.load_embedder(str(tmp_path))
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(semantic.SemanticUnavailable, match="model.pt"):
        semantic.load_embedder(str(tmp_path / "model.pt"))


def test_list_shards_pairs_files_and_names_problems(tmp_path):
    ours = tmp_path / "ours"
    maker_rows = [ShardRow(key=sample_key(s, 0), url="u", caption="c", status="failed", error_message="x")
                  for s in (0, 1)]
    shards.write_shard(str(ours), 0, [maker_rows[0]], {})
    shards.write_shard(str(ours), 1, [maker_rows[1]], {})
    (ours / "00007.tar").write_bytes(b"")                      # not committed
    found, problems = training_shards.list_shards([str(ours), str(tmp_path / "missing.tar")])
    assert [(s.name, os.path.basename(s.tar), os.path.basename(s.parquet)) for s in found] == \
        [("00000", "00000.tar", "00000.parquet"), ("00001", "00001.tar", "00001.parquet")]
    assert {p["error"] for p in problems} == {"not committed (no _stats.json): skipped", "does not exist"}
    found, _ = training_shards.list_shards([str(ours / "{00000..00001}.tar")])
    assert [s.name for s in found] == ["00000", "00001"] and all(s.parquet for s in found)


def test_hash_only_with_an_ivf_index_reports_every_candidate(world, tmp_path):
    output = str(tmp_path / "hash-only")
    assert cli.main(["dedup", "--shards", world["shards"], "--shards", world["elsewhere"],
                     "--shards", os.path.join(world["plain"], "00006.tar"), "--test-set", f"shapes={world['test_dir']}",
                     "--output", output, "--no-verify", "--index", "ivf", "--views", "image,mirror,border"]) == 0
    report = json.load(open(os.path.join(output, "report.json")))
    assert report["options"]["views"] == ["image", "mirror", "border"] and report["options"]["index"] == "ivf"
    (shapes,) = report["test_sets"]
    assert shapes["rejected"] == [] and {m["method"] for m in shapes["matches"]} == {"hash"}
    radius, similar = report["options"]["radius"], report["options"]["similar"]
    # each a pHash match within the radius or a pair the copy descriptor finds alike
    assert all(m["distance"] <= radius if m["distance"] is not None else
               (m["view"] == "descriptor" and m["similarity"] >= similar) for m in shapes["matches"])
    # Without the pixel check the lookalikes on white come back too: that is why it exists.
    assert len(shapes["matches"]) > len(world["planted"])


def test_beam_flags_with_separate_values_are_not_taken_for_a_verb():
    parser = cli.build_parser()
    args, extra = parser.parse_known_args(["dedup", "--direct_num_workers", "2", "--output", "r", "--test-set", "a=b",
                                           "--shards", "s"])
    assert (args.handler.__name__, args.output, args.test_set, args.shards) == ("run_dedup_command", "r", ["a=b"], ["s"])
    assert extra == ["--direct_num_workers", "2"]
    args, extra = parser.parse_known_args(["dedup", "apply-blocklist", "--shards", "s", "--blocklist", "b",
                                           "--output", "o", "--runner", "FlinkRunner"])
    assert (args.handler.__name__, args.blocklist, extra) == ("run_apply_command", "b", ["--runner", "FlinkRunner"])


def test_views_presets_and_lists_resolve():
    config = lambda views: overlap.OverlapConfig(shards=["s"], test_sets=[("t", "p")], output="o",  # noqa: E731
                                                 views=views)
    from clipdata.dedup import hashing

    assert overlap.resolve_options(config(None))[1] == hashing.DEFAULT_VIEWS
    assert overlap.resolve_options(config(("default",)))[1] == hashing.DEFAULT_VIEWS
    assert overlap.resolve_options(config(("fast",)))[1] == hashing.FAST_VIEWS == (
        "image", "mirror", "border", "border_mirror", "crop90")
    assert overlap.resolve_options(config(("image", "border_crop80_tl")))[1] == ("image", "border_crop80_tl")
    with pytest.raises(overlap.OverlapError, match="unknown sideways"):
        overlap.resolve_options(config(("image", "sideways")))
    with pytest.raises(overlap.OverlapError, match="named twice"):
        overlap.resolve_options(config(("image", "image")))
