"""The learned copy descriptor (dedup/descriptor.py), its index and its part in the search."""
from __future__ import annotations

import io
import random
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from repo import BENCH

from clipdata.dedup import candidates, descriptor, search, training_shards
from clipdata.dedup.index import DescriptorIndex, HashIndex
from clipdata.pipeline.download.images import ImageConfig, make_resizer, store_image
from clipdata.pipeline.foundation import thumbs

sys.path.insert(0, BENCH)

import dedup_scale  # noqa: E402  the scale benchmark's generator: pictures no two alike


@pytest.fixture(scope="module")
def model():
    return descriptor.Descriptor()


def stored_thumb(image: Image.Image) -> np.ndarray:
    """What the training side holds of an image: the downloader's stored form, its thumbnail."""
    buf = io.BytesIO()
    image.save(buf, "PNG")
    config = ImageConfig()
    stored = store_image(buf.getvalue(), make_resizer(config), config)
    assert stored.error is None
    return thumbs.decode(stored.thumb)


def copies(image: Image.Image) -> dict[str, Image.Image]:
    w, h = image.size
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=40)
    captioned = image.copy()
    ImageDraw.Draw(captioned).text((w // 10, h // 2), "SALE TODAY", fill=(255, 255, 255))
    return {
        "jpeg40": Image.open(io.BytesIO(buf.getvalue())).convert("RGB"),
        "half size": image.resize((w // 2, h // 2), Image.LANCZOS),
        "crop 10%": image.crop((w // 20, h // 20, w - w // 20, h - h // 20)),
        "brighter": ImageEnhance.Brightness(image).enhance(1.2),
        "mirrored": ImageOps.mirror(image),
        "caption": captioned,
    }


def test_the_shipped_weights_give_unit_descriptors_the_same_each_time(model):
    pictures = [dedup_scale.picture(i) for i in range(6)]
    first = model.describe([stored_thumb(p) for p in pictures])
    again = model.describe([stored_thumb(p) for p in pictures])
    assert first.shape == (6, descriptor.DIM) and first.dtype == np.float32
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.allclose(first, again)
    assert 0.3 < model.similar < 1.0


def test_test_inputs_are_the_stored_form_and_its_mirror():
    image = dedup_scale.picture(3).resize((300, 180))
    inputs = descriptor.test_inputs(image)
    assert inputs.shape == (len(descriptor.TEST_VIEWS), descriptor.INPUT, descriptor.INPUT, 3)
    assert np.array_equal(inputs[1], inputs[0][:, ::-1])
    # padded with white above and below, as the downloader stores a wide picture
    assert inputs[0][0].min() == 255 and inputs[0][-1].min() == 255


def test_copies_are_similar_and_different_pictures_are_not(model):
    """Through the real stored path: every copy of a picture at or above the shipped cosine,
    no pair of 60 different pictures (photo-like and drawings) at it."""
    pictures = [dedup_scale.picture(1000 + i) for i in range(60)]
    tests = np.stack([descriptor.test_inputs(p) for p in pictures])
    test_desc = np.stack([model.describe_inputs(tests[:, v]) for v in range(tests.shape[1])], 1)
    train_desc = model.describe([stored_thumb(p) for p in pictures])
    sims = np.max(np.einsum("tvd,nd->tnv", test_desc, train_desc), axis=2)
    assert np.all(np.diag(sims) >= model.similar)
    off = sims[~np.eye(len(pictures), dtype=bool)]
    assert off.max() < model.similar, f"{np.sum(off >= model.similar)} different pairs look alike"
    rng = random.Random(0)
    for i in rng.sample(range(len(pictures)), 8):
        names, made = zip(*copies(pictures[i]).items())
        copy_desc = model.describe([stored_thumb(c) for c in made])
        cos = np.max(test_desc[i] @ copy_desc.T, axis=0)
        missed = [f"{n} {c:.2f}" for n, c in zip(names, cos) if c < model.similar]
        assert not missed, f"picture {i}: {missed}"


def test_descriptor_index_finds_exactly_the_pairs_at_or_above_the_cosine():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(300, 16)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    queries = np.concatenate([rows[:20] + rng.normal(0, 0.2, (20, 16)).astype(np.float32),
                              rng.normal(size=(30, 16)).astype(np.float32)])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    sims = queries @ rows.T
    threshold = float(np.sort(sims, axis=None)[-40])      # exactly on a pair's cosine: inclusive
    q, r, s = DescriptorIndex(rows).similar_pairs(queries, threshold)
    want = {(int(a), int(b)) for a, b in zip(*np.nonzero(sims >= threshold))}
    assert set(zip(q.tolist(), r.tolist())) == want and len(want) >= 40
    assert np.allclose(s, sims[q, r], atol=1e-5)
    assert list(q) == sorted(q)
    approx = DescriptorIndex(rows, kind="ivf", nlist=4, nprobe=4)   # every list visited: exact
    qa, ra, _ = approx.similar_pairs(queries, threshold)
    assert set(zip(qa.tolist(), ra.tolist())) == want


def _side(desc_rows: dict[int, np.ndarray], codes: list[int]) -> search.TestSide:
    """A test side of len(codes) images with one hash each and the given descriptors."""
    n = len(codes)
    side = search.TestSide(["set"] * n, [f"t{i}" for i in range(n)], [None] * n,
                            np.array(codes, np.uint64), np.arange(n, dtype=np.int64), np.zeros(n, np.int16),
                            ["image"])
    rows, owner = [], []
    side.desc_row = np.full((n, 2), -1, np.int64)
    for image, views in desc_rows.items():
        for v, row in enumerate(views):
            side.desc_row[image, v] = len(rows)
            rows.append(row)
            owner.append(image)
    side.desc = np.array(rows, np.float32)
    side.desc_owner = np.array(owner, np.int64)
    return side


def _unit(*values) -> np.ndarray:
    v = np.array(values, np.float32)
    return v / np.linalg.norm(v)


def test_search_keeps_alike_hash_matches_and_adds_descriptor_pairs():
    a, b, c = _unit(1, 0, 0), _unit(0, 1, 0), _unit(0, 0, 1)
    mirror_of_c = _unit(0.1, 0, 1)
    # test 0: described as a; test 1: as b (image) and c (mirror); test 2: no descriptor
    side = _side({0: [a, a], 1: [b, mirror_of_c]}, [0x0F0F, 0xFFFF0000, 0x1234])
    train = training_shards.TrainHashes(keys=["k0", "k1", "k2", "k3"], urls=[None] * 4, captions=[None] * 4,
                                codes=np.array([0x0F0F, 0xFFFF0001, 0xFFFF00FF, 0x1234], np.uint64))
    train.thumbs = [None] * 4
    desc = np.stack([b, c, a, a])                      # k0 unlike test 0 but the same hash
    described = np.array([True, True, True, False])    # k3: no thumbnail, no descriptor
    finder = search.DescriptorSearch(DescriptorIndex(side.desc), similar=0.9, hash_similar=0.8, exact=0)
    found = search.search_shard(HashIndex(side.codes), side, train, 8, finder, (desc, described))
    got = {(p["test_index"], p["key"]): (p["distance"], p["view"], p["similarity"]) for p in found.candidates}
    dropped = found.dissimilar
    # test 0 / k0: same hash (distance 0 <= exact) though unlike; test 1 / k1: 1 bit and its
    # mirror view alike; test 1 / k2: 8 bits but unlike: dropped; test 0 / k2 and test 1 / k0:
    # descriptors alone; test 2 / k3: no descriptor on either side, the hash decides
    assert got[0, "k0"][:2] == (0, "image")
    assert got[1, "k1"][0] == 1 and got[1, "k1"][2] == pytest.approx(float(mirror_of_c @ c), abs=1e-4)
    assert (1, "k2") not in got and dropped == 1
    assert got[0, "k2"] == (None, "descriptor", 1.0)
    assert got[1, "k0"] == (None, "descriptor", 1.0)
    assert got[2, "k3"] == (0, "image", None)
    assert len(got) == 5
    # the descriptor's own verdict rides along: below `similar` a pair is unalike (stricter pixels)
    alike = {(p["test_index"], p["key"]): p["alike"] for p in found.candidates}
    assert alike == {(0, "k0"): False, (1, "k1"): True, (0, "k2"): True, (1, "k0"): True, (2, "k3"): None}
    # nearest pHash distance per test image within the radius, from the same search
    assert found.nearest.tolist() == [0, 1, 0]


def test_a_hash_match_is_kept_when_its_own_view_is_alike_though_the_whole_pictures_are_not():
    """A 20% crop's copy is unlike the whole test picture (cosine ~0.6) but alike the crop window
    whose pHash matched it: that view's descriptor decides, at `similar`. A match on the training
    image's centre view (the test image is the crop) keeps the whole-picture rule."""
    whole, window, other = _unit(1, 0, 0), _unit(0, 1, 0), _unit(0, 0, 1)
    # two test images, each with an "image" view and a "border_crop80_l" window view
    side = search.TestSide(["set"] * 2, ["t0", "t1"], [None] * 2,
                            np.array([0x0F0F, 0xF0F0F0F0, 0xFFFF0000, 0x00FF00FF], np.uint64),
                            np.array([0, 0, 1, 1], np.int64), np.array([0, 1, 0, 1], np.int16),
                            ["image", "border_crop80_l"])
    side.desc_row = np.array([[0, -1], [1, -1]], np.int64)
    side.desc = np.stack([whole, whole])
    side.desc_owner = np.array([0, 1], np.int64)
    side.view_desc = np.stack([whole, window, whole, other]).astype(np.float16)
    side.view_desc_row = np.array([[0, 1], [2, 3]], np.int64)
    # k0 matches test 0's window view (1 bit) and is alike that window: kept, similarity 1.0;
    # k1 matches test 1's window view (1 bit) but is alike neither view: dropped
    crop_copy = _unit(0.55, 1, 0)                     # cosine with the whole picture ~0.48
    train = training_shards.TrainHashes(keys=["k0", "k1"], urls=[None] * 2, captions=[None] * 2,
                                codes=np.array([0xF0F0F0F1, 0x00FF00FE], np.uint64))
    train.thumbs = [None] * 2
    finder = search.DescriptorSearch(DescriptorIndex(side.desc), similar=0.8, hash_similar=0.4, exact=0)
    found = search.search_shard(HashIndex(side.codes), side, train, 4, finder,
                                 (np.stack([crop_copy, _unit(0.6, 0.8, 0.0)]), np.array([True, True])))
    got = {(p["test_index"], p["key"]): p for p in found.candidates}
    assert set(got) == {(0, "k0")} and found.dissimilar == 1
    assert got[0, "k0"]["view"] == "border_crop80_l"
    assert got[0, "k0"]["similarity"] == pytest.approx(float(window @ crop_copy), abs=1e-3)
    assert got[0, "k0"]["alike"] is True
    # without view descriptors the old rule (whole picture from hash_similar) keeps both
    side.view_desc = side.view_desc_row = None
    found = search.search_shard(HashIndex(side.codes), side, train, 4, finder,
                                 (np.stack([crop_copy, _unit(0.6, 0.8, 0.0)]), np.array([True, True])))
    assert {(p["test_index"], p["key"]) for p in found.candidates} == {(0, "k0"), (1, "k1")}


def test_a_hash_match_whose_whole_pictures_agree_keeps_its_distance_and_view():
    """The matched view is unlike the training image but the whole pictures agree: the descriptor
    search finds the pair, and it is reported with its pHash match (distance, view), not as a
    descriptor-only pair."""
    whole, window = _unit(1, 0, 0), _unit(0, 1, 0)
    side = search.TestSide(["set"], ["t0"], [None], np.array([0x0F0F, 0xF0F0F0F0], np.uint64),
                            np.array([0, 0], np.int64), np.array([0, 1], np.int16), ["image", "border_crop80_l"])
    side.desc_row, side.desc, side.desc_owner = np.array([[0, -1]], np.int64), np.stack([whole]), np.array([0])
    side.view_desc = np.stack([whole, window]).astype(np.float16)
    side.view_desc_row = np.array([[0, 1]], np.int64)
    train = training_shards.TrainHashes(keys=["k0"], urls=[None], captions=[None], codes=np.array([0xF0F0F0F3], np.uint64))
    train.thumbs = [None]
    finder = search.DescriptorSearch(DescriptorIndex(side.desc), similar=0.8, hash_similar=0.4, exact=0)
    found = search.search_shard(HashIndex(side.codes), side, train, 4, finder, (np.stack([whole]), np.array([True])))
    assert [(p["distance"], p["view"], p["similarity"]) for p in found.candidates] == [(2, "border_crop80_l", 1.0)]
    assert found.dissimilar == 0


def _random_search_case(seed: int):
    """A test side of 60 images (3 hash views, descriptors of every view) and 70 training images,
    a third of them near copies (a few bits off, descriptors close), some alike a test picture
    with an unrelated hash, the rest random."""
    rng = np.random.default_rng(seed)
    n_test, n_train, dim = 60, 70, 16

    def unit(x):
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    names = ["image", "mirror", "crop90"]
    codes = rng.integers(0, 2**63, (n_test, 3), dtype=np.uint64)
    view_desc = unit(rng.normal(size=(n_test, 3, dim)))
    side = search.TestSide(["set"] * n_test, [f"t{i}" for i in range(n_test)], [None] * n_test,
                            codes.ravel(), np.repeat(np.arange(n_test), 3), np.tile(np.arange(3, dtype=np.int16), n_test),
                            names)
    side.desc_row = np.stack([np.arange(n_test) * 2, np.arange(n_test) * 2 + 1], 1)
    side.desc = view_desc[:, :2].reshape(-1, dim).copy()
    side.desc_owner = np.repeat(np.arange(n_test), 2)
    side.view_desc = view_desc.reshape(-1, dim).astype(np.float16)
    side.view_desc_row = np.arange(n_test * 3).reshape(n_test, 3)
    train_codes = rng.integers(0, 2**63, n_train, dtype=np.uint64)
    desc = unit(rng.normal(size=(n_train, dim)))
    for j in range(0, n_train, 3):                 # near copies of a random view of a random test image
        t, v = int(rng.integers(n_test)), int(rng.integers(3))
        flips = np.uint64(sum(1 << int(b) for b in rng.choice(64, int(rng.integers(0, 6)), replace=False)))
        train_codes[j] = codes[t, v] ^ flips
        desc[j] = unit(view_desc[t, v] + rng.normal(0, float(rng.uniform(0.05, 0.6)), dim))
    for j in range(1, n_train, 6):                 # alike a test picture, with an unrelated hash
        desc[j] = unit(view_desc[int(rng.integers(n_test)), 0] + rng.normal(0, 0.1, dim))
    train = training_shards.TrainHashes(keys=[f"k{j:03d}" for j in range(n_train)], urls=[None] * n_train,
                                captions=[None] * n_train, codes=train_codes)
    train.thumbs = [None] * n_train
    described = rng.random(n_train) > 0.1
    return side, train, (desc, described)


@pytest.mark.parametrize("seed", [0, 1])
def test_searching_a_shard_in_chunks_gives_what_one_pass_gives(monkeypatch, seed):
    side, train, train_desc = _random_search_case(seed)
    finder = search.DescriptorSearch(DescriptorIndex(side.desc), similar=0.8, hash_similar=0.5, exact=0, per_image=2)

    def run(chunk, block):
        monkeypatch.setattr(search, "SEARCH_CHUNK", chunk)
        monkeypatch.setattr(search, "DOT_BLOCK", block)
        found = search.search_shard(HashIndex(side.codes), side, train, 6, finder, train_desc)
        return found.candidates, found.dissimilar, found.nearest.tolist(), found.beyond_cap

    whole = run(10_000, 10_000)
    assert len(whole[0]) >= 8 and whole[1] > 0           # both kinds of pair, some matches left out
    assert {c["view"] for c in whole[0]} > {"descriptor"}
    for chunk, block in [(1, 1), (7, 3), (64, 5)]:
        assert run(chunk, block) == whole


def test_paired_dots_are_the_row_products_in_any_block_size(monkeypatch):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(50, 8)).astype(np.float16)
    b = rng.normal(size=(20, 8)).astype(np.float32)
    a_rows, b_rows = rng.integers(0, 50, 333), rng.integers(0, 20, 333)
    want = (a[a_rows].astype(np.float32) * b[b_rows]).sum(1)
    for block in (1, 7, 4096):
        monkeypatch.setattr(search, "DOT_BLOCK", block)
        assert np.allclose(search.paired_dots(a, a_rows, b, b_rows), want, atol=1e-5)


def test_the_auto_index_keeps_the_hashes_exact_and_turns_the_descriptors_ivf_when_large():
    from clipdata.dedup import index

    assert index.hash_kind("auto", 10**9) == "flat" and index.hash_kind("ivf", 10) == "ivf"
    assert index.descriptor_kind("auto", index.AUTO_IVF_ROWS - 1) == "flat"
    assert index.descriptor_kind("auto", index.AUTO_IVF_ROWS) == "ivf"
    assert index.descriptor_kind("flat", 10**9) == "flat" and index.descriptor_kind("ivf", 10) == "ivf"
    with pytest.raises(ValueError, match="auto, flat, ivf"):
        index.descriptor_kind("hnsw", 10)


def test_a_match_on_the_training_centre_is_checked_with_the_centres_descriptor(monkeypatch):
    """The test image is the crop: its pHash matched the training image's centre view. The
    training centre (described from the stored thumbnail) must be alike the matched test view."""
    whole, window, other = _unit(1, 0, 0), _unit(0, 1, 0), _unit(0, 0, 1)
    side = search.TestSide(["set"] * 2, ["t0", "t1"], [None] * 2, np.array([0x0F0F, 0xFFFF], np.uint64),
                            np.array([0, 1], np.int64), np.array([0, 0], np.int16), ["image"])
    side.desc_row = np.array([[0, -1], [1, -1]], np.int64)
    side.desc, side.desc_owner = np.stack([whole, whole]), np.array([0, 1], np.int64)
    side.view_desc, side.view_desc_row = np.stack([window, window]).astype(np.float16), np.array([[0], [1]], np.int64)
    # both training images: unlike the test pictures as a whole (cosine 0.6 >= hash_similar),
    # their centre views match the test images' hashes exactly... k0's centre is alike, k1's not
    train = training_shards.TrainHashes(keys=["k0", "k1"], urls=[None] * 2, captions=[None] * 2,
                                codes=np.array([0xAAAA0000, 0xBBBB0000], np.uint64),
                                centre=np.array([0x0F0E, 0xFFFE], np.uint64), has_centre=np.array([True, True]))
    train.thumbs = [b"k0", b"k1"]
    centres = {b"k0": window, b"k1": other}
    monkeypatch.setattr(search, "describe_centres", lambda stored: (np.stack([centres[s] for s in stored]),
                                                                     np.ones(len(stored), bool)))
    finder = search.DescriptorSearch(DescriptorIndex(side.desc), similar=0.8, hash_similar=0.4, exact=0)
    unlike_whole = _unit(0.6, 0, 0.8)
    found = search.search_shard(HashIndex(side.codes), side, train, 2, finder,
                                 (np.stack([unlike_whole, unlike_whole]), np.array([True, True])))
    got = {(p["test_index"], p["key"]): p for p in found.candidates}
    assert set(got) == {(0, "k0")} and found.dissimilar == 1
    assert got[0, "k0"]["view"] == "image / train centre" and got[0, "k0"]["similarity"] == pytest.approx(1.0, abs=1e-3)


def test_each_training_image_keeps_its_most_alike_candidates_only():
    """With many alike test images a training image keeps per_image candidates, the highest
    cosines; pairs without a cosine and identical hashes are kept besides."""
    rng = np.random.default_rng(1)
    base = _unit(*rng.normal(size=8))
    n = 6
    views = {}
    for i in range(n):              # test i: cosine to `base` falling with i
        v = base + (0.05 * i) * _unit(*rng.normal(size=8))
        views[i] = [v / np.linalg.norm(v)] * 2
    side = _side(views, [0xAAAA] + [0xF0F0F0F0 + i for i in range(1, n)] + [0x5555])
    train = training_shards.TrainHashes(keys=["k0", "k1"], urls=[None] * 2, captions=[None] * 2,
                                codes=np.array([0xAAAA, 0x5555], np.uint64))
    train.thumbs = [None] * 2
    desc = np.stack([base, base])
    described = np.array([True, False])
    finder = search.DescriptorSearch(DescriptorIndex(side.desc), similar=0.5, hash_similar=0.4, exact=0,
                                      per_image=2)
    found = search.search_shard(HashIndex(side.codes), side, train, 2, finder, (desc, described))
    got = sorted((p["key"], p["test_index"]) for p in found.candidates)
    cosines = [float(views[i][0] @ base) for i in range(n)]
    top = sorted(range(1, n), key=lambda i: -cosines[i])[:2]
    # k0: identical hash to test 0 (kept whatever its rank), then its 2 most alike others;
    # k1: no descriptor, its hash match to test 6 stays
    assert got == sorted([("k0", 0)] + [("k0", i) for i in top] + [("k1", n)])
    assert found.beyond_cap == (n - 1) - 2


def test_missing_weights_fail_once_with_what_to_do(tmp_path, monkeypatch, capsys):
    from test_dedup import ShardMaker

    from clipdata.pipeline import cli
    from clipdata.pipeline.foundation import shards

    monkeypatch.setattr(descriptor, "WEIGHTS", str(tmp_path / "gone.pt"))
    monkeypatch.setattr(descriptor, "_SHARED", {})
    (tmp_path / "test").mkdir()
    dedup_scale.picture(1).save(tmp_path / "test" / "a.png")
    shards.write_shard(str(tmp_path / "shards"), 0, [ShardMaker().row(0, 0, dedup_scale.picture(2), "c")],
                       {"start_time": 0.0, "end_time": 1.0})
    code = cli.main(["dedup", "--shards", str(tmp_path / "shards"), "--test-set", f"t={tmp_path / 'test'}",
                     "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "weights are missing" in err and "--no-descriptor" in err


def test_unalike_pairs_are_judged_with_the_stricter_thresholds(tmp_path, monkeypatch):
    """The screen and the pixels take verify's UNALIKE thresholds for a pair the descriptor found
    unalike, the usual ones otherwise (alike, or no descriptor)."""
    import io
    import tarfile
    import types

    from clipdata.dedup import verify

    used = []

    def fake_verify(test, train, thresholds=verify.THRESHOLDS, pyramid=None):
        used.append(thresholds)
        return verify.Verdict(True, 1.0, "align", "", None, {})

    monkeypatch.setattr(verify, "verify", fake_verify)
    png = io.BytesIO()
    dedup_scale.picture(3).save(png, "PNG")
    side = types.SimpleNamespace(refs=[types.SimpleNamespace(read=lambda: png.getvalue())])
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        jpg = io.BytesIO()
        dedup_scale.picture(4).save(jpg, "JPEG")
        info = tarfile.TarInfo("k0.jpg")
        info.size = len(jpg.getvalue())
        tar.addfile(info, io.BytesIO(jpg.getvalue()))
    shard = training_shards.ShardInput("00000", str(tmp_path / "00000.tar"), None)
    for alike, expected in ((False, [verify.SCREEN_UNALIKE_THRESHOLDS, verify.UNALIKE_THRESHOLDS]),
                            (True, [verify.SCREEN_THRESHOLDS, verify.THRESHOLDS]),
                            (None, [verify.SCREEN_THRESHOLDS, verify.THRESHOLDS])):
        used.clear()
        candidate = {"key": "k0", "test_index": 0, "distance": 4, "alike": alike, search.THUMB: None}
        [pair], errors, made = candidates.check_candidates(shard, [candidate], candidates.TestImages(side), True, False)
        assert (errors, made, pair["stage"]) == ([], 1, "pixels")   # screened on its thumbnail, then pixels
        assert used == expected, alike
    assert verify.UNALIKE_THRESHOLDS.agree > verify.THRESHOLDS.agree
    assert verify.SCREEN_UNALIKE_THRESHOLDS.agree > verify.SCREEN_THRESHOLDS.agree
