import numpy as np
import pyarrow as pa
import xxhash

from clipdata.pipeline.curate import pair_dedup


def test_uid_depends_on_both_url_and_caption():
    a = pair_dedup.pair_uid("http://x/a.jpg", "a dog")
    assert a == pair_dedup.pair_uid("http://x/a.jpg", "a dog")
    assert a != pair_dedup.pair_uid("http://x/a.jpg", "a cat")
    assert a != pair_dedup.pair_uid("http://x/b.jpg", "a dog")
    # The separator keeps the boundary: ("ab", "c") and ("a", "bc") differ.
    assert pair_dedup.pair_uid("ab", "c") != pair_dedup.pair_uid("a", "bc")
    assert len(a) == 32 and int(a, 16) >= 0


def test_uid_is_xxh3_128_of_url_nul_caption():
    assert pair_dedup.pair_uid("http://x/a.jpg", "a dog") == xxhash.xxh3_128_hexdigest(b"http://x/a.jpg\x00a dog")


def test_column_functions_agree_with_the_one_pair_definition():
    urls = pa.array([f"http://x/{i}.jpg" for i in range(50)] + ["http://x/é.jpg", "", "http://x/a.jpg"])
    captions = pa.array([f"caption {i % 7}" for i in range(50)] + ["日本語 caption", "x", "a dog\u0301"])
    expected = [pair_dedup.pair_uid(u, c) for u, c in zip(urls.to_pylist(), captions.to_pylist())]
    high, low = pair_dedup.pair_uid_words(urls, captions)
    assert high.tolist() == [int(u[:16], 16) for u in expected]
    assert low.tolist() == [int(u[16:], 16) for u in expected]
    assert pair_dedup.uid_strings(high, low).to_pylist() == expected
    # Slices read from their own offset.
    high, low = pair_dedup.pair_uid_words(urls.slice(3), captions.slice(3))
    assert pair_dedup.uid_strings(high, low).to_pylist() == expected[3:]
    empty = pair_dedup.pair_uid_words(pa.array([], pa.string()), pa.array([], pa.string()))
    assert len(empty[0]) == len(empty[1]) == 0


def test_first_occurrences_marks_the_first_row_of_each_uid_in_row_order():
    high = np.array([5, 3, 5, 3, 5, 9], dtype=np.uint64)
    low = np.array([1, 1, 1, 2, 2, 0], dtype=np.uint64)
    assert pair_dedup.first_occurrences(high, low).tolist() == [True, True, False, True, True, True]
    assert pair_dedup.first_occurrences(high[:0], low[:0]).tolist() == []


def test_first_occurrences_matches_a_plain_scan_on_random_rows():
    rng = np.random.default_rng(0)
    # Few distinct halves, so rows share a high half with another uid, or a low half.
    high = rng.integers(0, 20, 3000).astype(np.uint64) << np.uint64(60)
    low = rng.integers(0, 20, 3000).astype(np.uint64)
    seen = set()
    expected = []
    for pair in zip(high.tolist(), low.tolist()):
        expected.append(pair not in seen)
        seen.add(pair)
    assert pair_dedup.first_occurrences(high, low).tolist() == expected
