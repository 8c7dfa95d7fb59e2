"""What `clipdata curate` shows while it runs: the workers' piece notes weighed by file size."""
import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
from test_curate import ROWS, run, write_pool

from clipdata.pipeline.curate import progress
from clipdata.pipeline.foundation import pool


def test_the_line_weighs_each_piece_by_its_share_of_its_file(tmp_path):
    work = str(tmp_path)
    sizes = {"/pool/a.parquet": 3000, "/pool/b.csv": 1000}
    watcher = progress.CurateWatcher(work, sizes, stream=io.StringIO())
    first = progress.piece_note(work, "a-0", "/pool/a.parquet")
    first.update(share=0.5, piece_rows=100, rows=50, matched=5)    # half of a half of a: 750 bytes
    progress.piece_note(work, "a-1", "/pool/a.parquet").done(share=0.5, piece_rows=100, rows=100, matched=9)
    progress.piece_note(work, "b", "/pool/b.csv").update(share=1.0, piece_rows=None, rows=40, matched=1)
    text = watcher.text()       # a csv counts when done: 750 + 1500 of 4000 bytes
    assert text.startswith("curate: 190 pool rows read (")
    assert "15 matched, 56.2% of the pool; ETA " in text


def test_the_pieces_of_a_parquet_file_share_its_bytes(tmp_path):
    path = str(tmp_path / "p.parquet")
    pq.write_table(pa.table({"url": ["u"] * 1000, "caption": ["c"] * 1000}), path, row_group_size=100)
    pieces = pool.pool_pieces(path, rows_per_piece=300)
    shares = [pool.piece_share(*piece) for piece in pieces]
    assert [rows for _, rows in shares] == [300, 300, 300, 100]
    assert abs(sum(share for share, _ in shares) - 1.0) < 1e-9
    assert pool.piece_share(path, 0, -1) == (1.0, None)


def test_a_run_ends_with_every_row_read_and_the_whole_pool(tmp_path, capsys):
    write_pool(str(tmp_path / "a.parquet"))
    write_pool(str(tmp_path / "b.csv"))
    os.makedirs(tmp_path / "pool")
    os.rename(tmp_path / "a.parquet", tmp_path / "pool" / "a.parquet")
    os.rename(tmp_path / "b.csv", tmp_path / "pool" / "b.csv")
    output, stats = run(str(tmp_path), str(tmp_path / "pool"))
    last = [line for line in capsys.readouterr().err.splitlines() if line.startswith("curate: ")][-1]
    assert last.startswith(f"curate: {2 * len(ROWS)} pool rows read (")
    assert ", 100.0% of the pool in " in last
    assert stats["rows_read"] == 2 * len(ROWS)
    assert not [f for f in os.listdir(output) if f.startswith("_work")]     # notes went with the work folder
