import numpy as np

from clipdata.pipeline import pair_dedup


def test_uid_depends_on_both_url_and_caption():
    a = pair_dedup.pair_uid("http://x/a.jpg", "a dog")
    assert a == pair_dedup.pair_uid("http://x/a.jpg", "a dog")
    assert a != pair_dedup.pair_uid("http://x/a.jpg", "a cat")
    assert a != pair_dedup.pair_uid("http://x/b.jpg", "a dog")
    # The separator keeps the boundary: ("ab", "c") and ("a", "bc") differ.
    assert pair_dedup.pair_uid("ab", "c") != pair_dedup.pair_uid("a", "bc")
    assert len(a) == 32 and pair_dedup.uid_hash(a) == int(a[:16], 16)


def test_first_copy_by_source_order_whatever_the_arrival_order():
    u1, u2, u3 = (pair_dedup.pair_uid(f"http://x/{i}.jpg", "c") for i in (1, 2, 3))
    uids = [u2, u1, u2, u1, u3]
    files = ["b.parquet", "a.parquet", "a.parquet", "a.parquet", "a.parquet"]
    rows = np.array([0, 9, 5, 2, 0])
    keep = pair_dedup.first_copies(uids, files, rows)
    assert keep.tolist() == [False, False, True, True, True]
    order = [4, 3, 2, 1, 0]
    shuffled = pair_dedup.first_copies([uids[i] for i in order], [files[i] for i in order], rows[order])
    assert shuffled.tolist() == keep[order].tolist()


def test_first_copies_matches_a_plain_sort_on_random_rows():
    rng = np.random.default_rng(0)
    uids = [pair_dedup.pair_uid(f"u{i}", "c") for i in rng.integers(0, 300, 2000)]
    files = [f"f{i}.parquet" for i in rng.integers(0, 12, 2000)]
    rows = rng.integers(0, 50, 2000)
    expected = np.zeros(2000, dtype=bool)
    seen = set()
    for i in sorted(range(2000), key=lambda i: (uids[i], files[i], rows[i], i)):
        if uids[i] not in seen:
            seen.add(uids[i])
            expected[i] = True
    keep = pair_dedup.first_copies(uids, files, rows)
    # Ties on (uid, file, row) are the same source row seen twice: either copy is the first.
    assert keep.sum() == expected.sum() == len(set(uids))
    kept = {(uids[i], files[i], rows[i]) for i in np.flatnonzero(keep)}
    assert kept == {(uids[i], files[i], rows[i]) for i in np.flatnonzero(expected)}


def test_column_functions_agree_with_the_one_pair_definitions():
    import pyarrow as pa

    urls = ["http://x/a.jpg", "http://x/é.jpg", "", "http://x/a.jpg"]
    captions = ["a dog", "日本語 caption", "x", "a dog\u0301"]
    uids = pair_dedup.pair_uids(pa.array(urls), pa.array(captions))
    assert uids.to_pylist() == [pair_dedup.pair_uid(u, c) for u, c in zip(urls, captions)]
    high, low = pair_dedup.uid_words(uids.slice(1))  # a slice reads from its own offset
    assert high.tolist() == [int(u[:16], 16) for u in uids.to_pylist()[1:]]
    assert low.tolist() == [int(u[16:], 16) for u in uids.to_pylist()[1:]]
    assert [uids[int(i)].as_py() for i in pair_dedup.uid_order(uids)] == sorted(uids.to_pylist())


def test_first_copies_by_uid_are_the_kept_rows_in_uid_order():
    rng = np.random.default_rng(1)
    uids = [pair_dedup.pair_uid(f"u{i}", "c") for i in rng.integers(0, 50, 400)]
    files = [f"f{i}.parquet" for i in rng.integers(0, 3, 400)]
    rows = rng.integers(0, 1000, 400)
    firsts = pair_dedup.first_copies_by_uid(uids, files, rows)
    assert sorted(firsts.tolist()) == np.flatnonzero(pair_dedup.first_copies(uids, files, rows)).tolist()
    assert [uids[i] for i in firsts] == sorted(set(uids))


def test_uid_is_xxh3_128_of_url_nul_caption_and_words_round_trip():
    import pyarrow as pa
    import xxhash

    assert pair_dedup.pair_uid("http://x/a.jpg", "a dog") == xxhash.xxh3_128_hexdigest(b"http://x/a.jpg\x00a dog")
    urls = pa.array([f"http://x/{i}.jpg" for i in range(50)] + ["http://x/é.jpg"])
    captions = pa.array([f"caption {i % 7}" for i in range(50)] + ["日本語"])
    high, low = pair_dedup.pair_uid_words(urls.slice(3), captions.slice(3))  # slices read from their offset
    assert pair_dedup.uid_strings(high, low).to_pylist() == [
        pair_dedup.pair_uid(u, c) for u, c in zip(urls.to_pylist()[3:], captions.to_pylist()[3:])]
    parsed = pair_dedup.uid_words(pair_dedup.uid_strings(high, low))
    assert parsed[0].tolist() == high.tolist() and parsed[1].tolist() == low.tolist()
    empty = pair_dedup.pair_uid_words(pa.array([], pa.string()), pa.array([], pa.string()))
    assert len(empty[0]) == len(empty[1]) == 0


def test_first_occurrences_marks_the_first_row_of_each_uid_in_row_order():
    high = np.array([5, 3, 5, 3, 5, 9], dtype=np.uint64)
    low = np.array([1, 1, 1, 2, 2, 0], dtype=np.uint64)
    assert pair_dedup.first_occurrences(high, low).tolist() == [True, True, False, True, True, True]
    assert pair_dedup.first_occurrences(high[:0], low[:0]).tolist() == []
