"""Check WebDataset tar shards (ours, img2dataset's, anyone's) for what makes consumers fail or hang.

    clipdata shards check shards/                        # every *.tar in a folder
    clipdata shards check 'shards/{00000..00099}.tar'    # a brace pattern (also 'a.tar::b.tar')
    clipdata shards check one.tar two.tar

prints one line per problem, `shard<TAB>key<TAB>kind<TAB>detail`, then a summary line on stderr;
exit status 1 if there is any problem, 0 if every shard is clean.

A shard is read the way webdataset reads it (tarfile in streaming mode; a member's key is its name
up to the first dot of the file name, its extension the rest, lower-cased; consecutive members with
one key make a sample), and every place where that reading differs from what the writer meant is a
problem. Kinds:

    dotted_key           'a.b.jpg' is key 'a', extension 'b.jpg' to webdataset: the sample has no
                         'jpg' or 'txt' field; OpenCLIP drops it, and workers given only such shards
                         spin forever without an error (open_clip issues #569, #1016)
    split_sample         a key's members are not adjacent: webdataset yields partial samples
    duplicate_key        a key (or one member of it) appears twice
    missing_text         a sample without 'txt': OpenCLIP drops it (and can spin forever, as above)
    missing_image        a sample without jpg/jpeg/png/webp, the images OpenCLIP reads
    empty_image          a zero-byte image member: decoding it fails
    uppercase_extension  '.JPG': webdataset and OpenCLIP lower-case extensions, case-sensitive readers
                         do not
    unknown_extension    an extension no common webdataset decoder knows (consumers ignore it)
    bad_name             a member name webdataset cannot split into key and extension (skipped)
    not_a_file           a directory, link or device member (webdataset skips it)
    truncated            the tar ends mid-member or without its end-of-archive blocks
    corrupt              an unreadable header or compressed stream: everything after it is lost
    empty                a zero-byte file (a well-formed tar with no member is fine)
    not_found            a path that does not exist, or a folder without .tar files
"""
from __future__ import annotations

import argparse
import bz2
import collections
import gzip
import lzma
import os
import sys
import tarfile
import zlib
from dataclasses import dataclass, field

from clipdata.pipeline.foundation import webdataset_tars
from clipdata.pipeline.foundation.words import count

OPENCLIP_IMAGES = ("jpg", "jpeg", "png", "webp")  # open_clip_train: rename(image="jpg;png;jpeg;webp")
TEXT = "txt"
HANG_NOTE = ("OpenCLIP drops such samples, and its data workers spin forever without an error when a "
             "shard has no usable sample (open_clip issues #569, #1016)")

# Extensions webdataset's decoders know (autodecode: images, basichandlers, torch/audio/video ones).
KNOWN_EXTENSIONS = frozenset(
    "jpg jpeg jpe jfif png webp gif bmp tif tiff ppm pgm pbm pnm jp2 apng ico "
    "txt text json jsn cls cls2 class count index inx id pyd pickle pth ten tenbin tb "
    "mp msg msgpack npy npz cbor safetensors "
    "mp4 m4v ogv mjpeg avi mov mkv webm wav flac mp3 m4a ogg opus".split()
)

_COMPRESSED = ((b"\x1f\x8b", gzip.GzipFile), (b"BZh", bz2.BZ2File), (b"\xfd7zXZ\x00", lzma.LZMAFile))


@dataclass
class Problem:
    """One thing wrong with a shard; key is '' when it is about the whole shard."""

    shard: str
    key: str
    kind: str
    detail: str

    def line(self) -> str:
        return f"{self.shard}\t{self.key or '-'}\t{self.kind}\t{self.detail}"


@dataclass
class ShardScan:
    """What reading one shard found: member and sample counts, and its problems."""

    shard: str
    members: int = 0
    samples: int = 0
    problems: list[Problem] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# One shard


def check_shard(path: str) -> list[Problem]:
    """Problems of one tar shard (plain, .gz, .bz2 or .xz; local or any Beam file system)."""
    return scan_shard(path).problems


def scan_shard(path: str) -> ShardScan:
    scan = ShardScan(str(path))
    report = lambda key, kind, detail: scan.problems.append(Problem(str(path), key, kind, detail))  # noqa: E731
    if not _exists(path):
        report("", "not_found", "no such file")
        return scan

    samples = _SampleTracker(report)
    last_name = None
    try:
        with _open_tar_stream(path) as stream:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for info in tar:
                    tar.members = []  # streaming: keep no member list (webdataset does the same)
                    scan.members += 1
                    last_name = info.name
                    _check_member(info, samples, report)
                end_offset = tar.offset
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as err:
        _report_broken(err, last_name, report, scan.members)
    else:
        _check_end_of_archive(path, end_offset, last_name, report, scan.members)

    # The sample a cut or garbled stream ended in is incomplete because of that, already reported.
    broke = {p.key for p in scan.problems if p.kind in ("truncated", "corrupt")}
    samples.finish(skip=broke)
    scan.samples = len(samples.keys)
    return scan


def _check_member(info: tarfile.TarInfo, samples: "_SampleTracker", report) -> None:
    name = info.name
    if not info.isreg():
        kind = "directory" if info.isdir() else "link" if info.issym() or info.islnk() else "special file"
        report(name, "not_a_file", f"{kind} member `{name}`: webdataset skips it")
        return
    if webdataset_tars.is_meta(name):
        return  # webdataset's own metadata members, skipped by readers by design
    base = name.rsplit("/", 1)[-1]
    split = webdataset_tars.split_member(name)
    if split is None:
        why = "starts with a dot" if base.startswith(".") else "has no extension"
        report(name, "bad_name", f"`{name}` {why}: webdataset finds no key in it and skips it")
        return
    key, ext = split
    if base.count(".") >= 2:
        meant = name.rsplit(".", 1)[0]
        samples.dotted(key, meant, name, ext)
        return
    if ext != ext.lower():
        report(key, "uppercase_extension",
               f"`{name}`: webdataset and OpenCLIP lower-case it to `.{ext.lower()}`, "
               "case-sensitive readers miss it")
    if ext.lower() not in KNOWN_EXTENSIONS:
        report(key, "unknown_extension", f"`{name}`: `.{ext}` is not a format webdataset decodes; "
               "consumers ignore this member")
    if ext.lower() in OPENCLIP_IMAGES and info.size == 0:
        report(key, "empty_image", f"`{name}` is empty: decoding it fails")
    samples.add(key, ext.lower(), name)


class _SampleTracker:
    """Groups members into samples as webdataset does, and remembers each key's fragments."""

    def __init__(self, report):
        self.report = report
        self.keys: dict[str, list[set[str]]] = {}  # key -> the extension set of each fragment
        self.current: str | None = None
        self.dotted_keys: dict[str, None] = {}
        self.reported: set[tuple[str, str]] = set()

    def once(self, key: str, kind: str, detail: str) -> None:
        if (key, kind) not in self.reported:
            self.reported.add((key, kind))
            self.report(key, kind, detail)

    def add(self, key: str, ext: str, name: str) -> None:
        fragments = self.keys.setdefault(key, [])
        if key != self.current:
            fragments.append(set())
            self.current = key
        if ext in fragments[-1]:
            self.once(key, "duplicate_key", f"`{name}` appears twice in one sample: webdataset raises "
                      "'duplicate file name' (the sample is lost), OpenCLIP starts a new sample")
        fragments[-1].add(ext)

    def dotted(self, key: str, meant: str, name: str, ext: str) -> None:
        self.current = None
        self.dotted_keys.setdefault(key, None)
        self.once(meant, "dotted_key", f"`{name}` is key `{key}`, extension `{ext}` to webdataset "
                  f"(the key ends at the first dot): the sample has no `jpg`/`txt` field; {HANG_NOTE}")

    def finish(self, skip: set[str] = frozenset()) -> None:
        for key, fragments in self.keys.items():
            if len(fragments) > 1:
                counts = collections.Counter(ext for fragment in fragments for ext in fragment)
                if any(n > 1 for n in counts.values()):
                    self.once(key, "duplicate_key", f"key appears {len(fragments)} times: readers yield "
                              "it more than once")
                else:
                    self.once(key, "split_sample", f"members are not adjacent: webdataset yields "
                              f"{len(fragments)} partial samples ({' | '.join(_exts(f) for f in fragments)}) "
                              f"and OpenCLIP drops those without both image and text")
            if key in self.dotted_keys or key in skip:
                continue  # its members were reported as dotted keys, or the tar broke inside it
            have = set().union(*fragments)
            if TEXT not in have:
                self.once(key, "missing_text", f"sample has {_exts(have)} but no `txt`: {HANG_NOTE}")
            if not have & set(OPENCLIP_IMAGES):
                other = sorted(have - {TEXT, "json"})
                hint = f" (`{other[0]}` is not one OpenCLIP reads)" if other else ""
                self.once(key, "missing_image", f"sample has {_exts(have)} but no jpg/jpeg/png/webp{hint}")


def _exts(exts) -> str:
    return ",".join(sorted(exts)) or "nothing"


def _report_broken(err: Exception, last_name: str | None, report, members: int) -> None:
    where = f"in or after member `{last_name}` (member {members})" if last_name else "before the first member"
    message = str(err) or type(err).__name__
    if isinstance(err, tarfile.ReadError) and message == "empty file":
        report("", "empty", "zero-byte file: no tar header at all")
    elif isinstance(err, EOFError) or "unexpected end" in message or "ended before" in message:
        report(_key_of(last_name), "truncated", f"the file ends {where} ({message}): readers stop "
               "with an error there; was the writer killed?")
    else:
        report(_key_of(last_name), "corrupt", f"unreadable {where} ({message}); readers stop there")


def _check_end_of_archive(path: str, offset: int, last_name: str | None, report, members: int) -> None:
    """tarfile (and webdataset) stop silently at a cut or garbled header: look at what is there."""
    with _open_tar_stream(path) as stream:
        _skip(stream, offset)
        block = stream.read(512)
    after = f"after member `{last_name}`" if last_name else "at the start"
    if len(block) < 512:
        if members == 0 and offset == 0 and not block:
            report("", "empty", "zero-byte file: no tar header at all")
            return
        report(_key_of(last_name), "truncated", f"the file ends {after} without tar's end-of-archive "
               "blocks: readers see the samples before this point and no error (was the writer killed?)")
    elif block.strip(b"\0"):
        report(_key_of(last_name), "corrupt", f"unreadable header at byte {offset} {after}: tarfile and "
               "webdataset stop here without an error, and every member after it is lost")
    # A well-formed tar with no member is not a problem: it is what a shard whose every download
    # failed looks like, and readers simply get no sample from it.


def _key_of(name: str | None) -> str:
    return webdataset_tars.member_key(name) if name else ""


# ---------------------------------------------------------------------------------------------
# Files: local or Beam's FileSystems, decompressed by their first bytes


def _is_remote(path: str) -> bool:
    return "://" in str(path)


def _exists(path: str) -> bool:
    if _is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.exists(path)
    return os.path.isfile(path)


def _open_raw(path: str):
    if _is_remote(path):
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return open(path, "rb")


def _open_tar_stream(path: str):
    """The tar bytes of `path`, decompressed when it starts with a gzip, bzip2 or xz magic."""
    with _open_raw(path) as f:
        magic = f.read(6)
    raw = _open_raw(path)
    for prefix, opener in _COMPRESSED:
        if magic.startswith(prefix):
            return opener(fileobj=raw, mode="rb")
    return raw


def _skip(stream, offset: int) -> None:
    try:
        stream.seek(offset)
        return
    except (OSError, ValueError, AttributeError):
        pass
    while offset > 0:
        chunk = stream.read(min(offset, 1 << 20))
        if not chunk:
            return
        offset -= len(chunk)


# ---------------------------------------------------------------------------------------------
# Many shards


def expand_paths(paths: list[str]) -> tuple[list[str], list[Problem]]:
    """Shard paths from tars, folders of tars and brace patterns ('{00000..00009}.tar', 'a::b')."""
    shards, empty = webdataset_tars.list_tars(paths)
    return shards, [Problem(folder, "", "not_found", "folder has no .tar files") for folder in empty]


def check_paths(paths: list[str]) -> list[Problem]:
    """Problems of every shard that `paths` name (see expand_paths), path problems first."""
    scans, problems = scan_paths(paths)
    return problems + [p for scan in scans for p in scan.problems]


def scan_paths(paths: list[str]) -> tuple[list[ShardScan], list[Problem]]:
    """Scan every shard that `paths` name; also returns the problems of the paths themselves."""
    shards, problems = expand_paths(paths)
    return [scan_shard(path) for path in shards], problems


# ---------------------------------------------------------------------------------------------
# Command line


def add_commands(subparsers) -> None:
    """Register `clipdata shards check` (the lead's pipeline/cli.py calls this)."""
    shards = subparsers.add_parser("shards", help="check WebDataset shards for what makes consumers hang")
    verbs = shards.add_subparsers(dest="verb", required=True, metavar="VERB")
    check = verbs.add_parser(
        "check",
        help="check tar shards: dotted keys, split samples, missing text/image, truncation, ...",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_check_arguments(check)
    check.set_defaults(handler=run_check_command, beam=False)


def _add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="a .tar, a folder of .tar files, or a brace pattern like '{00000..00009}.tar'")
    parser.add_argument("--max-per-kind", type=int, default=10, metavar="N",
                        help="print at most N problems of one kind per shard, then a count "
                        "(default: %(default)s; 0 prints all)")


def run_check_command(args, extra=None, out=None, err=None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    scans, path_problems = scan_paths(args.paths)
    problems = path_problems + [p for scan in scans for p in scan.problems]
    shown: collections.Counter = collections.Counter()
    hidden: collections.Counter = collections.Counter()
    for problem in problems:
        slot = (problem.shard, problem.kind)
        if args.max_per_kind and shown[slot] >= args.max_per_kind:
            hidden[slot] += 1
            continue
        shown[slot] += 1
        print(problem.line(), file=out)
    for (shard, kind), n in hidden.items():
        print(f"{shard}\t-\t{kind}\t{n:,} more not shown (--max-per-kind 0 shows all)", file=out)
    print(summary(scans, problems), file=err)
    return 1 if problems else 0


def summary(scans: list[ShardScan], problems: list[Problem]) -> str:
    # a path that is not there was not checked: it is one of the problems
    read = [s for s in scans if not any(p.kind == "not_found" for p in s.problems)]
    head = f"checked {count(len(read), 'shard')}, {count(sum(s.samples for s in read), 'sample')}"
    if not problems:
        return f"{head}: clean"
    by_kind = collections.Counter(p.kind for p in problems)
    bad = len({p.shard for p in problems})
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in by_kind.most_common())
    return f"{head}: {count(len(problems), 'problem')} in {count(bad, 'path')} ({kinds})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clipdata shards check", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_check_arguments(parser)
    return run_check_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
