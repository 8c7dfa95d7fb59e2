"""WebDataset tars: which files a user's shard pattern names, and the samples in one tar, read
the one way every stage reads them.

A shard pattern is webdataset's (and OpenCLIP's --train-data): brace ranges and `::` between
runs, `shards/{00000..00009}.tar::more/{0..3}.tar`. expand_patterns gives its paths, is_folder
and tars_in say what a folder among them holds (locally or on any Beam file system), and
list_tars does both for the stages that want a list of tars. What else a stage makes of a path (a
glob matched, tars paired with their parquets, a missing file reported) is the stage's.

A WebDataset sample is a run of consecutive tar members sharing a key: the member's path up to
the first dot of its file name (`a/000001.jpg` and `a/000001.json` are sample `a/000001`, with
extensions `jpg` and `json`). That is webdataset's own rule (webdataset.tariterators'
base_plus_ext and its metadata skip; tests/pipeline/foundation/test_webdataset_tars.py checks that they agree), written
here once so that reading a shard needs neither webdataset nor the torch it imports. The dedup
stage (training and test shards, the blocklist), the download's retry and the shard checker
all use it; the trainer reads through webdataset itself.

    with tarfile.open(fileobj=f, mode="r|") as tar:
        for sample in samples(tar, read=("jpg", "json")):
            sample.key, sample.members["jpg"].size, sample.data["json"]
"""
from __future__ import annotations

import re
import tarfile
from typing import Collection, Iterable, Iterator, NamedTuple

KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")   # webdataset's base_plus_ext
META = re.compile(r"__[^/]*__($|/)")                    # webdataset's skip_meta


def expand_patterns(patterns: str | Iterable[str]) -> list[str]:
    """The paths a shard pattern (or several) names, in order: each split at `::`, each part
    brace-expanded as webdataset does (braceexpand, the library webdataset uses)."""
    import braceexpand

    if isinstance(patterns, str):
        patterns = [patterns]
    return [path for pattern in patterns for part in str(pattern).split("::")
            for path in braceexpand.braceexpand(part)]


TAR_SUFFIXES = (".tar", ".tgz", ".tar.gz")


def is_folder(path: str, file_suffixes: tuple[str, ...] = TAR_SUFFIXES) -> bool:
    """A local folder; on an object store (gs://, s3://, where folders are only prefixes) any path
    that does not end like one of the files a stage reads."""
    import os

    if "://" in str(path):
        return not str(path).endswith(file_suffixes)
    return os.path.isdir(path)


def tars_in(folder: str, suffixes: tuple[str, ...] = TAR_SUFFIXES) -> list[str]:
    """A folder's tar files, sorted by name; names starting with "." (a writer's temporary files)
    are not shards. Listed through storage.py, locally or on any Beam file system."""
    from clipdata.pipeline.foundation.storage import storage_for

    storage = storage_for(folder)
    return [storage.join(folder, name) for name in storage.list(folder)
            if name.endswith(suffixes) and not name.startswith(".")]


def list_tars(patterns: str | Iterable[str]) -> tuple[list[str], list[str]]:
    """(tars, folders that hold none): each pattern expanded (expand_patterns), each folder among
    the paths replaced by its tars (tars_in); other paths are kept as given."""
    tars, empty = [], []
    for path in expand_patterns(patterns):
        if is_folder(path):
            found = tars_in(path)
            tars.extend(found)
            if not found:
                empty.append(path)
        else:
            tars.append(path)
    return tars, empty


def is_meta(name: str) -> bool:
    """webdataset's own metadata members (`__index__`, `__meta__/...`): not samples."""
    return ("/" not in name and name.startswith("__") and name.endswith("__")) or bool(META.match(name))


def split_member(name: str) -> tuple[str, str] | None:
    """(key, extension as written) of a member name, or None where webdataset finds no key (no
    dot in the file name, or one only at its start)."""
    match = KEY_EXT.match(name)
    return (match.group(1), match.group(2)) if match else None


def member_key(name: str) -> str:
    """The sample key of a member; a member that has none is its own key."""
    split = split_member(name)
    return split[0] if split else name


class TarSample(NamedTuple):
    key: str
    members: dict[str, tarfile.TarInfo]   # lower-case extension -> member, in archive order
    data: dict[str, bytes]                # the members of the extensions asked for, read


def samples(tar: tarfile.TarFile, read: Collection[str] = (), wanted: Collection[str] | None = None
            ) -> Iterator[TarSample]:
    """The samples of an open tar (stream "r|" or seekable "r:"), in archive order: regular-file
    members with a key, metadata skipped, extensions lower-cased (as webdataset does; a repeated
    extension keeps its last member). `read`: the extensions whose bytes are read as the members
    stream past (a stream can only be read at the member it is on). `wanted`: only those keys,
    and reading stops once each has been seen whole. A key that comes back after another sample
    (a split sample) is yielded again, as webdataset does, unless `wanted` was already served."""
    read = {ext.lower() for ext in read}
    left = None if wanted is None else set(wanted)
    current: TarSample | None = None
    for member in tar:
        if not member.isfile() or is_meta(member.name):
            continue
        split = split_member(member.name)
        if split is None:
            continue
        key, ext = split[0], split[1].lower()
        if current is None or key != current.key:
            if current is not None:
                yield current
                if left is not None:
                    left.discard(current.key)
                    if not left:
                        return
            current = TarSample(key, {}, {}) if left is None or key in left else None
            if current is None:
                continue
        current.members[ext] = member
        if ext in read:
            current.data[ext] = tar.extractfile(member).read()
    if current is not None:
        yield current
