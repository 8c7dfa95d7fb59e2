import numpy as np
import pytest

from clipdata.pipeline.foundation import balance


def make_pool(counts, seed=1):
    """A pool where pair i matches exactly one entry: entry e is matched by counts[e] pairs."""
    entry_ids = np.repeat(np.arange(len(counts)), counts)
    offsets = np.arange(len(entry_ids) + 1)
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, size=len(entry_ids), dtype=np.uint64)
    return hashes, offsets, entry_ids


def test_kept_per_entry_is_min_count_t_within_binomial_bounds():
    counts = np.array([5, 50, 200, 1000, 5000, 20000])
    t = 200
    hashes, offsets, entry_ids = make_pool(counts)
    pool_counts = np.bincount(entry_ids, minlength=len(counts))
    assert pool_counts.tolist() == counts.tolist()
    keep = balance.keep_mask(hashes, offsets, entry_ids, pool_counts, max_per_entry=t, seed=0)
    kept = np.bincount(entry_ids[keep], minlength=len(counts))
    for entry, (count, n_kept) in enumerate(zip(counts, kept)):
        if count <= t:
            assert n_kept == count, entry  # every pair of a tail entry is kept
        else:
            p = t / count
            sd = np.sqrt(count * p * (1 - p))
            assert abs(n_kept - t) <= 5 * sd, (entry, n_kept)


def test_draw_is_deterministic_and_seed_dependent():
    hashes, offsets, entry_ids = make_pool(np.array([3000, 3000]))
    counts = np.bincount(entry_ids, minlength=2)
    first = balance.keep_mask(hashes, offsets, entry_ids, counts, max_per_entry=100, seed=7)
    again = balance.keep_mask(hashes, offsets, entry_ids, counts, max_per_entry=100, seed=7)
    other = balance.keep_mask(hashes, offsets, entry_ids, counts, max_per_entry=100, seed=8)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    # A pair's fate does not depend on which batch it arrives in.
    half = len(hashes) // 2
    split = np.concatenate([
        balance.keep_mask(hashes[:half], offsets[: half + 1], entry_ids[:half], counts, 100, 7),
        balance.keep_mask(hashes[half:], offsets[half:] - offsets[half], entry_ids[half:], counts, 100, 7),
    ])
    assert np.array_equal(first, split)


def test_multi_entry_pairs_use_one_minus_product_rule():
    # Every pair matches entries 0 and 1, each with count 4000 and t = 1000:
    # keep probability 1 - (1 - 1/4) ** 2 = 7/16.
    n = 4000
    entry_ids = np.tile([0, 1], n)
    offsets = np.arange(0, 2 * n + 1, 2)
    hashes = np.random.default_rng(3).integers(0, 2**63, size=n, dtype=np.uint64)
    counts = np.bincount(entry_ids, minlength=2)
    kept = balance.keep_mask(hashes, offsets, entry_ids, counts, max_per_entry=1000, seed=0).sum()
    p = 7 / 16
    assert abs(kept - n * p) <= 5 * np.sqrt(n * p * (1 - p))


def test_pairs_without_matches_are_never_kept():
    offsets = np.array([0, 0, 1, 1, 2])
    entry_ids = np.array([0, 0])
    keep = balance.keep_mask(np.arange(4, dtype=np.uint64), offsets, entry_ids, np.array([2]), 10, 0)
    assert keep.tolist() == [False, True, False, True]
    assert balance.keep_mask(np.arange(2, dtype=np.uint64), np.array([0, 0, 0]), np.array([], dtype=int),
                             np.array([0]), 10, 0).tolist() == [False, False]


def test_draws_are_uniform():
    hashes, offsets, entry_ids = make_pool(np.array([100000]))
    u = balance.draws(0, hashes, offsets, entry_ids)
    assert 0 <= u.min() and u.max() < 1
    histogram = np.histogram(u, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(histogram - 10000) < 5 * np.sqrt(10000))


def test_keep_mask_is_the_draw_rule_on_every_match():
    """Tail entries skip the draw (it always falls under 1); the result is the plain rule's."""
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 4, 3000)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    entry_ids = rng.integers(0, 40, offsets[-1])
    hashes = rng.integers(0, 2**63, size=3000, dtype=np.uint64)
    counts = rng.integers(0, 400, 40)
    hit = balance.draws(5, hashes, offsets, entry_ids) < balance.keep_probability(counts, 100)[entry_ids]
    plain = np.array([hit[a:b].any() for a, b in zip(offsets[:-1], offsets[1:])])
    assert np.array_equal(balance.keep_mask(hashes, offsets, entry_ids, counts, 100, 5), plain)


# ---------------------------------------------------------------------------------------------
# Worldwide: one t per language


def metaclip2_t_to_p(counts, t):       # MetaCLIP 2's curate.py, written out for the comparison
    return float(counts[counts < t].sum() / counts.sum())


def metaclip2_p_to_t(counts, p):
    counts = np.sort(counts)
    portion = np.cumsum(counts) / counts.sum()
    return counts[np.abs(portion - p).argmin()]


def test_tail_share_and_its_inverse_match_metaclip2_on_zipf_counts():
    rng = np.random.default_rng(0)
    for _ in range(20):
        counts = rng.zipf(1.3, size=5000).astype(np.int64)
        t = int(rng.integers(5, 500))
        p = balance.tail_share(counts, t)
        assert p == pytest.approx(metaclip2_t_to_p(counts, t))
        assert balance.threshold_for_share(counts, p) == metaclip2_p_to_t(counts, p)   # no zeros here


def test_a_language_gets_the_t_leaving_the_same_tail_share():
    en = np.array([1] * 100 + [10] * 50 + [1000] * 5)            # total 5,600; below t=100: 600
    de = np.array([1] * 10 + [5] * 10 + [50] * 4 + [500] * 1)    # total 760
    thresholds = balance.language_thresholds({"en": en, "de": de}, t=100)
    assert thresholds["en"] == 100
    assert balance.tail_share(en, 100) == pytest.approx(600 / 5600)
    # de's running shares, ascending: ... 60/760 = 0.079 at the last 5, 110/760 = 0.145 at the
    # first 50; 0.107 is nearer 0.079: t_de = 5
    assert thresholds["de"] == 5


def test_a_small_language_is_never_given_t_zero():
    # MetaCLIP 2's p_to_t over the raw array picks an unmatched entry's 0 here, dropping the language
    en = np.array([1] * 1000 + [100_000])
    small = np.array([0] * 500 + [40, 60])
    assert metaclip2_p_to_t(small, balance.tail_share(en, 20_000)) == 0
    assert balance.language_thresholds({"en": en, "xx": small}, t=20_000)["xx"] >= 1


def test_without_english_every_language_keeps_t():
    assert balance.language_thresholds({"de": np.array([5, 7]), "fr": np.array([1])}, t=9) == {"de": 9, "fr": 9}
    assert balance.language_thresholds({"en": np.zeros(3), "de": np.array([5])}, t=9) == {"en": 9, "de": 9}


def test_keep_mask_takes_one_t_per_entry():
    # entry 0 (t 10, 100 matches) keeps 10%; entry 1 (t 1000) keeps all: a per-entry t array
    counts = np.array([100, 100])
    t = np.array([10, 1000])
    n = 20_000
    hashes = np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    offsets = np.arange(n + 1)
    kept0 = balance.keep_mask(hashes, offsets, np.zeros(n, np.int64), counts, t).mean()
    kept1 = balance.keep_mask(hashes, offsets, np.ones(n, np.int64), counts, t).mean()
    assert abs(kept0 - 0.1) < 0.01 and kept1 == 1.0


def test_thresholds_per_entry_and_the_ranges_of_a_language_column():
    counts = np.array([400, 20, 200, 40])
    ranges = balance.language_ranges(["en", "en", "de", "de"])
    assert ranges == [("en", 0, 2), ("de", 2, 4)]
    per_entry, thresholds = balance.thresholds_per_entry(counts, 100, ranges)
    assert thresholds == {"en": 100, "de": 40} and per_entry.tolist() == [100, 100, 40, 40]
    assert balance.thresholds_per_entry(counts, 100, None) == (100, {"all": 100})
    assert balance.language_ranges([]) == []
