"""Rows handed between the steps of a job through files, not through the runner.

`clipdata curate` moves every matched pair from the worker that read it to the worker that
deduplicates its uid partition. Sent through Beam's shuffle, each pair is pickled, framed, sent
over the data plane and decoded again: on 2 local workers that cost more than reading, cleaning
and matching together. So the rows go into Arrow IPC files under the job's work folder, and the
runner carries only references to them, a few bytes per partition per piece (the way Beam's own
file sinks hand files between steps):

    writer = PartitionWriter(path, partitions)     # one per piece of the pool
    writer.write(table, partition_of_each_row)     # as often as batches come
    refs = writer.close()                          # {partition: WorkRef}
    read_partition([refs from every piece])        # the partition's rows, one table

A WorkRef names the file and the record batches in it that hold one partition's rows. Files are
written to a unique name (a retried bundle writes another and its refs are never used) on any
file system Beam knows, so a cluster's workers read each other's files from the shared output
folder; the driver deletes the work folder when the job is done.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


@dataclass(frozen=True, order=True)
class WorkRef:
    """Rows of one partition in one work file: its record batches `batches` (in file order)."""

    path: str
    batches: tuple[int, ...]
    rows: int


def unique_path(folder: str, stem: str) -> str:
    return FileSystems.join(folder, f"{stem}-{uuid.uuid4().hex[:12]}.arrow")


class PartitionWriter:
    """One Arrow IPC file of rows cut by partition: each write() adds one record batch per
    partition present in the table, so the file can be written batch by batch (a whole csv or
    WAT file is one piece) and each partition's batches read back alone."""

    def __init__(self, path: str, partitions: int):
        self.path, self.partitions = path, partitions
        self.handle = self.writer = None
        self.batches: dict[int, list[int]] = {}
        self.rows: dict[int, int] = {}
        self.written = 0

    def write(self, table: pa.Table, partition: np.ndarray) -> None:
        if table.num_rows == 0:
            return
        if self.writer is None:
            self.handle = FileSystems.create(self.path, compression_type=CompressionTypes.UNCOMPRESSED)
            self.writer = pa.ipc.new_file(self.handle, table.schema)
        order = np.argsort(partition, kind="stable")
        bounds = np.searchsorted(partition[order], np.arange(self.partitions + 1))
        sorted_table = table.take(order).combine_chunks()
        for p in np.flatnonzero(np.diff(bounds)).tolist():
            start, end = int(bounds[p]), int(bounds[p + 1])
            for batch in sorted_table.slice(start, end - start).to_batches():
                self.writer.write_batch(batch)
                self.batches.setdefault(p, []).append(self.written)
                self.written += 1
            self.rows[p] = self.rows.get(p, 0) + end - start

    def close(self) -> dict[int, WorkRef]:
        if self.writer is not None:
            self.writer.close()
            self.handle.close()
        return {p: WorkRef(self.path, tuple(batches), self.rows[p]) for p, batches in self.batches.items()}


def read_partition(refs: list[WorkRef]) -> list[pa.Table]:
    """Each ref's rows as a table, in the order of `refs`."""
    return [_read_batches(ref.path, ref.batches) for ref in refs]


def _read_batches(path: str, indices: tuple[int, ...]) -> pa.Table:
    """Record batches of a work file: memory-mapped when local; elsewhere (gs://, s3://) by seeks
    to the footer and to each batch, so that a partition downloads its own rows, not the whole
    file, which every other partition of the piece reads too (files x partitions of traffic)."""
    if "://" not in path:
        reader = pa.ipc.open_file(pa.memory_map(path))
        return pa.Table.from_batches([reader.get_batch(i) for i in indices], schema=reader.schema)
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        reader = pa.ipc.open_file(pa.PythonFile(handle, mode="r"))
        return pa.Table.from_batches([reader.get_batch(i) for i in indices], schema=reader.schema)


def delete_folder(folder: str) -> None:
    """Remove a work folder and the files in it (missing is fine). Its files are deleted one by
    one: on an object store a folder is only a prefix, and deleting it by name deletes nothing."""
    files = [m.path for m in FileSystems.match([FileSystems.join(folder, "*")])[0].metadata_list]
    if files:
        FileSystems.delete(files)
    if FileSystems.exists(folder):  # a directory of a file system that has them
        FileSystems.delete([folder])
