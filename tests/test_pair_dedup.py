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
    uids = ["u2", "u1", "u2", "u1", "u3"]
    files = ["b.parquet", "a.parquet", "a.parquet", "a.parquet", "a.parquet"]
    rows = np.array([0, 9, 5, 2, 0])
    keep = pair_dedup.first_copies(uids, files, rows)
    assert keep.tolist() == [False, False, True, True, True]
    order = [4, 3, 2, 1, 0]
    shuffled = pair_dedup.first_copies([uids[i] for i in order], [files[i] for i in order], rows[order])
    assert shuffled.tolist() == keep[order].tolist()
