"""The learned copy descriptor (dedup/descriptor.py), its index and its part in the search."""
from __future__ import annotations

import io
import math
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


def test_folding_the_batch_norms_keeps_the_function(model):
    import torch

    unfolded = descriptor._net()
    unfolded.load_state_dict(torch.load(descriptor.WEIGHTS, map_location="cpu", weights_only=True)["model"])
    unfolded.eval()
    inputs = np.stack([descriptor.to_input(stored_thumb(dedup_scale.picture(i))) for i in range(8)])
    with torch.inference_mode():
        want = unfolded(descriptor.as_tensor(inputs)).numpy()
    folded = descriptor.Descriptor(int8=False)     # the float network, folded
    assert np.allclose(folded.describe_inputs(inputs), want, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.net.modules())


@pytest.mark.parametrize("block", [1024, 2])
def test_a_shards_thumbnails_are_described_as_stored_and_in_their_centre_view(model, monkeypatch, block):
    from clipdata.dedup import hashing

    monkeypatch.setattr(search, "DESCRIBE_BLOCK", block)     # 2: the blocks split an image's neighbours
    pictures = [dedup_scale.picture(i).resize((240, 160)) for i in range(4)]
    stored = [thumbs.encode(Image.fromarray(stored_thumb(p))) for p in pictures]
    train = training_shards.TrainHashes(keys=list("abcde"), urls=[None] * 5, captions=[None] * 5,
                                        codes=np.zeros(5, np.uint64), centre=np.zeros(5, np.uint64),
                                        has_centre=np.array([True, False, True, True, True]))
    train.thumbs = stored[:3] + [b"not a png", None]
    got = search.describe_training(train)
    assert got.described.tolist() == [True, True, True, False, False]
    assert got.centre_described.tolist() == [True, False, True, False, False]   # b: no phash_centre
    pixels = [thumbs.decode(d) for d in stored[:3]]
    assert np.allclose(got.whole[:3], model.describe(pixels), atol=1e-5)
    centres = [hashing.pad_to_square(hashing.centre_crop(hashing.stored_content(Image.fromarray(p)),
                                                         hashing.TRAIN_CENTRE_KEEP)) for p in pixels]
    assert np.allclose(got.centre[[0, 2]], model.describe([centres[0], centres[2]]), atol=1e-5)
    assert not got.whole[3:].any() and not got.centre[[1, 3, 4]].any()


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


@pytest.mark.skipif(not descriptor.int8_available(), reason="torch has no x86 quantized engine here")
def test_the_shipped_int8_network_gives_the_float_ones_descriptors_within_its_rounding(model):
    """Where it can, the shipped descriptor runs its int8 body; its descriptors are the float
    network's up to rounding: each within 0.01 of cosine 1, the cosines between pictures (what
    the threshold is judged on) within 0.06, a copy's within 0.03."""
    assert model.int8
    float_model = descriptor.Descriptor(int8=False)
    assert not float_model.int8 and float_model.similar == model.similar
    pictures = [dedup_scale.picture(i) for i in range(40)]
    thumbs_ = [stored_thumb(p) for p in pictures] + [stored_thumb(c) for c in copies(pictures[0]).values()]
    a, b = float_model.describe(thumbs_), model.describe(thumbs_)
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert ((a * b).sum(1) >= 0.99).all()
    assert np.abs(a @ a.T - b @ b.T).max() <= 0.06
    assert not np.allclose(a, b, atol=1e-4)        # it is the int8 network that ran
    assert np.abs(b[40:] @ b[0] - a[40:] @ a[0]).max() <= 0.03   # copies of picture 0: as alike


def test_where_torch_has_no_int8_engine_the_float_network_runs(monkeypatch):
    monkeypatch.setattr(descriptor, "int8_available", lambda: False)
    plain = descriptor.Descriptor()
    inputs = np.stack([descriptor.to_input(stored_thumb(dedup_scale.picture(i))) for i in range(4)])
    assert not plain.int8
    assert np.array_equal(plain.describe_inputs(inputs), descriptor.Descriptor(int8=False).describe_inputs(inputs))


def test_an_ivf_index_needs_a_code_value_s_worth_of_rows_to_train_on():
    """Each dimension's 4-bit codebook is trained on the rows: fewer than 16 cannot be; the
    error says to use a flat index (what `--index auto` builds below AUTO_IVF_ROWS)."""
    from clipdata.dedup import index

    rng = np.random.default_rng(2)
    rows = rng.normal(size=(16, 8)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    with pytest.raises(ValueError, match="flat"):
        index.train_ivf(rows[:15])
    small = DescriptorIndex(rows, kind="ivf")
    q, r, s = small.similar_pairs(rows, 0.999)
    assert set(zip(q.tolist(), r.tolist())) == {(i, i) for i in range(16)}


def test_a_checkpoint_without_the_int8_state_runs_the_float_network(tmp_path, model):
    import torch

    state = torch.load(descriptor.WEIGHTS, map_location="cpu", weights_only=True)
    assert "int8" in state
    del state["int8"]
    torch.save(state, tmp_path / "float.pt")
    plain = descriptor.Descriptor(str(tmp_path / "float.pt"))
    inputs = np.stack([descriptor.to_input(stored_thumb(dedup_scale.picture(i))) for i in range(4)])
    assert not plain.int8
    assert np.array_equal(plain.describe_inputs(inputs), descriptor.Descriptor(int8=False).describe_inputs(inputs))


@pytest.mark.skipif(not descriptor.int8_available(), reason="torch has no x86 quantized engine here")
def test_an_int8_state_saved_and_loaded_gives_the_same_descriptors():
    """What bench/train_descriptor.py stores (the calibrated int8 state) is what a worker runs."""
    import torch

    torch.manual_seed(0)
    net = descriptor.new_model().eval()
    descriptor.fold_batch_norms(net)
    calibration = np.random.default_rng(0).integers(0, 256, (64, descriptor.INPUT, descriptor.INPUT, 3), np.uint8)
    calibrated = descriptor.quantize_body(net, calibration=calibration)
    again = descriptor.new_model().eval()     # other random weights: the state holds them all
    descriptor.fold_batch_norms(again)
    loaded = descriptor.quantize_body(again, state=calibrated.state_dict())
    x = descriptor.as_tensor(calibration[:16])
    with torch.inference_mode(), descriptor._int8_engine():
        assert torch.equal(calibrated(x), loaded(x))


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
    # IVF visiting every list: the same pairs; the scan's estimates are checked exactly
    approx = DescriptorIndex(rows, kind="ivf", nlist=4, nprobe=4)
    qa, ra, sa = approx.similar_pairs(queries, threshold)
    assert set(zip(qa.tolist(), ra.tolist())) == want
    assert np.allclose(sa, sims[qa, ra], atol=1e-5) and list(qa) == sorted(qa)


def test_the_ivf_index_checks_its_estimates_with_the_exact_cosine():
    """The fast-scan codes only estimate a cosine (4 bits a dimension): the IVF index scans
    SCAN_MARGIN below the threshold and keeps what the float rows say; visiting every list it
    finds what the flat index finds, at the cosines copies have (0.75-0.95, 128 dimensions)."""
    from clipdata.dedup import index

    rng = np.random.default_rng(1)
    rows = rng.normal(size=(4000, 128)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    noise = rng.normal(size=(600, 128)).astype(np.float32) * rng.uniform(0.02, 0.11, (600, 1)).astype(np.float32)
    queries = rows[rng.choice(len(rows), 600, replace=False)] + noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    flat = DescriptorIndex(rows).similar_pairs(queries, 0.80)
    trained = index.train_ivf(rows, nlist=8)
    assert trained == index.train_ivf(rows, nlist=8)     # the same lists and codebooks each time
    ivf = DescriptorIndex(rows, kind="ivf", trained=trained, nprobe=8)
    got = ivf.similar_pairs(queries, 0.80)
    assert list(got[0]) == sorted(got[0])
    # within a query the flat index gives rows in order, the IVF one in the order of its lists
    got = [a[np.lexsort((got[1], got[0]))] for a in got]
    flat = [a[np.lexsort((flat[1], flat[0]))] for a in flat]
    assert np.array_equal(got[0], flat[0]) and np.array_equal(got[1], flat[1])
    assert np.allclose(got[2], flat[2], atol=1e-5)
    near = (flat[2] < 0.85).sum()
    assert 50 <= len(flat[0]) and near >= 20        # many pairs, a good share near the threshold
    # the scan's own estimates stray from the cosines: without the margin pairs would be lost
    lims, est, idx = ivf._index.range_search(queries, 0.80)
    assert len(idx) < len(flat[0])


def _side(codes: list[dict], rows: list[list | None]) -> search.TestSide:
    """A test side: per image its {view name: pHash} and its descriptor rows as
    (vector, whole, pHash or None), as flatten makes them."""
    names = list(dict.fromkeys(name for views in codes for name in views))
    hashes, owner, view = [], [], []
    for i, views in enumerate(codes):
        for name, h in views.items():
            hashes.append(h)
            owner.append(i)
            view.append(names.index(name))
    n = len(codes)
    side = search.TestSide(["set"] * n, [f"t{i}" for i in range(n)], [None] * n, np.array(hashes, np.uint64),
                            np.array(owner, np.int64), np.array(view, np.int16), names)
    side.desc = search.descriptor_rows(rows)
    return side


def _train(codes: list[int], centre: list[int | None] | None = None) -> training_shards.TrainHashes:
    n = len(codes)
    train = training_shards.TrainHashes(keys=[f"k{j}" for j in range(n)], urls=[None] * n, captions=[None] * n,
                                        codes=np.array(codes, np.uint64))
    if centre is not None:
        train.centre = np.array([c or 0 for c in centre], np.uint64)
        train.has_centre = np.array([c is not None for c in centre])
    train.thumbs = [f"k{j}".encode() for j in range(n)]
    return train


def _unit(*values) -> np.ndarray:
    v = np.array(values, np.float32)
    return v / np.linalg.norm(v)


def _search(side, train, desc, described, radius, similar=0.8, per_image=3, centres=None, index=None):
    """search_shard with the training descriptors given: `centres` maps a stored thumbnail to its
    centre view's descriptor (those of training images with a centre view)."""
    n, dim = len(desc), len(desc[0])
    centre = np.zeros((n, dim), np.float32)
    has = np.zeros(n, bool)
    for j in range(n):
        if centres is not None and train.thumbs[j] in centres and train.has_centre is not None and train.has_centre[j]:
            centre[j], has[j] = centres[train.thumbs[j]], described[j]
    train_desc = search.TrainDescriptors(np.stack(desc).astype(np.float32), np.array(described), centre, has)
    finder = search.DescriptorSearch(index or DescriptorIndex(side.desc.vectors), similar=similar, per_image=per_image)
    return search.search_shard(HashIndex(side.codes), side, train, radius, finder, train_desc)


def test_the_descriptor_proposes_and_the_phash_checks_a_window_match(monkeypatch):
    """A training image alike a test picture as a whole is a candidate whatever its pHash; one
    alike a crop window only when its pHash is within the radius of that window's too; identical
    pHashes are candidates whatever the cosine; a training image without a descriptor falls back
    to its pHash matches."""
    whole0, window0, whole1, other = _unit(1, 0, 0, 0), _unit(0, 1, 0, 0), _unit(0, 0, 1, 0), _unit(0, 0, 0, 1)
    side = _side([{"image": 0x0F0F, "border_crop80_l": 0xF0F0F0F0}, {"image": 0xFFFF0000}],
                 [[(whole0, True, 0x0F0F), (window0, False, 0xF0F0F0F0)], [(whole1, True, 0xFFFF0000)]])
    train = _train([0x12345678_00000000,   # k0: alike test 0 as a whole, an unrelated pHash
                    0xF0F0F0F1,            # k1: alike test 0's window, pHash 1 bit from it
                    0x0F0F0F0F_0F0F0F0F,   # k2: alike test 0's window (under CROP_ALIKE), pHash far: left out
                    0xFFFF0000,            # k3: unalike everything, pHash identical to test 1's
                    0xFFFF0003])           # k4: no descriptor: its pHash match (2 bits) decides
    found = _search(side, train, [whole0, _unit(0.1, 1, 0, 0), _unit(0, 0.86, 0, math.sqrt(1 - 0.86 ** 2)), other, other],
                    [True, True, True, True, False], radius=4)
    got = {(p["test_index"], p["key"]): (p["distance"], p["view"], p["similarity"], p["alike"])
           for p in found.candidates}
    assert got[0, "k0"] == (None, "descriptor", 1.0, True)
    assert got[0, "k1"][:2] == (1, "border_crop80_l") and got[0, "k1"][2] == pytest.approx(0.995, abs=1e-3)
    assert got[1, "k3"] == (0, "image", 0.0, False)     # identical pHashes, the descriptor against
    assert got[1, "k4"] == (2, "image", None, None)
    assert set(got) == {(0, "k0"), (0, "k1"), (1, "k3"), (1, "k4")}
    assert found.hash_far == 1                          # k2's window match
    assert found.nearest.tolist() == [1, 0]


def test_a_window_match_needs_more_cosine_unless_the_phashes_are_near():
    """A test image has ~20 crop windows to an unrelated picture's 2 whole rows: a match on a
    window needs WINDOW_EXTRA more cosine, unless its pHash is within WINDOW_NEAR bits."""
    whole, window, other = _unit(1, 0, 0), _unit(0, 1, 0), _unit(0, 0, 1)
    side = _side([{"image": 0x0F0F, "border_crop80_l": 0xFFFF}], [[(whole, True, 0x0F0F), (window, False, 0xFFFF)]])

    def at(cosine):    # a training descriptor at this cosine with the window, unalike the whole
        return _unit(0, cosine, math.sqrt(1 - cosine ** 2))

    weak = 0.80 + search.WINDOW_EXTRA / 2
    train = _train([0xFFFF ^ 0b111111,     # k0: 6 bits from the window, a weak cosine: left out
                    0xFFFF ^ 0b111,        # k1: 3 bits (within WINDOW_NEAR), the same cosine: kept
                    0xFFFF ^ 0b111111,     # k2: 6 bits, a cosine above the window's: kept
                    0xFFFF ^ 0b111111])    # k3: 6 bits, just at the window's cosine: kept
    found = _search(side, train, [at(weak), at(weak), at(0.80 + 2 * search.WINDOW_EXTRA),
                                  at(0.80 + search.WINDOW_EXTRA + 1e-3)], [True] * 4, radius=8)
    assert {p["key"] for p in found.candidates} == {"k1", "k2", "k3"}
    assert found.window_weak == 1 and found.hash_far == 0
    assert search.WINDOW_NEAR < 6 and 3 <= search.WINDOW_NEAR


def test_a_window_or_centre_match_far_above_the_threshold_needs_no_phash():
    """A 20% crop's framing moves its pHash beyond the radius of the window (or of the training
    centre) that shows it: at CROP_ALIKE or more the descriptor's match is a candidate alone."""
    whole, window, other = _unit(1, 0, 0), _unit(0, 1, 0), _unit(0, 0, 1)
    side = _side([{"image": 0x0F0F, "border_crop80_l": 0xFFFF}], [[(whole, True, 0x0F0F), (window, False, 0xFFFF)]])

    def at(cosine):    # a descriptor at this cosine with the window, unalike the whole
        return _unit(0, cosine, math.sqrt(1 - cosine ** 2))

    far = 0x12345678_9ABCDEF0    # every pHash far beyond the radius
    train = _train([far, far, far, far], centre=[None, None, far, far])
    found = _search(side, train, [at(search.CROP_ALIKE), at(search.CROP_ALIKE - 0.02), other, other],
                    [True] * 4, radius=8, centres={b"k2": at(search.CROP_ALIKE + 0.01), b"k3": at(search.CROP_ALIKE - 0.02)})
    got = {p["key"]: p for p in found.candidates}
    assert set(got) == {"k0", "k2"} and found.hash_far == 2     # k1 on its window, k3's centre
    assert got["k0"]["distance"] is None and got["k0"]["view"] == "descriptor"
    assert got["k2"]["similarity"] == pytest.approx(search.CROP_ALIKE + 0.01, abs=1e-3)


def test_the_cap_takes_pairs_found_on_the_descriptor_alone_last():
    """A page of text matches other pages' crop windows (their pHashes far) above a copy's
    whole-picture cosine: the pairs the pHash did not check come after the others in the cap."""
    rng = np.random.default_rng(3)
    base = _unit(*rng.normal(size=8))

    def near(cosine):
        noise = _unit(*rng.normal(size=8))
        noise = _unit(*(noise - (noise @ base) * base))
        return _unit(*(cosine * base + math.sqrt(1 - cosine ** 2) * noise))

    far = 0x12345678_9ABCDEF0
    # test 0: the training image's copy, whole picture at 0.91 (its pHash far too); tests 1-3:
    # other pages whose crop windows match at 0.95-0.97 (whole pictures unalike, pHashes far);
    # test 4: a window at 0.93 with its pHash near (checked)
    rows = [[(near(0.91), True, 0x0F0F)]]
    rows += [[(_unit(*rng.normal(size=8)), True, 0x1000 + i), (near(0.97 - 0.01 * i), False, 0x2000 + i)]
             for i in range(3)]
    rows += [[(_unit(*rng.normal(size=8)), True, 0x3000), (near(0.93), False, far ^ 0b11)]]
    side = _side([{"image": 0x0F0F}] + [{"image": 0x1000 + i, "border_crop80_l": 0x2000 + i} for i in range(3)]
                 + [{"image": 0x3000, "border_crop80_l": far ^ 0b11}], rows)
    train = _train([far])
    found = _search(side, train, [base], [True], radius=4, similar=0.8, per_image=3)
    kept = sorted(p["test_index"] for p in found.candidates)
    # the copy and the checked window stay though three unchecked matches are more alike; of
    # those three the most alike fills the cap
    assert kept == [0, 1, 4] and found.beyond_cap == 2


def test_a_whole_picture_pair_keeps_its_nearest_phash_views():
    """A pair the whole pictures propose is reported with its nearest pHash views when they are
    within the radius (as the pHash search would report it)."""
    whole, window = _unit(1, 0), _unit(0, 1)
    side = _side([{"image": 0x0F0F, "border_crop80_l": 0xF0F0F0F0}],
                 [[(whole, True, 0x0F0F), (window, False, 0xF0F0F0F0)]])
    train = _train([0xF0F0F0F3])
    found = _search(side, train, [whole], [True], radius=4)
    assert [(p["distance"], p["view"], p["similarity"]) for p in found.candidates] == [(2, "border_crop80_l", 1.0)]
    assert found.hash_far == 0


def test_the_training_centre_is_searched_with_its_own_phash():
    """The test image is the crop: the training image's centre view, described from its stored
    thumbnail, is alike a test view and its centre pHash is within the radius of that view's."""
    window, beside = _unit(0, 1, 0, 0), _unit(0, 0.85, 0.5268, 0)   # cosine 0.85 to each other
    side = _side([{"image": 0x0F0F}, {"image": 0xFFFF}], [[(window, True, 0x0F0F)], [(beside, True, 0xFFFF)]])
    unlike = _unit(0.6, 0, 0, 0.8)
    # k0's centre is test 0 and its centre pHash 1 bit away; k1's centre alike both (0.86, 0.84,
    # under CROP_ALIKE) but its pHash far: left out; k2 has no centre view
    train = _train([0xAAAA0000, 0xBBBB0000, 0xCCCC0000], centre=[0x0F0E, 0x0000FFFF_0000FFFF, None])
    found = _search(side, train, [unlike] * 3, [True] * 3, radius=2,
                    centres={b"k0": window, b"k1": _unit(0, 0.86, 0.2, 0.4695)})
    got = {(p["test_index"], p["key"]): p for p in found.candidates}
    # left out: k1's centre against both test images, k0's against test 1 (0.85)
    assert set(got) == {(0, "k0")} and found.hash_far == 3
    assert got[0, "k0"]["view"] == "image / train centre" and got[0, "k0"]["distance"] == 1
    assert got[0, "k0"]["similarity"] == pytest.approx(1.0, abs=1e-3)


def _random_search_case(seed: int):
    """A test side of 60 images (whole rows and 2 window rows, 4 pHash views; tests 0 and 1 near
    copies of each other) and 70 training images: a third near copies of a random row (a few bits
    off, descriptors close), some alike a test picture with an unrelated hash, one alike a window
    with an unrelated hash, some centre views alike a window, the rest random."""
    rng = np.random.default_rng(seed)
    n_test, n_train, dim = 60, 70, 16

    def unit(x):
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    view_names = ["image", "mirror", "crop90", "border_crop80"]
    codes = rng.integers(0, 2**63, (n_test, 4), dtype=np.uint64)
    vectors = unit(rng.normal(size=(n_test, 4, dim)))
    vectors[1] = unit(vectors[0] + rng.normal(0, 0.05, (4, dim)))   # a test set's own near copy
    rows = [[(vectors[t, v], v < 2, int(codes[t, v])) for v in range(4)] for t in range(n_test)]
    rows[5] = None                                  # an image without a descriptor
    side = _side([dict(zip(view_names, map(int, codes[t]))) for t in range(n_test)], rows)
    train_codes = rng.integers(0, 2**63, n_train, dtype=np.uint64)
    centre = rng.integers(0, 2**63, n_train, dtype=np.uint64)
    desc = unit(rng.normal(size=(n_train, dim)))
    centre_desc = unit(rng.normal(size=(n_train, dim)))

    def near(t, v):
        flips = np.uint64(sum(1 << int(b) for b in rng.choice(64, int(rng.integers(0, 8)), replace=False)))
        return codes[t, v] ^ flips, unit(vectors[t, v] + rng.normal(0, float(rng.uniform(0.05, 0.6)), dim))

    for j in range(0, n_train, 3):
        train_codes[j], desc[j] = near(int(rng.integers(n_test)), int(rng.integers(4)))
    for j in range(1, n_train, 6):                 # alike a test picture, with an unrelated hash
        desc[j] = unit(vectors[int(rng.integers(n_test)), 0] + rng.normal(0, 0.1, dim))
    for j in range(2, n_train, 5):                 # the centre view near a window
        centre[j], centre_desc[j] = near(int(rng.integers(n_test)), int(rng.integers(2, 4)))
    desc[4] = unit(vectors[0, 0] + rng.normal(0, 0.05, dim))      # alike tests 0 and 1
    desc[8] = unit(vectors[10, 3] + rng.normal(0, 0.05, dim))     # alike a window, its pHash far
    has_centre = rng.random(n_train) > 0.2
    train = _train([int(c) for c in train_codes], [int(c) if h else None for c, h in zip(centre, has_centre)])
    described = rng.random(n_train) > 0.1
    centres = {train.thumbs[j]: centre_desc[j] for j in range(n_train)}
    return side, train, desc, described, centres


def _rule_by_brute_force(side, train, desc, described, centres, radius, similar):
    """search_shard's candidates before the per-image cap, every pair tried: {(t, j): cosine}."""
    from clipdata.dedup.hashing import hamming

    d = side.desc
    vec = d.vectors.astype(np.float32)
    want = {}
    for j in range(len(train.codes)):
        views = [(train.codes[j], desc[j])]
        if train.has_centre[j]:
            views.append((train.centre[j], centres[train.thumbs[j]]))
        for r in range(len(d)):
            t = int(d.owner[r])
            if not described[j]:
                continue
            for k, (code, vector) in enumerate(views):
                cos = float(vec[r] @ vector)
                bits = hamming(code, d.code[r]) if d.coded[r] else 64
                near = bits <= radius
                if k == 0 and not d.whole[r]:   # a window: more cosine, or a near pHash
                    near = near and (cos >= similar + search.WINDOW_EXTRA or bits <= search.WINDOW_NEAR)
                sure = cos >= search.CROP_ALIKE   # a window or the centre far above: no pHash needed
                if cos >= similar and ((d.whole[r] and k == 0) or near or sure):
                    want[t, j] = max(want.get((t, j), -2.0), cos)
        for t in range(side.n_images):
            span = side.codes_of(t)
            same = any(hamming(c, side.codes[span]).min() == 0 for c, _ in views) if span.stop > span.start else False
            if described[j] and same and (t, j) not in want:
                want[t, j] = None
        if not described[j]:      # its pHash matches, all of them
            for t in range(side.n_images):
                span = side.codes_of(t)
                if span.stop > span.start and min(hamming(c, side.codes[span]).min() for c, _ in views) <= radius:
                    want[t, j] = None
    return want


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_search_gives_what_trying_every_pair_gives(seed):
    side, train, desc, described, centres = _random_search_case(seed)
    found = _search(side, train, list(desc), list(described), radius=6, similar=0.8, per_image=10**6, centres=centres)
    got = {(p["test_index"], int(p["key"][1:])): p["similarity"] for p in found.candidates}
    want = _rule_by_brute_force(side, train, desc, described, centres, 6, 0.8)
    assert set(got) == set(want) and len(want) >= 15
    for pair, cos in want.items():
        if cos is not None:
            assert got[pair] == pytest.approx(cos, abs=2e-3)
    kinds = {p["view"] for p in found.candidates}
    assert "descriptor" in kinds and any("train centre" in v for v in kinds) and kinds & {"crop90", "border_crop80"}


@pytest.mark.parametrize("seed", [0, 1])
def test_searching_a_shard_in_chunks_gives_what_one_pass_gives(monkeypatch, seed):
    side, train, desc, described, centres = _random_search_case(seed)

    def run(chunk):
        monkeypatch.setattr(search, "SEARCH_CHUNK", chunk)
        found = _search(side, train, list(desc), list(described), radius=6, per_image=1, centres=centres)
        return found.candidates, found.hash_far, found.nearest.tolist(), found.beyond_cap, found.window_weak

    whole = run(10_000)
    assert len(whole[0]) >= 8 and whole[1] > 0 and whole[3] > 0
    for chunk in (1, 7, 64):
        assert run(chunk) == whole


def test_an_ivf_descriptor_index_visiting_every_list_is_the_flat_one():
    from clipdata.dedup import index

    side, train, desc, described, centres = _random_search_case(3)
    flat = _search(side, train, list(desc), list(described), radius=6, centres=centres)
    trained = index.train_ivf(side.desc.vectors, nlist=4)
    ivf = _search(side, train, list(desc), list(described), radius=6, centres=centres,
                  index=DescriptorIndex(side.desc.vectors, kind="ivf", trained=trained, nprobe=4))
    strip = lambda cs: [{k: v for k, v in c.items() if k != "similarity"} for c in cs]   # noqa: E731
    assert strip(ivf.candidates) == strip(flat.candidates) and len(flat.candidates) >= 10
    assert [c["similarity"] for c in ivf.candidates] == pytest.approx([c["similarity"] for c in flat.candidates], abs=1e-5)


def test_the_auto_index_keeps_the_hashes_exact_and_turns_the_descriptors_ivf_when_large():
    from clipdata.dedup import index

    assert index.hash_kind("auto", 10**9) == "flat" and index.hash_kind("ivf", 10) == "ivf"
    assert index.descriptor_kind("auto", index.AUTO_IVF_ROWS - 1) == "flat"
    assert index.descriptor_kind("auto", index.AUTO_IVF_ROWS) == "ivf"
    assert index.descriptor_kind("flat", 10**9) == "flat" and index.descriptor_kind("ivf", 10) == "ivf"
    with pytest.raises(ValueError, match="auto, flat, ivf"):
        index.descriptor_kind("hnsw", 10)


def test_each_training_image_keeps_its_most_alike_candidates_only():
    """With many alike test images a training image keeps per_image candidates, the highest
    cosines; pairs without a cosine and identical hashes are kept besides."""
    rng = np.random.default_rng(1)
    base = _unit(*rng.normal(size=8))
    n = 6
    rows = []
    for i in range(n):              # test i: cosine to `base` falling with i
        v = base + (0.05 * i) * _unit(*rng.normal(size=8))
        rows.append([(v / np.linalg.norm(v), True, None)])
    rows.append([(_unit(*rng.normal(size=8)), True, None)])
    codes = [{"image": h} for h in [0xAAAA] + [0xF0F0F0F0 + i for i in range(1, n)] + [0x5555]]
    side = _side(codes, rows)
    train = _train([0xAAAA, 0x5555])
    found = _search(side, train, [base, base], [True, False], radius=2, similar=0.5, per_image=2)
    got = sorted((p["key"], p["test_index"]) for p in found.candidates)
    cosines = [float(rows[i][0][0] @ base) for i in range(n)]
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
    unalike, the usual ones otherwise (alike, or no descriptor); both get the candidate's
    orientation (mirrored, as it is, or None: both tried) and its recorded original size; the
    screen refines with its three scale steps, the pixels with all five."""
    import inspect
    import io
    import tarfile
    import types

    from clipdata.dedup import alignment, verify

    assert inspect.signature(verify.verify).parameters["steps"].default == alignment.FINE_STEPS
    used = []

    pyramids = []

    def fake_verify(test, train, thresholds=verify.THRESHOLDS, pyramid=None, mirrored=None, steps=None,
                    original_size=None):
        used.append((thresholds, mirrored, steps, original_size))
        pyramids.append(pyramid)
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
    for alike, mirrored, expected in ((False, True, [verify.SCREEN_UNALIKE_THRESHOLDS, verify.UNALIKE_THRESHOLDS]),
                                      (True, False, [verify.SCREEN_THRESHOLDS, verify.THRESHOLDS]),
                                      (None, None, [verify.SCREEN_THRESHOLDS, verify.THRESHOLDS])):
        used.clear()
        pyramids.clear()
        candidate = {"key": "k0", "test_index": 0, "distance": 4, "alike": alike, "mirrored": mirrored,
                     "original_size": (300, 200), search.THUMB: None}
        [pair], errors, made = candidates.check_candidates(shard, [candidate], candidates.TestImages(side.refs), True, False)
        assert (errors, made, pair["stage"]) == ([], 1, "pixels")   # screened on its thumbnail, then pixels
        steps = (verify.SCREEN_FINE_STEPS, None)   # the pixels: verify's default, all FINE_STEPS
        # both get the training picture's recorded size (alignment.recorded_box)
        assert used == [(t, mirrored, s, (300, 200)) for t, s in zip(expected, steps)], alike
        # the screen keeps the test image's reductions (of its 192 px form) for its next
        # candidates; the pixels get a pyramid of their own, never that one
        screen_pyramid, pixel_pyramid = pyramids
        assert isinstance(screen_pyramid, dict) and pixel_pyramid == {} and pixel_pyramid is not screen_pyramid
    assert verify.UNALIKE_THRESHOLDS.agree > verify.THRESHOLDS.agree
    assert verify.SCREEN_UNALIKE_THRESHOLDS.agree > verify.SCREEN_THRESHOLDS.agree


def test_a_candidate_carries_the_orientation_its_descriptor_sees():
    """The test image's whole rows, as it is and mirrored, against the training descriptor: the
    clearly nearer one gives the candidate's orientation (verify tries it alone); within
    ORIENTATION_MARGIN of each other (a near-symmetric picture), or without a descriptor, none."""
    as_is, mirrored = _unit(1, 0, 0), _unit(0, 1, 0)
    side = _side([{"image": 0x0F0F, "mirror": 0xF0F0}], [[(as_is, True, 0x0F0F), (mirrored, True, 0xF0F0)]])
    train = _train([0x12345678_00000000, 0x87654321_00000000, 0x11111111_00000000, 0x0F0F])
    found = _search(side, train, [_unit(1, 0.2, 0), _unit(0.3, 1, 0), _unit(1, 1, 0.1), _unit(1, 0, 0)],
                    [True, True, True, False], radius=4, similar=0.7)
    got = {p["key"]: p["mirrored"] for p in found.candidates}
    assert got == {"k0": False, "k1": True, "k2": None, "k3": None}


def test_a_candidate_carries_its_training_pictures_recorded_size():
    """search_shard puts each training image's recorded original size on its candidates (the
    screen and the pixels find the picture's box from it); None where the shard records none."""
    side = _side([{"image": 0x0F0F, "mirror": 0xF0F0}], [[(_unit(1, 0, 0), True, 0x0F0F)]])
    train = _train([0x0F0F, 0x0F0F])
    train.original_sizes = [(300, 200), None]
    found = _search(side, train, [_unit(1, 0, 0), _unit(1, 0, 0)], [True, True], radius=4, similar=0.7)
    assert {p["key"]: p["original_size"] for p in found.candidates} == {"k0": (300, 200), "k1": None}


def test_the_test_side_describes_its_whole_picture_once_and_each_window(model, tmp_path):
    """hash_test_set(describe=True): per image the whole picture's descriptors (as it is,
    mirrored) and one per window view; the views that show the whole picture (WHOLE_VIEWS) are
    not described again, and each window's descriptor is its view_input's."""
    from clipdata.dedup import hashed_test_sets, hashing
    from clipdata.pipeline.foundation import eval_sets

    for n in range(2):
        dedup_scale.picture(10 + n).resize((240, 160)).save(tmp_path / f"{n}.png")
    views = ("image", "mirror", "border", "border_mirror", "crop90", "border_crop80_tl")
    hashed = hashed_test_sets.hash_test_set(eval_sets.load_test_set("t", str(tmp_path)), views=views,
                                            workers=1, describe=True)
    for image, whole, windows in zip(hashed.test_set.images, hashed.descriptors, hashed.view_descriptors):
        picture = hashed_test_sets.decode(image.ref.read())
        assert np.allclose(whole, model.describe_inputs(descriptor.test_inputs(picture)), atol=1e-5)
        assert list(windows) == ["crop90", "border_crop80_tl"]
        made = hashing.view_images(picture, names=list(windows))
        want = model.describe_inputs(np.stack([descriptor.view_input(v) for v in made.values()]))
        assert np.allclose(np.stack(list(windows.values())).astype(np.float32), want, atol=2e-3)   # kept as float16
