"""Reading a pool: a tiny pool written in every format and read back row for row, with its
source_row; column names; and files that cannot be read, each failing with its file and row."""
import csv
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipdata.pipeline.foundation import pool
from clipdata.pipeline.foundation.pool import (POOL_SCHEMA, MissingColumnError, PoolReadError, list_pool_files,
                                               pool_format, read_pool_file)

# (url, caption): quotes, the delimiters, a newline inside a caption, an empty and a missing one,
# the string "NA" (must stay text), non-ASCII.
ROWS = [
    ("http://a.example/1.jpg", "a red bus"),
    ("http://a.example/2.jpg", 'she said "hi", then\tleft'),
    ("http://a.example/3.jpg", "two\nlines"),
    ("http://a.example/4.jpg", ""),
    ("http://a.example/5.jpg", None),
    ("http://a.example/6.jpg", "NA"),
    ("https://b.example/7.png?x=1,2", "café ☕ 東京"),
]


def write_pool(path, rows=ROWS, url_col="url", caption_col="caption"):
    """Write rows as the file name says (parquet, csv, tsv, jsonl/json, optionally .gz), with an
    extra column the reader must ignore."""
    fmt = pool_format(str(path))
    opener = gzip.open if str(path).endswith(".gz") else open
    if fmt == "parquet":
        pq.write_table(pa.table({"key": [str(i) for i in range(len(rows))],
                                 url_col: [r[0] for r in rows], caption_col: [r[1] for r in rows]}),
                       path)
    elif fmt in ("csv", "tsv"):
        with opener(path, "wt", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter="\t" if fmt == "tsv" else ",")
            writer.writerow(["key", url_col, caption_col])
            writer.writerows([i, url, caption] for i, (url, caption) in enumerate(rows))
    else:
        with opener(path, "wt", encoding="utf-8") as f:
            for i, (url, caption) in enumerate(rows):
                f.write(json.dumps({"key": i, url_col: url, caption_col: caption,
                                    "meta": {"nested": [1, 2]}}) + "\n")
    return str(path)


def read_rows(path, **kwargs):
    return [row for batch in read_pool_file(path, **kwargs) for row in batch.to_pylist()]


def expected(path, fmt, rows=ROWS):
    # CSV has no null: a missing caption reads back as "".
    return [{"url": url, "caption": "" if caption is None and fmt in ("csv", "tsv") else caption,
             "source_file": path, "source_row": i, "page_url": None}
            for i, (url, caption) in enumerate(rows)]


FILES = ["pool.parquet", "pool.csv", "pool.tsv", "pool.jsonl", "pool.json", "pool.csv.gz",
         "pool.tsv.gz", "pool.jsonl.gz", "pool.parquet.gz"]


@pytest.mark.parametrize("name", FILES)
def test_every_format_reads_back_exactly(tmp_path, name):
    if name.endswith("parquet.gz"):
        path = _gzip_parquet(tmp_path)
    else:
        path = write_pool(tmp_path / name)
    fmt = pool_format(path)
    batches = list(read_pool_file(path, batch_rows=3))
    assert all(b.schema == POOL_SCHEMA and b.num_rows <= 3 for b in batches)
    assert len(batches) == 3
    assert [r for b in batches for r in b.to_pylist()] == expected(path, fmt)


def _gzip_parquet(tmp_path):
    plain = write_pool(tmp_path / "plain.parquet")
    with open(plain, "rb") as f, gzip.open(tmp_path / "pool.parquet.gz", "wb") as out:
        out.write(f.read())
    return str(tmp_path / "pool.parquet.gz")


@pytest.mark.parametrize("name", ["pool.parquet", "pool.csv", "pool.jsonl.gz"])
def test_custom_column_names(tmp_path, name):
    path = write_pool(tmp_path / name, url_col="URL", caption_col="TEXT")
    assert read_rows(path, url_col="URL", caption_col="TEXT") == expected(path, pool_format(path))


@pytest.mark.parametrize("name", ["pool.parquet", "pool.csv", "pool.tsv.gz", "pool.jsonl"])
def test_missing_column_names_file_column_and_columns_present(tmp_path, name):
    path = write_pool(tmp_path / name)
    with pytest.raises(MissingColumnError) as err:
        read_rows(path, caption_col="TEXT")
    message = str(err.value)
    assert path in message and "'TEXT'" in message and "caption column" in message
    assert message.endswith(f"its columns are {', '.join(err.value.present)}")
    assert {"key", "url", "caption"} <= set(err.value.present) and err.value.role == "caption"


@pytest.mark.parametrize("name", ["pool.csv", "pool.jsonl"])
def test_rows_cross_block_boundaries(tmp_path, monkeypatch, name):
    # Tiny parse blocks: quoted newlines and JSON lines fall across block edges.
    monkeypatch.setattr(pool, "_BLOCK_BYTES", 1024)
    rows = [(f"http://a.example/{i}.jpg", f"caption {i}\nline two, \"q\"" if i % 3 else None)
            for i in range(2000)]
    path = write_pool(tmp_path / name, rows=rows)
    assert read_rows(path, batch_rows=700) == expected(path, pool_format(path), rows)


def test_empty_csv_and_jsonl_have_no_rows(tmp_path):
    for name in ("empty.csv", "empty.jsonl.gz"):
        path = tmp_path / name
        (gzip.open if name.endswith(".gz") else open)(path, "wb").close()
        assert read_rows(str(path)) == []


def test_corrupt_parquet_names_the_file(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet PAR1")
    with pytest.raises(PoolReadError, match="broken.parquet.*not a readable parquet file"):
        read_rows(str(path))


def test_bad_csv_row_names_the_file_and_row(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('url,caption\nhttp://a.example/1.jpg,ok\nhttp://a.example/2.jpg,"one" "two",3\n'
                    "http://a.example/3.jpg,ok\n")
    with pytest.raises(PoolReadError) as err:
        read_rows(str(path))
    assert err.value.path == str(path) and err.value.row == 1
    assert "bad.csv at row 1" in str(err.value) and "expected 2 fields, found 3" in str(err.value)


def test_bad_json_line_names_the_file_and_row(tmp_path, monkeypatch):
    monkeypatch.setattr(pool, "_BLOCK_BYTES", 1024)  # the bad line is in a later block
    lines = [json.dumps({"url": f"http://a.example/{i}", "caption": "x" * 30}) for i in range(300)]
    lines[250] = '{"url": "http://a.example/250", "caption": oops}'
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PoolReadError) as err:
        read_rows(str(path))
    assert err.value.row == 250 and "bad.jsonl at row 250" in str(err.value)
    assert err.value.rows_read < 250


def test_cut_gzip_is_an_error_not_a_short_file(tmp_path):
    path = write_pool(tmp_path / "pool.csv.gz", rows=ROWS * 50)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(PoolReadError, match="pool.csv.gz.*ends inside a gzip stream"):
        read_rows(path)


def test_file_system_errors_pass_through(tmp_path, monkeypatch):
    # A failing read is the file system's problem (Beam retries), not a malformed file.
    path = write_pool(tmp_path / "pool.parquet")
    real_open = pool.FileSystems.open

    class Flaky:
        def __init__(self, f):
            self.f = f

        def __getattr__(self, name):
            return getattr(self.f, name)

        def read(self, *args):
            raise ConnectionResetError("network down")

    monkeypatch.setattr(pool.FileSystems, "open", lambda *a, **k: Flaky(real_open(*a, **k)))
    with pytest.raises(ConnectionResetError):
        read_rows(path)


def test_list_pool_files(tmp_path):
    for name in ("b.parquet", "a.csv.gz", "sub/c.jsonl", "sub/deeper/d.wat.gz", "notes.txt",
                 "_SUCCESS", ".e.parquet.crc", "_tmp/f.parquet"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    root = str(tmp_path)
    pool_files = ("a.csv.gz", "b.parquet", "sub/c.jsonl", "sub/deeper/d.wat.gz")
    assert list_pool_files(root) == [f"{root}/{name}" for name in pool_files]
    assert list_pool_files(root + "/") == list_pool_files(root)
    assert list_pool_files(f"{root}/*.parquet") == [f"{root}/b.parquet"]
    assert list_pool_files(f"{root}/**.jsonl") == [f"{root}/sub/c.jsonl"]
    assert list_pool_files(f"{root}/b.parquet") == [f"{root}/b.parquet"]
    with pytest.raises(FileNotFoundError, match="nothing.parquet"):
        list_pool_files(f"{root}/nothing.parquet")
    with pytest.raises(ValueError, match="notes.txt"):
        list_pool_files(f"{root}/*")


def test_pool_format():
    paths = ("gs://b/x.PARQUET", "a.csv.gz", "a.tsv", "a.json", "a.jsonl.gz",
             "CC-MAIN-1.warc.wat.gz", "s3://b/c.wat")
    assert [pool_format(p) for p in paths] == [
        "parquet", "csv", "tsv", "jsonl", "jsonl", "wat", "wat"]
    with pytest.raises(ValueError, match="pool.xlsx: not a pool file"):
        pool_format("pool.xlsx")


def test_parquet_pieces_read_apart_give_the_file_rows(tmp_path):
    rows = [(f"http://a.example/{i}.jpg", f"caption {i}") for i in range(1000)]
    path = str(tmp_path / "groups.parquet")
    table = pa.table({"url": [u for u, _ in rows], "caption": [c for _, c in rows]})
    pq.write_table(table, path, row_group_size=150)
    pieces = pool.pool_pieces(path, rows_per_piece=300)
    # 7 row groups of 150 rows (the last 100): pieces of at least 300 rows, the last shorter.
    assert pieces == [(path, 0, 2), (path, 2, 4), (path, 4, 6), (path, 6, 7)]
    read = [r for _, first, end in pieces for r in read_rows(path, row_groups=(first, end))]
    assert read == read_rows(path)
    assert [r["source_row"] for r in read] == list(range(1000))
    # Other formats, gzipped parquet and unreadable footers are one whole-file piece.
    assert pool.pool_pieces(write_pool(tmp_path / "pool.csv")) == [(str(tmp_path / "pool.csv"), 0, -1)]
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not parquet PAR1")
    assert pool.pool_pieces(str(tmp_path / "bad.parquet")) == [(str(tmp_path / "bad.parquet"), 0, -1)]
