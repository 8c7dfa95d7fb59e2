"""Shard writing: img2dataset's layout, byte-identical reruns, stats-last commit, read back by webdataset."""
from __future__ import annotations

import io
import json
import os
import tarfile

import pyarrow as pa
import pytest
from PIL import Image

from clipdata.pipeline.foundation import shards, storage
from clipdata.pipeline.foundation.shards import ShardRow, sample_key


def encoded(fmt: str, color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buf, format=fmt)
    return buf.getvalue()


IMAGES = {"jpg": encoded("JPEG", (200, 10, 10)), "png": encoded("PNG", (10, 200, 10)),
          "webp": encoded("WEBP", (10, 10, 200))}


def make_rows(shard_id: int = 7) -> list[ShardRow]:
    """Six rows: four successes (jpg, png, webp, jpg) and two failures; given out of key order."""
    def ok(row, ext, caption, **extra):
        return ShardRow(key=sample_key(shard_id, row), url=f"http://img.test/{row}.{ext}", caption=caption,
                        status="success", width=8, height=6, original_width=80, original_height=60,
                        sha256=f"{row:064x}", phash=f"{row:016x}", entry_ids=[row, 499_999],
                        image=IMAGES[ext], image_ext=ext, extra={"uid": f"u{row}", "source_row": row, **extra})

    def failed(row, error):
        return ShardRow(key=sample_key(shard_id, row), url=f"http://img.test/{row}", caption=f"caption {row}",
                        status="failed", error_message=error, entry_ids=[row],
                        extra={"uid": f"u{row}", "source_row": row})

    return [
        ok(4, "webp", "a blue square"),
        ok(0, "jpg", "a red square"),
        failed(1, "timeout"),
        ok(2, "png", "a green square"),
        failed(3, "http 404"),
        ok(5, "jpg", "ünïcödé, \"quotes\" and ../../etc/passwd"),
    ]


def read_tar(path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]


@pytest.fixture
def shard_dir(tmp_path):
    out = tmp_path / "shards"
    shards.write_shard(str(out), 7, make_rows(), {"start_time": 100.0, "end_time": 112.5})
    return out


def test_keys_follow_img2dataset():
    assert sample_key(12, 42) == "000120042"
    assert sample_key(123456, 9999) == "1234569999"
    assert shards.row_digits_for(10_000) == 4 and shards.row_digits_for(10_001) == 5
    assert shards.shard_digits_for(10) == 5 and shards.shard_digits_for(100_001) == 6
    assert sample_key(3, 7, shard_digits=6, row_digits=3) == "000003007"
    for bad_shard in (-1, "3", 2.0, True):
        with pytest.raises(ValueError, match="shard_id"):
            sample_key(bad_shard, 0)
    with pytest.raises(ValueError, match="row"):
        sample_key(1, 10_000)


def test_tar_holds_successes_in_key_order(shard_dir):
    assert sorted(os.listdir(shard_dir)) == ["00007.parquet", "00007.tar", "00007_stats.json"]
    members = read_tar(shard_dir / "00007.tar")
    assert [m.name for m, _ in members] == [
        "000070000.jpg", "000070000.txt", "000070000.json",
        "000070002.png", "000070002.txt", "000070002.json",
        "000070004.webp", "000070004.txt", "000070004.json",
        "000070005.jpg", "000070005.txt", "000070005.json",
    ]
    for info, _ in members:
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode) == (0, 0, 0, "", "", 0o644)
        assert info.isreg()
    data = {m.name: d for m, d in members}
    assert data["000070002.png"] == IMAGES["png"]
    assert data["000070005.txt"].decode("utf-8") == "ünïcödé, \"quotes\" and ../../etc/passwd"
    meta = json.loads(data["000070004.json"])
    assert meta == {
        "url": "http://img.test/4.webp", "caption": "a blue square", "key": "000070004", "status": "success",
        "error_message": None, "width": 8, "height": 6, "original_width": 80, "original_height": 60,
        "sha256": f"{4:064x}", "phash": f"{4:016x}", "phash_centre": None, "entry_ids": [4, 499_999], "uid": "u4", "source_row": 4,
    }


def test_rerun_is_byte_identical(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shards.write_shard(str(a), 7, make_rows(), {"start_time": 1.0, "end_time": 2.0})
    shards.write_shard(str(b), 7, list(reversed(make_rows())), {"start_time": 50.0, "end_time": 99.0})
    first = {name: (a / name).read_bytes() for name in ("00007.tar", "00007.parquet")}
    for name in first:
        assert (b / name).read_bytes() == first[name]
    shards.write_shard(str(a), 7, make_rows())  # again into the same folder, over the committed shard
    for name in first:
        assert (a / name).read_bytes() == first[name]
    assert sorted(os.listdir(a)) == ["00007.parquet", "00007.tar", "00007_stats.json"]


def test_parquet_holds_every_row(shard_dir):
    table = shards.read_shard_table(str(shard_dir), 7)
    assert table.schema.names == list(shards.BASE_COLUMNS) + ["uid", "source_row"]
    assert table.schema.field("entry_ids").type == pa.list_(pa.int32())
    assert table.schema.field("width").type == pa.int32()
    rows = table.to_pylist()
    assert [r["key"] for r in rows] == [f"00007000{i}" for i in range(6)]
    assert [r["status"] for r in rows] == ["success", "failed", "success", "failed", "success", "success"]
    assert rows[1]["error_message"] == "timeout" and rows[1]["width"] is None
    assert rows[3]["error_message"] == "http 404"
    assert rows[0]["entry_ids"] == [0, 499_999] and rows[0]["uid"] == "u0" and rows[0]["phash"] == f"{0:016x}"
    assert "image" not in table.schema.names


def test_passthrough_types_keep_every_shard_schema_alike(tmp_path):
    rows = make_rows()
    for row in rows:
        row.extra["source_file"] = None  # null in every row of this shard
    types = {"uid": pa.string(), "source_file": pa.string(), "source_row": pa.int64(), "score": pa.float32()}
    shards.write_shard(str(tmp_path), 7, rows, extra_types=types)
    schema = shards.read_shard_table(str(tmp_path), 7).schema
    assert [(f.name, f.type) for f in schema][len(shards.BASE_COLUMNS):] == list(types.items())
    with pytest.raises(ValueError, match="clash"):
        shards.write_shard(str(tmp_path), 7, rows, extra_types={"url": pa.string()})


def test_stats_follow_img2dataset(shard_dir):
    stats = json.loads((shard_dir / "00007_stats.json").read_text())
    assert stats["shard_id"] == 7
    assert (stats["count"], stats["successes"]) == (6, 4)
    assert (stats["failed_to_download"], stats["failed_to_resize"]) == (2, 0)
    assert (stats["start_time"], stats["end_time"], stats["duration"]) == (100.0, 112.5, 12.5)
    assert stats["status_dict"] == {"success": 4, "timeout": 1, "http 404": 1}
    assert stats["errors"] == {"http 404": 1, "timeout": 1}
    assert stats["files"] == {"tar": "00007.tar", "parquet": "00007.parquet"}
    assert stats["tar_bytes"] == (shard_dir / "00007.tar").stat().st_size


def test_caller_stats_are_kept_and_checked(tmp_path):
    out = str(tmp_path)
    stats = shards.write_shard(out, 7, make_rows(), {"errors": {"download_timeout": 1, "http_status": 1},
                                                     "failed_to_resize": 0, "retries": 3})
    assert stats["errors"] == {"download_timeout": 1, "http_status": 1} and stats["retries"] == 3
    with pytest.raises(ValueError, match="add up to 1, but 2 rows failed"):
        shards.write_shard(out, 8, make_rows(8), {"errors": {"timeout": 1}})
    with pytest.raises(ValueError, match="count"):
        shards.write_shard(out, 8, make_rows(8), {"count": 7})
    assert shards.committed_shards(out) == {7}


def test_rows_cannot_write_outside_the_folder(tmp_path):
    out = tmp_path / "shards"
    bad = make_rows()
    bad[0].key = "../../000070000"
    with pytest.raises(ValueError, match="not a key of shard 00007"):
        shards.write_shard(str(out), 7, bad)
    with pytest.raises(ValueError, match="not a key of shard 00007"):
        shards.write_shard(str(out), 7, make_rows(8))  # shard 8's keys
    for shard_id in (-1, "7", "../7", 7.0):
        with pytest.raises(ValueError, match="shard_id"):
            shards.write_shard(str(out), shard_id, make_rows())
    dup = make_rows()
    dup[1].key = dup[0].key
    with pytest.raises(ValueError, match="twice"):
        shards.write_shard(str(out), 7, dup)
    noimage = make_rows()
    noimage[0].image = None
    with pytest.raises(ValueError, match="image bytes"):
        shards.write_shard(str(out), 7, noimage)
    assert list(tmp_path.iterdir()) == []  # every check runs before anything is written


def test_kill_before_stats_leaves_no_commit(tmp_path, monkeypatch):
    out = tmp_path / "shards"
    real_replace = os.replace

    def killed_at_stats(src, dst):
        if str(dst).endswith("_stats.json"):
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    shards.write_shard(str(out), 0, make_rows(0))
    monkeypatch.setattr(shards.os, "replace", killed_at_stats)
    with pytest.raises(KeyboardInterrupt):
        shards.write_shard(str(out), 7, make_rows())
    with pytest.raises(KeyboardInterrupt):  # a rewrite of a committed shard uncommits it first
        shards.write_shard(str(out), 0, make_rows(0))
    monkeypatch.setattr(shards.os, "replace", real_replace)

    assert sorted(os.listdir(out)) == ["00000.parquet", "00000.tar", "00007.parquet", "00007.tar"]
    assert shards.committed_shards(str(out)) == set()
    (out / ".00008.tar.tmp-0123abcd").write_bytes(b"half a tar")  # what a SIGKILL leaves
    (out / "notes.txt").write_text("not ours")
    removed = shards.remove_partial(str(out))
    assert sorted(os.path.basename(p) for p in removed) == [
        ".00008.tar.tmp-0123abcd", "00000.parquet", "00000.tar", "00007.parquet", "00007.tar"]
    assert os.listdir(out) == ["notes.txt"]
    with pytest.raises(FileNotFoundError, match="not committed"):
        shards.read_shard_table(str(out), 7)

    shards.write_shard(str(out), 7, make_rows())  # resume
    assert shards.committed_shards(str(out)) == {7}
    assert shards.remove_partial(str(out)) == []


def test_manifest_lists_committed_shards(tmp_path):
    out = tmp_path / "shards"
    for shard_id in (0, 1, 3):
        shards.write_shard(str(out), shard_id, make_rows(shard_id))
    (out / "00004.tar").write_bytes(b"uncommitted")
    manifest = shards.write_manifest(str(out))
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert [s["shard_id"] for s in manifest["shards"]] == [0, 1, 3]
    assert manifest["shards"][2] | {"tar_bytes": 0, "tar_sha256": ""} == {
        "shard_id": 3, "tar": "00003.tar", "parquet": "00003.parquet", "stats": "00003_stats.json",
        "samples": 4, "rows": 6, "tar_bytes": 0, "tar_sha256": ""}
    assert manifest["totals"] == {"shards": 3, "samples": 12, "rows": 18, "failed": 6,
                                  "errors": {"http 404": 3, "timeout": 3}}
    assert manifest["tar_pattern"] == "{00000..00001}.tar::00003.tar"
    assert manifest["openclip"] == {
        "dataset_type": "webdataset", "train_num_samples": 12,
        "train_data": f"{out}/{{00000..00001}}.tar::{out}/00003.tar"}
    assert not [n for n in os.listdir(out) if ".tmp-" in n]


def test_tar_pattern_runs():
    assert shards.tar_pattern([]) == ""
    assert shards.tar_pattern(["00002.tar", "00000.tar", "00001.tar"]) == "{00000..00002}.tar"
    assert shards.tar_pattern(["99998.tar", "99999.tar", "100000.tar"]) == "{99998..99999}.tar::100000.tar"


def test_webdataset_reads_every_success(shard_dir):
    import webdataset as wds

    samples = list(wds.WebDataset(str(shard_dir / "00007.tar"), shardshuffle=False).decode("pil"))
    assert [s["__key__"] for s in samples] == ["000070000", "000070002", "000070004", "000070005"]
    image_of = {"000070000": "jpg", "000070002": "png", "000070004": "webp", "000070005": "jpg"}
    for sample in samples:
        image = sample[image_of[sample["__key__"]]]
        assert isinstance(image, Image.Image) and image.size == (8, 6)
        assert sample["json"]["key"] == sample["__key__"]
    assert samples[3]["txt"] == "ünïcödé, \"quotes\" and ../../etc/passwd"


def test_openclip_stages_read_the_manifest_pattern(tmp_path):
    """open_clip_train's `--dataset-type webdataset` stages (no resampling), over the manifest's pattern."""
    import webdataset as wds

    out = tmp_path / "shards"
    for shard_id in (0, 1):
        shards.write_shard(str(out), shard_id, make_rows(shard_id))
    urls = shards.write_manifest(str(out))["openclip"]["train_data"]
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(urls),
        wds.split_by_worker,
        wds.tarfile_to_samples(handler=wds.warn_and_continue),
        wds.decode("pilrgb"),
        wds.rename(image="jpg;png;jpeg;webp", text="txt"),
        wds.to_tuple("image", "text"),
    )
    pairs = list(pipeline)
    assert len(pairs) == 8
    assert all(isinstance(image, Image.Image) and image.mode == "RGB" for image, _ in pairs)
    assert [text for _, text in pairs[:4]] == ["a red square", "a green square", "a blue square",
                                               "ünïcödé, \"quotes\" and ../../etc/passwd"]


def test_beam_file_systems_path(tmp_path, monkeypatch):
    """The FileSystems code path (used for gs://, s3://, ...), run on a local folder."""
    monkeypatch.setattr(shards, "storage_for", lambda path: storage.BeamStorage())
    out = str(tmp_path / "shards")
    shards.write_shard(out, 7, make_rows())
    assert shards.committed_shards(out) == {7}
    assert shards.read_shard_table(out, 7).num_rows == 6
    assert shards.write_manifest(out)["totals"]["samples"] == 4
    (tmp_path / "shards" / "00009.tar").write_bytes(b"partial")
    assert [os.path.basename(p) for p in shards.remove_partial(out)] == ["00009.tar"]
    assert sorted(os.listdir(out)) == ["00007.parquet", "00007.tar", "00007_stats.json", "manifest.json"]
