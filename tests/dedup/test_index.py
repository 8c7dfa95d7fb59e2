"""HashIndex: inclusive Hamming radius, equal to the numpy reference; IVF recall; candidate pairs."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from clipdata.dedup import index as ix
from clipdata.dedup.hashing import hamming, to_codes


def random_hashes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(np.uint64).max, n, dtype=np.uint64, endpoint=True)


def flip_bits(hashes: np.ndarray, n_bits: np.ndarray, seed: int) -> np.ndarray:
    """Each hash with n_bits[i] distinct random bits flipped."""
    rng = np.random.default_rng(seed)
    out = hashes.copy()
    for i, k in enumerate(n_bits):
        mask = 0
        for bit in rng.choice(64, int(k), replace=False):
            mask |= 1 << int(bit)
        out[i] ^= np.uint64(mask)
    return out


def near_pairs(seed: int = 0, n_test: int = 2000, n_train: int = 3000):
    """Test hashes, and training hashes of which half are copies of test hashes with 0-16 bits
    flipped: uniform random hashes alone almost never come within 16 bits."""
    test = random_hashes(n_test, seed)
    rng = np.random.default_rng(seed + 1)
    train = random_hashes(n_train, seed + 2)
    src = rng.integers(0, n_test, n_train // 2)
    train[: n_train // 2] = flip_bits(test[src], rng.integers(0, 17, n_train // 2), seed + 3)
    return test, train


@pytest.mark.parametrize("radius", [0, 1, 5, 8, 12, 16])
def test_flat_range_search_equals_brute_force_inclusive(radius):
    test, train = near_pairs()
    got = ix.HashIndex(test).range_search(train, radius)
    ref = ix.brute_force_pairs(test, train, radius)
    for g, r in zip(got, ref):
        assert np.array_equal(g, r)
    assert len(ref.query) > 0
    assert ref.distance.max(initial=0) <= radius
    assert np.array_equal(ref.distance, hamming(train[ref.query], test[ref.index]))
    # inclusive: every pair at exactly `radius` is there
    exact = int((hamming(train[:, None], test[None, :]) == radius).sum())
    assert int((got.distance == radius).sum()) == exact


def test_range_search_takes_codes_and_batches():
    test, train = near_pairs(seed=4)
    a = ix.HashIndex(to_codes(test)).range_search(to_codes(train), 10, batch_size=257)
    b = ix.brute_force_pairs(to_codes(test), to_codes(train), 10)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_radius_64_finds_every_pair_and_bad_radii_fail():
    test, train = random_hashes(30, 1), random_hashes(20, 2)
    assert len(ix.HashIndex(test).range_search(train, 64).query) == 600
    with pytest.raises(ValueError):
        ix.HashIndex(test).range_search(train, 65)
    with pytest.raises(ValueError):
        ix.HashIndex(test).range_search(train, -1)


def test_empty_sides():
    empty = np.zeros(0, np.uint64)
    assert len(ix.HashIndex(empty).range_search(random_hashes(5, 0), 10).query) == 0
    assert len(ix.HashIndex(random_hashes(5, 0)).range_search(empty, 10).query) == 0
    d, i = ix.HashIndex(empty).knn(random_hashes(2, 0), 3)
    assert (i == -1).all() and (d == 65).all()


def test_knn_nearest_first():
    test, train = near_pairs(seed=5, n_test=500, n_train=100)
    d, i = ix.HashIndex(test).knn(train, 3)
    full = hamming(train[:, None], test[None, :])
    assert np.array_equal(d[:, 0], full.min(axis=1))
    assert (np.diff(d, axis=1) >= 0).all()
    assert np.array_equal(np.take_along_axis(full, i, axis=1), d)


def test_ivf_recall_against_exact():
    """IVF visits nprobe of nlist clusters; on copies 0-12 bits away its recall at the default
    nprobe (nlist / 8) measured 0.87-0.93 over seeds for uniform random hashes (the hardest case:
    no cluster structure), and nprobe = nlist is exact."""
    test, train = near_pairs(seed=6, n_test=20_000, n_train=4000)
    exact = ix.HashIndex(test).range_search(train, 12)
    ivf = ix.HashIndex(test, kind="ivf")
    assert ivf.nlist == ix.default_nlist(20_000) and ivf.nprobe == ivf.nlist // 8
    approx = ivf.range_search(train, 12)
    exact_pairs = set(zip(exact.query.tolist(), exact.index.tolist()))
    approx_pairs = set(zip(approx.query.tolist(), approx.index.tolist()))
    assert approx_pairs <= exact_pairs  # approximate never invents pairs
    recall = len(approx_pairs) / len(exact_pairs)
    assert recall >= 0.80, recall
    full = ix.HashIndex(test, kind="ivf", nprobe=ivf.nlist).range_search(train, 12)
    assert set(zip(full.query.tolist(), full.index.tolist())) == exact_pairs


def test_ivf_needs_enough_hashes():
    with pytest.raises(ValueError, match="kind='flat'"):
        ix.HashIndex(random_hashes(10, 0), kind="ivf", nlist=100)
    with pytest.raises(ValueError, match="kind"):
        ix.HashIndex(random_hashes(10, 0), kind="hnsw")


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_pickles(kind):
    test, train = near_pairs(seed=7, n_test=5000, n_train=500)
    index = ix.HashIndex(test, kind=kind, nprobe=7 if kind == "ivf" else None)
    again = pickle.loads(pickle.dumps(index))
    assert repr(again) == repr(index)
    a, b = index.range_search(train, 10), again.range_search(train, 10)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_candidate_pairs_one_row_per_image_pair_at_min_distance():
    # three test images with 2, 3 and 1 views; view hashes are built around two training hashes
    train = random_hashes(4, 10)
    t0, t1 = int(train[0]), int(train[1])
    per_image = [
        {"image": t0 ^ 0b111, "mirror": t0 ^ 0b1},          # image 0: 3 and 1 bits from train 0
        {"image": t1 ^ 0b11, "mirror": t1 ^ 0b11 << 8, "crop90": t0 ^ 0xF},  # 2, 2 from t1; 4 from t0
        {"image": int(random_hashes(1, 11)[0])},             # image 2: nothing near
    ]
    stacked = ix.stack_views(per_image)
    assert stacked.names == ("image", "mirror", "crop90")
    index = ix.HashIndex(stacked.hashes)
    pairs = ix.candidate_pairs(index, stacked.owner, train, 8, view_index=stacked.view)
    got = list(zip(pairs.test.tolist(), pairs.train.tolist(), [stacked.names[v] for v in pairs.view],
                   pairs.distance.tolist()))
    assert got == [(0, 0, "mirror", 1), (1, 0, "crop90", 4), (1, 1, "image", 2)]
    # without view_index, a view's rank among its image's views
    ranked = ix.candidate_pairs(index, stacked.owner, train, 8)
    assert ranked.view.tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match="view_owner"):
        ix.candidate_pairs(index, stacked.owner[:-1], train, 8)


def test_candidate_pairs_with_several_training_views_keeps_the_nearest():
    """Training images with two hashes each (pHash, centre view): one row per (test, training
    image), at the nearer of the training views, which it names."""
    train = random_hashes(3, 12)
    centre = random_hashes(3, 13)
    test = np.array([int(train[0]) ^ 0b1111, int(centre[0]) ^ 0b1,     # image 0: 4 from t0, 1 from c0
                     int(centre[2]) ^ 0b111], dtype=np.uint64)           # image 1: 3 from c2 only
    owner = np.array([0, 0, 1])
    index = ix.HashIndex(test)
    codes = np.concatenate([train, centre])
    pairs = ix.candidate_pairs(index, owner, codes, 8, train_owner=np.tile(np.arange(3), 2),
                               train_view=np.repeat([0, 1], 3))
    got = list(zip(pairs.test.tolist(), pairs.train.tolist(), pairs.train_view.tolist(), pairs.distance.tolist()))
    assert got == [(0, 0, 1, 1), (1, 2, 1, 3)]
    # the image view alone finds only image 0, at 4 bits
    alone = ix.candidate_pairs(index, owner, train, 8)
    assert list(zip(alone.test.tolist(), alone.distance.tolist())) == [(0, 4)] and alone.train_view is None
    with pytest.raises(ValueError, match="train_owner"):
        ix.candidate_pairs(index, owner, codes, 8, train_owner=np.arange(2))


def test_candidate_pairs_agrees_with_brute_force_on_random_views():
    rng = np.random.default_rng(3)
    test, train = near_pairs(seed=8, n_test=600, n_train=2000)
    owner = rng.integers(0, 150, len(test))  # 600 views of 150 test images, in no order
    pairs = ix.candidate_pairs(ix.HashIndex(test), owner, train, 9)
    d = hamming(train[:, None], test[None, :])
    expected = {}
    for q, i in zip(*np.nonzero(d <= 9)):
        key = (int(owner[i]), int(q))
        expected[key] = min(expected.get(key, 99), int(d[q, i]))
    got = {(t, q): dist for t, q, dist in zip(pairs.test.tolist(), pairs.train.tolist(), pairs.distance.tolist())}
    assert got == expected


def test_stack_views_drops_repeated_hashes_of_one_image():
    stacked = ix.stack_views([{"image": 5, "border": 5, "mirror": 6}, {"image": 5}])
    assert stacked.hashes.tolist() == [5, 6, 5]
    assert stacked.owner.tolist() == [0, 0, 1]
    assert [stacked.names[v] for v in stacked.view] == ["image", "mirror", "image"]
    assert len(ix.stack_views([{"image": 5, "border": 5}], drop_repeats=False).hashes) == 2
