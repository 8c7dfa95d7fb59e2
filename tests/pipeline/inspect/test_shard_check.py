"""The shard checker: clean on our shards and img2dataset's, and each way a tar breaks consumers."""
from __future__ import annotations

import argparse
import io
import tarfile

import pytest

from clipdata.pipeline.foundation import shards
from clipdata.pipeline.inspect import shard_check
from clipdata.pipeline.inspect.shard_check import Problem, check_paths, check_shard

JPG, TXT = b"\xff\xd8 not really a jpeg \xff\xd9", b"a caption"


def make_tar(path, members, finish=True) -> bytes:
    """A tar of (name, bytes) members; name ending in '/' is a directory. Returns its bytes."""
    buf = io.BytesIO()
    tar = tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT)
    for name, data in members:
        info = tarfile.TarInfo(name.rstrip("/"))
        if name.endswith("/"):
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        else:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    if finish:
        tar.close()
    raw = buf.getvalue()
    path.write_bytes(raw)
    return raw


def sample(key, *exts):
    return [(f"{key}.{ext}", TXT if ext == "txt" else JPG) for ext in exts]


def kinds(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(p.key, p.kind) for p in problems]


@pytest.fixture
def ours(tmp_path):
    rows = [shards.ShardRow(key=shards.sample_key(0, i), url=f"http://x/{i}", caption=f"cap {i}",
                            status="success" if i != 1 else "failed", error_message="timeout" if i == 1 else None,
                            image=JPG if i != 1 else None) for i in range(4)]
    shards.write_shard(str(tmp_path), 0, rows)
    return tmp_path / "00000.tar"


def test_our_shard_is_clean(ours):
    assert check_shard(str(ours)) == []
    scan = shard_check.scan_shard(str(ours))
    assert (scan.members, scan.samples) == (9, 3)


def test_webdataset_writer_shard_is_clean(tmp_path):
    """img2dataset writes with webdataset's TarWriter (real mtimes, pax headers): also clean."""
    import webdataset as wds

    path = tmp_path / "img2dataset.tar"
    with wds.TarWriter(str(path)) as sink:
        for i in range(3):
            sink.write({"__key__": f"{i:09d}", "jpg": JPG, "txt": "cap", "json": {"key": f"{i:09d}"}})
    assert check_shard(str(path)) == []


def test_dotted_key(tmp_path):
    path = tmp_path / "dotted.tar"
    make_tar(path, sample("ok", "jpg", "txt") + sample("img.v2", "jpg", "txt", "json"))
    problems = check_shard(str(path))
    assert kinds(problems) == [("img.v2", "dotted_key")]
    assert "key `img`, extension `v2.jpg`" in problems[0].detail
    assert "spin forever" in problems[0].detail and "#569" in problems[0].detail


def test_webdataset_really_splits_at_the_first_dot(tmp_path):
    import webdataset as wds

    path = tmp_path / "dotted.tar"
    make_tar(path, sample("img.v2", "jpg", "txt"))
    (only,) = list(wds.WebDataset(str(path), shardshuffle=False))
    assert only["__key__"] == "img" and {"v2.jpg", "v2.txt"} <= set(only) and "jpg" not in only


def test_split_sample(tmp_path):
    path = tmp_path / "split.tar"
    make_tar(path, sample("000", "jpg") + sample("001", "jpg", "txt") + sample("000", "txt"))
    problems = check_shard(str(path))
    assert kinds(problems) == [("000", "split_sample")]
    assert "2 partial samples (jpg | txt)" in problems[0].detail


def test_missing_text_and_missing_image(tmp_path):
    path = tmp_path / "missing.tar"
    make_tar(path, sample("000", "jpg", "json") + sample("001", "txt", "json") + sample("002", "gif", "txt"))
    problems = check_shard(str(path))
    assert kinds(problems) == [("000", "missing_text"), ("001", "missing_image"), ("002", "missing_image")]
    assert "#1016" in problems[0].detail
    assert "`gif` is not one OpenCLIP reads" in problems[2].detail


def test_duplicate_keys(tmp_path):
    again = tmp_path / "again.tar"
    make_tar(again, sample("000", "jpg", "txt") + sample("001", "jpg", "txt") + sample("000", "jpg", "txt"))
    assert kinds(check_shard(str(again))) == [("000", "duplicate_key")]
    twice = tmp_path / "twice.tar"
    make_tar(twice, sample("000", "jpg", "txt", "txt"))
    problems = check_shard(str(twice))
    assert kinds(problems) == [("000", "duplicate_key")]
    assert "duplicate file name" in problems[0].detail


def test_extensions(tmp_path):
    path = tmp_path / "ext.tar"
    make_tar(path, sample("000", "JPG", "txt") + sample("001", "jpg", "txt", "caption"))
    problems = check_shard(str(path))
    assert kinds(problems) == [("000", "uppercase_extension"), ("001", "unknown_extension")]
    assert "`.caption`" in problems[1].detail


def test_names_and_member_types(tmp_path):
    path = tmp_path / "odd.tar"
    make_tar(path, [("images/", b"")] + sample("000", "jpg", "txt") + [("README", b"hi"), ("._000.jpg", b"x"),
                                                                          ("001.jpg", b""), ("001.txt", TXT)])
    assert kinds(check_shard(str(path))) == [
        ("images", "not_a_file"), ("README", "bad_name"), ("._000.jpg", "bad_name"), ("001", "empty_image")]


def test_truncated_in_the_middle_of_a_member(tmp_path):
    path = tmp_path / "cut.tar"
    big = [("000.jpg", b"x" * 5000), ("000.txt", TXT), ("001.jpg", b"y" * 5000), ("001.txt", TXT)]
    raw = make_tar(path, big)
    path.write_bytes(raw[:9000])  # inside 001.jpg's data (it starts at byte 6656 + 512)
    problems = check_shard(str(path))
    assert kinds(problems) == [("001", "truncated")]  # not also 001 missing_text: the cut is why
    assert "`001.jpg` (member 3)" in problems[0].detail and "unexpected end of data" in problems[0].detail


def test_cut_at_a_member_boundary_and_garbled_header(tmp_path):
    path = tmp_path / "boundary.tar"
    raw = make_tar(path, sample("000", "jpg", "txt") + sample("001", "jpg", "txt"))
    path.write_bytes(raw[:2048])  # two full members, no end-of-archive blocks
    problems = check_shard(str(path))
    assert kinds(problems) == [("000", "truncated")]
    assert "end-of-archive" in problems[0].detail and "no error" in problems[0].detail
    path.write_bytes(raw[:2048] + b"garbage!" * 64 + raw[2560:])
    problems = check_shard(str(path))
    assert kinds(problems) == [("000", "corrupt")]
    assert "byte 2048" in problems[0].detail and "lost" in problems[0].detail


def test_empty_tars(tmp_path):
    empty = tmp_path / "empty.tar"
    make_tar(empty, [])
    assert kinds(check_shard(str(empty))) == []  # well-formed, just no sample (all downloads failed)
    zero = tmp_path / "zero.tar"
    zero.write_bytes(b"")
    assert kinds(check_shard(str(zero))) == [("", "empty")]
    notatar = tmp_path / "not.tar"
    notatar.write_bytes(b"<html>404</html>" * 64)
    assert kinds(check_shard(str(notatar))) == [("", "corrupt")]


def test_gzipped_shard(tmp_path):
    import gzip

    path = tmp_path / "s.tar.gz"
    raw = make_tar(tmp_path / "s.tar", sample("000", "jpg", "txt"))
    path.write_bytes(gzip.compress(raw))
    assert check_shard(str(path)) == []
    path.write_bytes(gzip.compress(raw)[:-30])
    assert [p.kind for p in check_shard(str(path))] == ["truncated"]


def test_check_paths_folders_and_patterns(tmp_path, ours):
    folder = ours.parent
    make_tar(folder / "00001.tar", sample("000010000", "jpg"))
    assert kinds(check_paths([str(folder)])) == [("000010000", "missing_text")]
    assert check_paths([str(folder / "{00000..00000}.tar")]) == []
    problems = check_paths([f"{folder}/{{00000..00002}}.tar", str(tmp_path / "nowhere")])
    assert [(p.shard.rsplit("/", 1)[-1], p.kind) for p in problems] == [
        ("00001.tar", "missing_text"), ("00002.tar", "not_found"), ("nowhere", "not_found")]
    empty_folder = tmp_path / "none"
    empty_folder.mkdir()
    assert kinds(check_paths([str(empty_folder)])) == [("", "not_found")]


def test_cli_exit_codes_and_lines(tmp_path, ours, capsys):
    assert shard_check.main([str(ours)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "checked 1 shard, 3 samples: clean" in err

    broken = tmp_path / "broken.tar"
    make_tar(broken, sample("a.b", "jpg", "txt") + sample("000", "jpg"))
    assert shard_check.main([str(ours), str(broken)]) == 1
    out, err = capsys.readouterr()
    lines = [line.split("\t") for line in out.splitlines()]
    assert [line[:3] for line in lines] == [[str(broken), "a.b", "dotted_key"], [str(broken), "000", "missing_text"]]
    assert "2 problems in 1 path (dotted_key 1, missing_text 1)" in err
    # a path that is not there is a problem, not a shard checked
    assert shard_check.main([str(tmp_path / "nowhere.tar")]) == 1
    out, err = capsys.readouterr()
    assert "checked 0 shards, 0 samples: 1 problem in 1 path (not_found 1)" in err


def test_cli_caps_lines_per_kind(tmp_path, capsys):
    path = tmp_path / "many.tar"
    make_tar(path, [m for i in range(5) for m in sample(f"{i:03d}", "jpg")])
    assert shard_check.main(["--max-per-kind", "2", str(path)]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3 and out.splitlines()[-1].endswith("3 more not shown (--max-per-kind 0 shows all)")
    assert "5 problems" in err


def test_add_commands_registers_shards_check(tmp_path, ours):
    parser = argparse.ArgumentParser(prog="clipdata")
    shard_check.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["shards", "check", str(ours)])
    assert args.beam is False and args.handler(args, []) == 0
    missing = parser.parse_args(["shards", "check", str(tmp_path / "missing.tar")])
    assert missing.handler(missing, []) == 1
