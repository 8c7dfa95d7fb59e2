"""Work files: rows cut by partition into Arrow IPC files and read back a partition at a time."""
import os

import numpy as np
import pyarrow as pa

from clipdata.pipeline.curate import work_files


def table(start, n):
    return pa.table({"row": np.arange(start, start + n), "text": [f"t{i}" for i in range(start, start + n)]})


def test_each_partition_reads_back_exactly_its_rows_in_write_order(tmp_path):
    rng = np.random.default_rng(0)
    writer = work_files.PartitionWriter(work_files.unique_path(str(tmp_path), "matched-piece"), partitions=5)
    expected = {p: [] for p in range(5)}
    start = 0
    for n in (100, 0, 37, 250):  # an empty batch writes nothing
        part = rng.integers(0, 4, n)  # partition 4 never gets a row
        writer.write(table(start, n), part)
        for p in range(5):
            expected[p] += (start + np.flatnonzero(part == p)).tolist()
        start += n
    refs = writer.close()
    assert sorted(refs) == [0, 1, 2, 3]
    for p, ref in refs.items():
        (got,) = work_files.read_partition([ref])
        assert got.column("row").to_pylist() == expected[p]
        assert got.column("text").to_pylist() == [f"t{i}" for i in expected[p]]
        assert ref.rows == len(expected[p])
    # Refs of several files read back in the order given.
    other = work_files.PartitionWriter(work_files.unique_path(str(tmp_path), "matched-other"), partitions=5)
    other.write(table(1000, 3), np.array([2, 2, 2]))
    both = work_files.read_partition([other.close()[2], refs[2]])
    assert both[0].column("row").to_pylist() == [1000, 1001, 1002] and both[1].num_rows == len(expected[2])


def test_a_writer_that_got_no_rows_writes_no_file(tmp_path):
    writer = work_files.PartitionWriter(str(tmp_path / "none.arrow"), partitions=3)
    writer.write(table(0, 0), np.zeros(0, dtype=np.int64))
    assert writer.close() == {} and not os.path.exists(tmp_path / "none.arrow")


def test_folder_removal_and_unique_names(tmp_path):
    folder = str(tmp_path / "_work")
    os.makedirs(folder)
    path = work_files.unique_path(folder, "matched-00003")
    assert path != work_files.unique_path(folder, "matched-00003")  # a retry never overwrites
    writer = work_files.PartitionWriter(path, partitions=2)
    writer.write(table(5, 20), np.zeros(20, dtype=np.int64))
    assert writer.close()[0].rows == 20 and os.path.exists(path)
    work_files.delete_folder(folder)
    assert not os.path.exists(folder)
    work_files.delete_folder(folder)  # already gone: fine


def test_a_partition_on_another_file_system_reads_its_own_batches_not_the_whole_file(tmp_path, monkeypatch):
    """On an object store every partition step reads every piece's work file: reading a file whole
    for each partition would download it once per partition."""
    from apache_beam.io.filesystems import FileSystems
    from remote_fs import RemoteFileSystem

    monkeypatch.setattr(RemoteFileSystem, "root", str(tmp_path))
    path = work_files.unique_path("remote://work", "matched-piece")
    writer = work_files.PartitionWriter(path, partitions=16)
    rows = np.arange(16_000)
    writer.write(table(0, len(rows)), rows % 16)
    refs = writer.close()
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes

    read_bytes = []
    real_open = FileSystems.open

    def counting_open(*args, **kwargs):
        handle = real_open(*args, **kwargs)
        real_read = handle.read

        def read(n=-1):
            data = real_read(n)
            read_bytes.append(len(data))
            return data
        handle.read = read
        return handle

    monkeypatch.setattr(FileSystems, "open", counting_open)
    (got,) = work_files.read_partition([refs[5]])
    assert got.column("row").to_pylist() == rows[rows % 16 == 5].tolist()
    assert 0 < sum(read_bytes) < size / 4
