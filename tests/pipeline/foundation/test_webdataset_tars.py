"""pipeline/foundation/webdataset_tars.py: the one WebDataset tar reader, checked against webdataset itself."""
from __future__ import annotations

import io
import tarfile

import pytest

from clipdata.pipeline.foundation import webdataset_tars

NAMES = [
    "a/000001.jpg", "a/000001.json", "a/000001.TXT",      # a sample in a folder, an upper-case extension
    "000002.png", "000002.cls",
    "__index__", "__meta__/x.json", "__meta__.json",        # webdataset's metadata, and a key like it
    ".hidden.jpg", "noext", "d/.dot",                       # no key, and the key "d/"
    "x.y/z.jpg", "000003.tar.gz", "000003.seg.json",        # dots in folders and in extensions
    "k1.jpg", "k2.jpg", "k1.txt",                           # a key that comes back (a split sample)
]


def make_tar(names, directories=("dir/",)) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in directories:
            info = tarfile.TarInfo(name.rstrip("/"))
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name in names:
            data = name.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def ours(data: bytes, mode: str = "r|", **kw) -> list[tuple[str, dict]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode=mode) as tar:
        return [(s.key, dict(s.data)) for s in webdataset_tars.samples(tar, read=kw.pop("read", ()), **kw)]


def test_split_member_is_webdatasets_base_plus_ext():
    from webdataset.tariterators import base_plus_ext

    for name in NAMES + ["a.b/c", "a/b", "/abs/k.jpg", "k.", ".", "a/.b.c"]:
        want = base_plus_ext(name)
        assert webdataset_tars.split_member(name) == (None if want == (None, None) else want), name


@pytest.mark.parametrize("mode", ["r|", "r:"])
def test_samples_are_the_ones_webdataset_reads(mode):
    from webdataset.tariterators import group_by_keys, tar_file_expander

    data = make_tar(NAMES)
    theirs = [({k: v for k, v in s.items() if not k.startswith("__")}, s["__key__"])
              for s in group_by_keys(tar_file_expander([{"stream": io.BytesIO(data), "url": "t"}]))]
    mine = ours(data, mode, read=("jpg", "json", "txt", "png", "cls", "dot", "seg.json", "tar.gz"))
    assert [(key, files) for files, key in theirs] == mine
    keys = [k for k, _ in mine]
    assert keys == ["a/000001", "000002", "__meta__", "d/", "x.y/z", "000003", "k1", "k2", "k1"]
    assert mine[0][1] == {"jpg": b"a/000001.jpg", "json": b"a/000001.json", "txt": b"a/000001.TXT"}


def test_only_the_extensions_asked_for_are_read_and_every_member_is_listed():
    data = make_tar(["s.jpg", "s.json", "s.txt"])
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        (sample,) = list(webdataset_tars.samples(tar, read=("json",)))
    assert sample.data == {"json": b"s.json"}
    assert list(sample.members) == ["jpg", "json", "txt"] and sample.members["jpg"].size == len(b"s.jpg")


def test_wanted_keys_only_and_reading_stops_when_they_are_served():
    names = [f"{i:03d}.jpg" for i in range(6)]
    data = make_tar(names)
    got = ours(data, read=("jpg",), wanted={"001", "003"})
    assert got == [("001", {"jpg": b"001.jpg"}), ("003", {"jpg": b"003.jpg"})]
    # the tar is cut after 004's header: a reader that went on would fail
    cut = data[:data.index(b"004.jpg") + 512]
    assert ours(cut, read=("jpg",), wanted={"001", "003"}) == got
    with pytest.raises(tarfile.ReadError):
        ours(cut, read=("jpg",))


def test_member_key_falls_back_to_the_name():
    assert webdataset_tars.member_key("a/b.c.d") == "a/b"
    assert webdataset_tars.member_key("noext") == "noext"
    assert webdataset_tars.is_meta("__index__") and webdataset_tars.is_meta("__meta__/x.json")
    assert not webdataset_tars.is_meta("__meta__.json") and not webdataset_tars.is_meta("a/__x__")


def test_patterns_expand_as_webdataset_expands_them():
    assert webdataset_tars.expand_patterns("s/{000..002}.tar::t/{8..9}.tar") == [
        "s/000.tar", "s/001.tar", "s/002.tar", "t/8.tar", "t/9.tar"]
    assert webdataset_tars.expand_patterns(["a.tar", "b/{1,3}.tar"]) == ["a.tar", "b/1.tar", "b/3.tar"]
    assert webdataset_tars.expand_patterns("plain/folder") == ["plain/folder"]


def test_a_folder_among_the_patterns_gives_its_tars_and_an_empty_one_is_named(tmp_path):
    """list_tars: the one folder rule of the shard checker and the trainer: a folder's .tar/.tgz
    files sorted, a writer's hidden temporary files and other files left out, a folder with none
    named; files and brace patterns kept as given."""
    shards, empty = tmp_path / "shards", tmp_path / "empty"
    shards.mkdir()
    empty.mkdir()
    for name in ("00001.tar", "00000.tar", "00002.tgz", ".00003.tar.tmp", ".00004.tar", "00000.parquet", "x.json"):
        (shards / name).write_bytes(b"")
    tars, empty_folders = webdataset_tars.list_tars([str(shards), f"{tmp_path}/more/{{0..1}}.tar::{empty}"])
    assert tars == [str(shards / "00000.tar"), str(shards / "00001.tar"), str(shards / "00002.tgz"),
                    f"{tmp_path}/more/0.tar", f"{tmp_path}/more/1.tar"]
    assert empty_folders == [str(empty)]
    assert webdataset_tars.tars_in(str(shards), (".tar",)) == [str(shards / "00000.tar"), str(shards / "00001.tar")]
    assert webdataset_tars.is_folder("gs://bucket/shards") and not webdataset_tars.is_folder("gs://bucket/0.tar")
    assert not webdataset_tars.is_folder(str(shards / "00000.tar"))
