"""`clipdata curate` end to end on small pools written in every input format."""
import gzip
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from wat_files import RECORDS, write_wat

from clipdata.pipeline import cli
from clipdata.pipeline.curate import job as curate, rows as curate_rows

ENTRIES = ["dog", "red", "cat", "big dog", "the", "bus", "Blue sky"]

# (url, caption, what happens to the row)
ROWS = [
    ("http://a.example/1.jpg", "a red dog", "kept"),  # red, dog
    ("http://a.example/2.jpg", "the cat.", "kept"),  # the, cat
    ("http://a.example/3.jpg", "A big dog!", "kept"),  # big dog, dog
    ("http://a.example/1.jpg", "a red dog", "duplicate"),
    ("ftp://a.example/5.jpg", "red", "bad-url"),
    ("http://a.example/6.jpg", "   ", "empty-caption"),
    ("http://a.example/7.jpg", "hotdog stand", "no-match"),
    ("http://a.example/8.jpg", "dog " * 300, "caption-too-long"),
    ("http://a.example/9.jpg", "caf\u00c3\u00a9 for the dog", "kept"),  # mojibake fixed by ftfy
]


def write_pool(path, rows=ROWS):
    urls = [r[0] for r in rows]
    captions = [r[1] for r in rows]
    table = pa.table({"url": urls, "caption": captions})
    if path.endswith(".parquet"):
        pq.write_table(table, path)
    elif ".csv" in path or ".tsv" in path:
        delimiter = "\t" if ".tsv" in path else ","
        plain = path[:-3] if path.endswith(".gz") else path
        pacsv.write_csv(table, plain, pacsv.WriteOptions(delimiter=delimiter, quoting_style="all_valid"))
        if path.endswith(".gz"):
            with open(plain, "rb") as src, gzip.open(path, "wb") as dst:
                dst.write(src.read())
            os.remove(plain)
    else:
        lines = "".join(json.dumps({"url": u, "caption": c}) + "\n" for u, c in zip(urls, captions))
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "wt") as out:
            out.write(lines)


def write_queries(folder, entries=ENTRIES):
    path = os.path.join(folder, "queries.txt")
    with open(path, "w") as out:
        out.write("\n".join(entries) + "\n")
    return path


def run(folder, pool, *extra, entries=ENTRIES):
    queries = write_queries(folder, entries)
    output = os.path.join(folder, "out")
    assert cli.main(["curate", "--pool", pool, "--queries", queries, "--output", output, *extra]) == 0
    stats = json.load(open(os.path.join(output, "curate_stats.json")))
    return output, stats


def dropped_reasons(output):
    table = pq.read_table(os.path.join(output, "dropped"))
    return sorted(zip(table.column("source_row").to_pylist(), table.column("reason").to_pylist()))


@pytest.mark.parametrize("name", ["pool.parquet", "pool.csv", "pool.tsv", "pool.jsonl", "pool.jsonl.gz", "pool.csv.gz"])
def test_every_table_format_gives_the_same_curated_pairs(tmp_path, name):
    write_pool(str(tmp_path / name))
    output, stats = run(str(tmp_path), str(tmp_path / name))

    curated = curate.read_curated(output)
    got = sorted(zip(curated.column("caption").to_pylist(), curated.column("entry_ids").to_pylist(),
                     curated.column("source_row").to_pylist()))
    assert got == [("A big dog!", [0, 3], 2), ("a red dog", [0, 1], 0), ("café for the dog", [0, 4], 8),
                   ("the cat.", [2, 4], 1)]
    assert set(curated.column("source_file").to_pylist()) == {str(tmp_path / name)}
    assert dropped_reasons(output) == [(i, what) for i, (_, _, what) in enumerate(ROWS) if what != "kept"]
    assert stats["rows_read"] == len(ROWS)
    assert stats["rows_kept"] == 4
    assert stats["dropped"] == {"bad-url": 1, "caption-too-long": 1, "duplicate": 1, "empty-caption": 1, "no-match": 1}
    assert stats["entries_matched"] == 5

    counts = pq.read_table(os.path.join(output, "entry_counts.parquet")).to_pydict()
    assert counts["entry"] == ENTRIES
    assert counts["matched"] == [3, 1, 1, 1, 2, 0, 0]
    assert counts["kept"] == counts["matched"]


def test_wat_pool(tmp_path):
    wat = tmp_path / "CC-MAIN-x.warc.wat.gz"
    write_wat(wat, RECORDS)
    output, stats = run(str(tmp_path), str(wat))
    curated = curate.read_curated(output)
    pairs = sorted(zip(curated.column("url").to_pylist(), curated.column("caption").to_pylist(),
                       curated.column("page_url").to_pylist()))
    assert ("http://example.com/img/a.jpg", "A red bus", "http://example.com/dir/page.html") in pairs
    assert ("http://example.com/b.png", "Blue sky", "http://example.com/dir/page.html") in pairs
    assert stats["wat_links_skipped"]["missing-alt"] >= 2
    assert stats["rows_read"] == stats["rows_kept"] + sum(stats["dropped"].values())


def test_balancing_caps_head_entries_and_is_deterministic(tmp_path):
    n = 3000
    rows = [(f"http://b.example/{i}.jpg", f"the photo number{i}", "") for i in range(n)]
    rows += [(f"http://b.example/r{i}.jpg", f"a rare{i % 7} thing", "") for i in range(40)]
    entries = ["the", *[f"rare{i}" for i in range(7)]]
    write_pool(str(tmp_path / "pool.parquet"), rows)
    output, stats = run(str(tmp_path), str(tmp_path / "pool.parquet"), "--max-per-entry", "100", entries=entries)
    counts = pq.read_table(os.path.join(output, "entry_counts.parquet")).to_pydict()
    assert counts["matched"] == [n] + [6, 6, 6, 6, 6, 5, 5]
    assert counts["kept"][1:] == counts["matched"][1:]  # tail entries keep everything
    p = 100 / n
    assert abs(counts["kept"][0] - 100) <= 5 * np.sqrt(n * p * (1 - p))
    assert stats["dropped"]["balanced-out"] == n - counts["kept"][0]

    def curated_bytes(out):
        folder = os.path.join(out, "curated")
        return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))}

    first = curated_bytes(output)
    output_again, _ = run(str(tmp_path), str(tmp_path / "pool.parquet"), "--max-per-entry", "100", entries=entries)
    assert curated_bytes(output_again) == first
    output_seed, _ = run(str(tmp_path), str(tmp_path / "pool.parquet"), "--max-per-entry", "100", "--seed", "1",
                         entries=entries)
    assert curated_bytes(output_seed) != first


def test_unreadable_file_is_named_and_other_files_still_count(tmp_path):
    folder = tmp_path / "pool"
    folder.mkdir()
    write_pool(str(folder / "good.parquet"))
    (folder / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    output, stats = run(str(tmp_path), str(folder))
    assert stats["rows_kept"] == 4
    assert [e["file"] for e in stats["files_unreadable"]] == [str(folder / "bad.parquet")]


def test_wrong_column_name_fails_before_the_job_with_what_to_do(tmp_path, capsys):
    write_pool(str(tmp_path / "pool.parquet"))
    queries = write_queries(str(tmp_path))
    code = cli.main(["curate", "--pool", str(tmp_path / "pool.parquet"), "--queries", queries,
                     "--output", str(tmp_path / "out"), "--caption-col", "TEXT"])
    assert code == 2
    err = capsys.readouterr().err
    assert "TEXT" in err and "--caption-col" in err


def test_lowercase_option(tmp_path):
    write_pool(str(tmp_path / "pool.parquet"), [("http://c.example/1.jpg", "The Red DOG", "")])
    output, stats = run(str(tmp_path), str(tmp_path / "pool.parquet"), "--lowercase")
    assert curate.read_curated(output).column("entry_ids").to_pylist() == [[0, 1, 4]]
    output, stats = run(str(tmp_path), str(tmp_path / "pool.parquet"))
    assert stats["rows_kept"] == 0 and stats["dropped"] == {"no-match": 1}


def test_cached_matcher_and_parquet_pieces_give_the_same_result(tmp_path):
    rows = [(f"http://d.example/{i}.jpg", ["the red dog", "a cat", "blue"][i % 3] + f" {i}", "") for i in range(300)]
    rows += rows[:20]  # copies, some in another piece
    pq.write_table(pa.table({"url": [r[0] for r in rows], "caption": [r[1] for r in rows]}),
                   str(tmp_path / "one.parquet"))
    pq.write_table(pa.table({"url": [r[0] for r in rows], "caption": [r[1] for r in rows]}),
                   str(tmp_path / "groups.parquet"), row_group_size=40)
    cache = str(tmp_path / "cache")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one, stats_one = run(str(tmp_path / "a"), str(tmp_path / "one.parquet"), "--max-per-entry", "50",
                         "--matcher-cache", cache)
    assert len(os.listdir(os.path.join(cache, "matchers"))) == 1
    # Rerun: the matcher comes from the cache; the pool's 8 row groups are read as 8 pieces.
    config = curate.CurateConfig(pool=[str(tmp_path / "groups.parquet")], queries=str(tmp_path / "a" / "queries.txt"),
                                 output=str(tmp_path / "b"), max_per_entry=50, batch_rows=40, matcher_cache=cache)
    assert len(curate.pool.pool_pieces(config.pool[0], config.batch_rows)) == 8
    with pytest.MonkeyPatch.context() as monkey:
        monkey.setattr("clipdata.pipeline.curate.match.Matcher.__init__",
                       lambda *a, **k: pytest.fail("matcher rebuilt"))
        stats_groups = curate.run_curate(config)
    assert stats_groups["dropped"] == stats_one["dropped"] and stats_one["dropped"]["duplicate"] > 0
    strip = lambda t: t.drop_columns(["source_file"]).to_pylist()  # noqa: E731
    assert strip(curate.read_curated(str(tmp_path / "b"))) == strip(curate.read_curated(one))
    assert not [f for f in os.listdir(tmp_path / "b") if f.startswith("_")]


def test_a_cached_matcher_an_older_version_wrote_is_rebuilt_not_a_crash(tmp_path, capsys):
    """A cache outlives an upgrade: a pickle naming a module that moved (clipdata.pipeline.match
    before the layout of #15) or cut short is rebuilt in place, with a line saying so."""
    import pickle

    from clipdata.pipeline.curate import match

    write_pool(str(tmp_path / "pool.parquet"))
    cache = str(tmp_path / "cache")
    output, stats = run(str(tmp_path), str(tmp_path / "pool.parquet"), "--matcher-cache", cache)
    (cached,) = os.listdir(os.path.join(cache, "matchers"))
    path = os.path.join(cache, "matchers", cached)
    stale = pickle.dumps(1).replace(b"K\x01", b"cclipdata.pipeline.match\nMatcher\n")  # GLOBAL of a gone module
    for bad in (stale, open(path, "rb").read()[:100]):
        with open(path, "wb") as handle:
            handle.write(bad)
        capsys.readouterr()
        again, stats_again = run(str(tmp_path), str(tmp_path / "pool.parquet"), "--matcher-cache", cache)
        assert "rebuilding the cached matcher" in capsys.readouterr().err
        assert stats_again["rows_kept"] == stats["rows_kept"] > 0
        with open(path, "rb") as handle:
            assert match.read_matcher_file(handle)[0].n_entries == len(ENTRIES)


def test_worker_threads_of_one_process_share_one_matcher(tmp_path, monkeypatch):
    """Each worker thread has its own MatchPieceFn; the matcher file is loaded once per process."""
    from clipdata.pipeline.curate import match

    loads = []
    real_read = match.read_matcher_file
    monkeypatch.setattr(match, "read_matcher_file", lambda handle: loads.append(1) or real_read(handle))
    rows = [(f"http://d.example/{i}.jpg", ["the red dog", "a cat", "blue"][i % 3] + f" {i}") for i in range(400)]
    pq.write_table(pa.table({"url": [u for u, _ in rows], "caption": [c for _, c in rows]}),
                   str(tmp_path / "pool.parquet"), row_group_size=25)
    config = curate.CurateConfig(pool=[str(tmp_path / "pool.parquet")], queries=write_queries(str(tmp_path)),
                                 output=str(tmp_path / "out"), batch_rows=25)
    stats = curate.run_curate(config, ["--direct_num_workers", "2", "--direct_running_mode", "multi_threading"])
    assert stats["rows_read"] == 400 and stats["rows_kept"] == 267  # "blue" alone is no entry
    assert len(loads) == 1


def test_a_failed_rerun_leaves_no_summary_of_the_run_before(tmp_path, monkeypatch):
    """`clipdata build` resumes by curate_stats.json: a run that fails after emptying curated/
    must not leave the previous run's summary saying curate is done."""
    write_pool(str(tmp_path / "pool.parquet"))
    output, _ = run(str(tmp_path), str(tmp_path / "pool.parquet"))

    def broken(*args, **kwargs):
        raise curate.CurateError("rows went missing")

    monkeypatch.setattr(curate, "finish", broken)
    queries = os.path.join(str(tmp_path), "queries.txt")
    assert cli.main(["curate", "--pool", str(tmp_path / "pool.parquet"), "--queries", queries,
                     "--output", output]) != 0
    assert not os.path.exists(os.path.join(output, "curate_stats.json"))
    assert not os.path.exists(os.path.join(output, "entry_counts.parquet"))


# ---------------------------------------------------------------------------------------------
# The steps as plain functions, without Beam.


def work_rows(pairs, rows):
    """A table in curate_rows.WORK_COLUMNS of (url, caption) pairs matched with entry ids [0]."""
    from clipdata.pipeline.curate import pair_dedup

    urls, captions = pa.array([u for u, _ in pairs]), pa.array([c for _, c in pairs])
    high, low = pair_dedup.pair_uid_words(urls, captions)
    return pa.table({"url": urls, "caption": captions, "source_row": pa.array(rows, pa.int64()),
                     "page_url": pa.nulls(len(pairs), pa.string()), "uid_high": high, "uid_low": low,
                     "entry_ids": pa.array([[0]] * len(pairs), pa.list_(pa.int32()))})


def test_match_rows_splits_a_batch_into_matched_pairs_and_reasoned_drops():
    from clipdata.pipeline.curate import match
    from clipdata.pipeline.foundation import pool

    batch = pool.pool_batch([r[0] for r in ROWS], [r[1] for r in ROWS], "p.parquet", np.arange(len(ROWS)))
    matched, dropped = curate_rows.match_rows(batch, match.Matcher(ENTRIES), 1000, curate.fast_path_patterns(None))
    assert matched.column_names == curate_rows.WORK_COLUMNS
    assert matched.column("source_row").to_pylist() == [0, 1, 2, 3, 8]  # the copy is still there
    assert matched.column("entry_ids").to_pylist()[2] == [0, 3]
    assert sorted(zip(dropped.column("source_row").to_pylist(), dropped.column("reason").to_pylist())) == [
        (4, "bad-url"), (5, "empty-caption"), (6, "no-match"), (7, "caption-too-long")]


def test_keep_first_copies_keeps_the_first_by_file_then_row_whatever_the_piece_order():
    pairs = [("http://x/1.jpg", "a dog"), ("http://x/2.jpg", "a cat"), ("http://x/1.jpg", "a dog")]
    early = work_rows(pairs, [0, 1, 2])                      # in a.parquet: row 2 copies row 0
    late = work_rows([pairs[1], ("http://x/3.jpg", "a bus")], [0, 1])  # in b.parquet: row 0 copies a:1
    for tables, files in (([early, late], ["a.parquet", "b.parquet"]), ([late, early], ["b.parquet", "a.parquet"])):
        rows = curate_rows.partition_rows(tables, files)
        assert list(zip(rows.column("source_file").cast(pa.string()).to_pylist(), rows.column("source_row").to_pylist())) \
            == [("a.parquet", 0), ("a.parquet", 1), ("a.parquet", 2), ("b.parquet", 0), ("b.parquet", 1)]
        first, duplicates = curate_rows.keep_first_copies(rows)
        assert first.tolist() == [True, True, False, False, True]
        assert sorted(zip(duplicates.column("source_file").to_pylist(), duplicates.column("source_row").to_pylist(),
                          duplicates.column("reason").to_pylist())) == [
            ("a.parquet", 2, "duplicate"), ("b.parquet", 0, "duplicate")]
        ids, counts = curate_rows.entry_counts(rows, first)
        assert ids.tolist() == [0] and counts.tolist() == [3]


def test_balance_partition_and_curated_table():
    from clipdata.pipeline.curate import pair_dedup

    pairs = [(f"http://x/{i}.jpg", f"dog {i}") for i in range(400)]
    rows = curate_rows.partition_rows([work_rows(pairs, list(range(400)))], ["a.parquet"])
    distinct = np.ones(400, dtype=bool)
    distinct[:5] = False  # say the first five were copies: never kept, never counted as balanced out
    counts = np.array([4000])  # entry 0 matched 4000 pairs pool-wide: keep about 1 in 40
    kept, out = curate_rows.balance_partition(rows, distinct, counts, max_per_entry=100, seed=0)
    assert kept.num_rows + out.num_rows == 395 and 0 < kept.num_rows < 30
    assert set(out.column("reason").to_pylist()) == {"balanced-out"}
    assert min(kept.column("source_row").to_pylist() + out.column("source_row").to_pylist()) == 5
    again, _ = curate_rows.balance_partition(rows, distinct, counts, max_per_entry=100, seed=0)
    assert again.equals(kept)
    table = curate_rows.curated_table(kept)
    assert table.column_names == curate_rows.CURATED_COLUMNS
    assert table.column("source_file").type == pa.string()
    assert table.column("uid").to_pylist() == [pair_dedup.pair_uid(u, c) for u, c in
                                               zip(table.column("url").to_pylist(), table.column("caption").to_pylist())]
    assert curate_rows.entry_counts(kept)[1].tolist() == [kept.num_rows]


def test_pool_and_output_on_another_file_system(tmp_path, monkeypatch):
    """Nothing assumes a local disk: pool, curated files, dropped rows and the work files between
    the steps all live on a `remote://` file system (as gs:// or s3:// would), read back whole
    rather than memory-mapped; the result is the local run's, and no work file is left."""
    from remote_fs import RemoteFileSystem

    monkeypatch.setattr(RemoteFileSystem, "root", str(tmp_path / "remote"))
    os.makedirs(tmp_path / "remote")
    write_pool(str(tmp_path / "remote" / "pool.parquet"))
    write_pool(str(tmp_path / "pool.parquet"))
    local, local_stats = run(str(tmp_path), str(tmp_path / "pool.parquet"))
    queries = os.path.join(str(tmp_path), "queries.txt")
    assert cli.main(["curate", "--pool", "remote://pool.parquet", "--queries", queries, "--output", "remote://out"]) == 0
    stats = json.load(open(tmp_path / "remote" / "out" / "curate_stats.json"))
    assert stats["dropped"] == local_stats["dropped"] and stats["rows_kept"] == local_stats["rows_kept"] == 4
    strip = lambda t: t.drop_columns(["source_file"]).to_pylist()  # noqa: E731
    assert strip(curate.read_curated("remote://out")) == strip(curate.read_curated(local))
    assert sorted(os.listdir(tmp_path / "remote" / "out")) == ["curate_stats.json", "curated", "dropped",
                                                              "entry_counts.parquet"]
