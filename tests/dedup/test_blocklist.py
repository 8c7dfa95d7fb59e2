"""`clipdata dedup apply-blocklist`: blocked samples leave the tars, every other byte stays."""
from __future__ import annotations

import io
import json
import os
import tarfile

import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from clipdata.dedup import blocklist
from clipdata.pipeline import cli
from clipdata.pipeline.foundation import folder_lock, shards
from clipdata.pipeline.foundation.shards import ShardRow, sample_key


def jpeg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(buf, "JPEG")
    return buf.getvalue()


def shard_rows(shard: int) -> list[ShardRow]:
    rows = []
    for i in range(6):
        if i == 4:
            rows.append(ShardRow(key=sample_key(shard, i), url=f"http://x.test/{shard}/{i}", caption="gone",
                                 status="failed", error_message="http-404", extra={"uid": f"{shard}-{i}"}))
            continue
        rows.append(ShardRow(key=sample_key(shard, i), url=f"http://x.test/{shard}/{i}", caption=f"caption {i}",
                             status="success", width=16, height=12, sha256=f"{i:064x}", phash=f"{i:016x}",
                             entry_ids=[i], image=jpeg((40 * i, 10, 200 - 30 * i)),
                             image_ext="png" if i == 2 else "jpg", extra={"uid": f"{shard}-{i}"}))
    return rows


def members(path) -> list[tuple[str, dict, bytes]]:
    """(name, header fields, data) of every member, in order."""
    out = []
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            header = {k: getattr(m, k) for k in ("size", "mtime", "mode", "uid", "gid", "uname", "gname", "type")}
            out.append((m.name, header, tar.extractfile(m).read()))
    return out


@pytest.fixture
def source(tmp_path):
    folder = str(tmp_path / "shards")
    for shard in (0, 1, 2):
        shards.write_shard(folder, shard, shard_rows(shard), {"start_time": 0.0, "end_time": 2.0})
    shards.write_manifest(folder)
    return folder


BLOCKED = ["000000001", "000000003", "000020000", "000020004", "999999999"]  # 000020004 failed already


def test_blocked_samples_leave_and_every_other_member_is_byte_identical(source, tmp_path):
    out = str(tmp_path / "clean")
    (tmp_path / "blocklist.txt").write_text("# from a report\n" + "\n".join(BLOCKED) + "\n\n")
    summary = blocklist.apply_blocklist(source, str(tmp_path / "blocklist.txt"), out)
    assert summary["samples_blocked"] == 3
    assert summary["keys_not_found"] == 2 and summary["keys_not_found_examples"] == ["000020004", "999999999"]
    assert (summary["shards_rewritten"], summary["shards_copied"]) == (2, 1)

    for shard in (0, 1, 2):
        name = f"{shard:05d}.tar"
        before, after = members(os.path.join(source, name)), members(os.path.join(out, name))
        kept = [m for m in before if m[0].split(".")[0] not in BLOCKED]
        assert after == kept                        # same order, same headers, same bytes
    # A shard with nothing blocked is copied as it is, every file.
    for name in ("00001.tar", "00001.parquet", "00001_stats.json"):
        assert open(os.path.join(source, name), "rb").read() == open(os.path.join(out, name), "rb").read()


def test_parquet_keeps_every_row_and_stats_and_manifest_add_up(source, tmp_path):
    out = str(tmp_path / "clean")
    blocklist.apply_blocklist(source, BLOCKED, out, reasons={"000000001": "contamination: test set cifar10 (7)"})
    before, after = shards.read_shard_table(source, 0), shards.read_shard_table(out, 0)
    assert after.num_rows == before.num_rows and after.schema == before.schema
    rows = {r["key"]: r for r in after.to_pylist()}
    assert rows["000000001"]["status"] == "blocked"
    assert rows["000000001"]["error_message"] == "contamination: test set cifar10 (7)"
    assert rows["000000003"]["error_message"] == "contamination: in blocklist"
    assert rows["000000004"]["status"] == "failed" and rows["000000004"]["error_message"] == "http-404"
    unchanged = ["key", "url", "caption", "phash", "sha256", "entry_ids", "uid"]
    assert after.select(unchanged).equals(before.select(unchanged))

    stats = json.load(open(os.path.join(out, "00000_stats.json")))
    assert stats["count"] == 6 and stats["successes"] == 3 and stats["blocked"] == 2
    assert stats["count"] == stats["successes"] + sum(stats["errors"].values())
    assert sum(stats["status_dict"].values()) == stats["count"]
    with open(os.path.join(out, "00000.tar"), "rb") as f:
        import hashlib

        data = f.read()
    assert stats["tar_bytes"] == len(data) and stats["tar_sha256"] == hashlib.sha256(data).hexdigest()

    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["totals"]["rows"] == 18
    assert manifest["totals"]["samples"] == 15 - 3
    assert manifest["totals"]["failed"] == 3 + 3 and manifest["totals"]["errors"]["blocked"] == 3
    assert manifest["openclip"]["train_num_samples"] == 12
    # webdataset reads the filtered shards: exactly the samples that are left.
    keys = [s["__key__"] for s in wds.WebDataset(os.path.join(out, "{00000..00002}.tar"), shardshuffle=False)]
    assert len(keys) == 12 and not set(keys) & set(BLOCKED)


def test_corrupt_shard_is_named_and_not_written(source, tmp_path):
    with open(os.path.join(source, "00002.parquet"), "wb") as f:
        f.write(b"not a parquet")
    out = str(tmp_path / "clean")
    (tmp_path / "bl.txt").write_text("000000001\n000020000\n")
    assert cli.main(["dedup", "apply-blocklist", "--shards", source, "--blocklist", str(tmp_path / "bl.txt"),
                     "--output", out]) == 1
    summary = json.load(open(os.path.join(out, "blocklist_applied.json")))
    assert [e["shard"] for e in summary["shards_unreadable"]] == ["00002_stats.json"]
    assert shards.committed_shards(out) == {0, 1}
    assert not [n for n in os.listdir(out) if n.startswith(".") and n != folder_lock.LOCK_NAME]  # no temporary files


def test_reasons_come_from_the_report_beside_the_blocklist(source, tmp_path):
    report = {"test_sets": [{"name": "stl10", "matches": [{"key": "000000003", "test_id": "img/9.png"}]},
                            {"name": "cifar", "matches": [{"key": "000000003", "test_id": "12"}]}]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    (tmp_path / "blocklist.txt").write_text("000000003\n")
    blocklist.apply_blocklist(source, str(tmp_path / "blocklist.txt"), str(tmp_path / "clean"))
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "clean" / "00000.parquet").to_pylist()}
    assert rows["000000003"]["error_message"] == "contamination: test set cifar (12), stl10 (img/9.png)"


def test_output_must_be_a_new_folder(source):
    with pytest.raises(blocklist.BlocklistError, match="new folder"):
        blocklist.apply_blocklist(source, ["000000001"], source)


@pytest.mark.parametrize("named", ["../victim.tar", "ABS", "00001.tar", "sub/00000.tar"])
def test_a_stats_file_naming_files_outside_its_shard_is_refused(source, tmp_path, named):
    """A crafted `_stats.json` names the data files to write: an absolute or `../` name, another
    shard's file, a sub-folder. Nothing outside the output folder is touched, the shard is named
    as unreadable with the reason, and the other shards are written."""
    victim = tmp_path / "victim.tar"
    victim.write_bytes(b"precious")
    named = str(victim) if named == "ABS" else named
    stats_path = os.path.join(source, "00000_stats.json")
    stats = json.load(open(stats_path))
    stats["files"]["tar"] = named
    json.dump(stats, open(stats_path, "w"))
    out = tmp_path / "clean"
    summary = blocklist.apply_blocklist(source, ["000000001", "000020000"], str(out))
    assert victim.read_bytes() == b"precious"
    assert not (tmp_path / "00000.tar").exists() and not (out / "sub").exists()
    [bad] = summary["shards_unreadable"]
    assert bad["shard"] == "00000_stats.json"
    assert "ShardNameError" in bad["error"] and repr(named) in bad["error"]
    assert shards.committed_shards(str(out)) == {1, 2}
    assert open(source + "/00001.tar", "rb").read() == (out / "00001.tar").read_bytes()


def test_data_files_are_the_shards_own_names():
    assert shards.data_files("00012_stats.json", {"files": {"tar": "00012.tar", "parquet": "00012.parquet"}}) \
        == {"tar": "00012.tar", "parquet": "00012.parquet"}
    assert shards.data_files("00012_stats.json", {}) == {"tar": "00012.tar", "parquet": "00012.parquet"}
    for files in ({"tar": "00012.tar", "parquet": "/etc/passwd"}, {"tar": "..", "parquet": "00012.parquet"}, "x"):
        with pytest.raises(shards.ShardNameError) as err:
            shards.data_files("00012_stats.json", {"files": files})
        assert err.value.stats == "00012_stats.json" and err.value.kind in ("tar", "parquet")


def test_progress_counts_the_shards_written_and_ends_with_a_summary_line(source, tmp_path, capsys):
    out = str(tmp_path / "clean")
    os.makedirs(out)
    watcher = blocklist.ShardsWritten(out, 3)
    assert watcher.text().startswith("apply-blocklist: wrote 0/3 shards")
    blocklist.apply_blocklist(source, BLOCKED, out)
    assert watcher.text().startswith("apply-blocklist: wrote 3/3 shards")   # committed shards of the output
    err = capsys.readouterr().err
    assert "apply-blocklist: wrote 3/3 shards in " in err
