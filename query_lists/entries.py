"""Loading and saving a query list: the file every other stage reads.

An entry's id is its position: the 0-based line number of a text list, the index in a JSON list.
Two formats:
  - text (any name not ending in .json): UTF-8, one entry per line, `\\n` or `\\r\\n` endings;
  - JSON (`*.json`): a list of strings, as MetaCLIP publishes its metadata.json.
Either may be compressed (.gz, .bz2, ... detected by extension), and paths go through Beam's
FileSystems, so gs://, s3:// and hdfs:// work.

A worldwide list (MetaCLIP 2: one list per language) is a manifest, `manifest.json`: a JSON object
`{"languages": {"en": "en/queries.txt", "de": "de/queries.txt", ...}}`, each path relative to the
manifest's folder (or absolute); `load_manifest` reads it, `is_manifest` tells it from a list.

Entries are matched literally (MetaCLIP's rule tests `" " + entry + " "` inside the padded
caption), so nothing is stripped but the line ending. What makes a list unusable is refused with
the line or index that caused it:
  - an empty entry (it would match every caption);
  - an entry containing `\\n` or `\\r` (it can never match a caption, whose line breaks are turned
    into spaces, and it cannot be written back as one line);
  - the same entry twice (two ids for one string: the matcher could credit only one of them).
"""
from __future__ import annotations

import bz2
import json
import os
import uuid
import zlib

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem

BOM = b"\xef\xbb\xbf"


class QueryListError(Exception):
    """A query list that cannot be loaded or saved; the message names the file and the place."""


def is_json_list(path: str) -> bool:
    """Whether `path` names a JSON list (`x.json`, also `x.json.gz`)."""
    base = path.lower()
    if CompressionTypes.detect_compression_type(base) != CompressionTypes.UNCOMPRESSED:
        base = base.rsplit(".", 1)[0]
    return base.endswith(".json")


def check_entries(entries, where: str, *, allow_empty: bool = False, allow_duplicates: bool = False,
                  unit: str = "index") -> None:
    """Raise QueryListError at the first entry that is not a usable query string.

    `unit` is how positions are named in the message: "index" (0-based) or "line" (1-based).
    """
    first_seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        place = f"{where} line {index + 1}" if unit == "line" else f"{where} index {index}"
        if not isinstance(entry, str):
            raise QueryListError(f"{place}: entry is {type(entry).__name__} {entry!r}, not a string")
        if not entry and not allow_empty:
            raise QueryListError(f"{place}: empty entry (it would match every caption)")
        if "\n" in entry or "\r" in entry:
            raise QueryListError(f"{place}: entry {entry[:80]!r} contains a line break")
        if not allow_duplicates:
            if entry in first_seen:
                first = first_seen[entry]
                first_place = f"line {first + 1}" if unit == "line" else f"index {first}"
                raise QueryListError(f"{place}: entry {entry[:80]!r} repeats {first_place}")
            first_seen[entry] = index


class CompressedFileError(OSError):
    """A .gz or .bz2 file that is corrupt or ends inside its compressed stream (a cut download)."""


def iter_chunks(path: str, chunk_size: int = 1 << 20):
    """The bytes of a file, decompressed, in chunks; opened through Beam's FileSystems.

    Beam's own reader (FileSystems.open with AUTO compression, hence also ReadFromText) returns a
    cut .gz as its readable half and a cut .bz2 as nothing, without an error. For the formats the
    sources come in, .gz and .bz2, we decompress here and raise CompressedFileError instead.
    Concatenated streams (a valid .gz/.bz2 form, e.g. multistream Wikipedia dumps) are read on.
    """
    kind = CompressionTypes.detect_compression_type(path)
    if kind == CompressionTypes.GZIP:
        new_decompressor = lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)  # noqa: E731
    elif kind == CompressionTypes.BZIP2:
        new_decompressor = bz2.BZ2Decompressor
    else:  # plain files, and the rarer formats Beam knows (.zst, .xz, .deflate)
        with FileSystems.open(path) as f:
            while chunk := f.read(chunk_size):
                yield chunk
        return
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        decompressor, empty = new_decompressor(), True
        while compressed := f.read(chunk_size):
            empty = False
            while compressed:
                if decompressor.eof:  # a stream ended; the next one starts here
                    if not compressed.strip(b"\0"):
                        break  # zero padding after the last stream, as gzip(1) allows
                    decompressor = new_decompressor()
                try:
                    chunk = decompressor.decompress(compressed)
                except (OSError, zlib.error, EOFError) as err:
                    raise CompressedFileError(f"{path}: corrupt compressed data: {err}") from None
                if chunk:
                    yield chunk
                compressed = decompressor.unused_data if decompressor.eof else b""
        if empty:
            raise CompressedFileError(f"{path}: empty file, not a compressed stream")
        if not decompressor.eof:
            raise CompressedFileError(f"{path}: file ends inside a compressed stream "
                                     f"(an incomplete download or copy?)")


def _read_bytes(path: str) -> bytes:
    try:
        return b"".join(iter_chunks(path))
    except CompressedFileError as err:
        raise QueryListError(str(err)) from None
    except Exception as err:  # Beam wraps a missing file or a refused path in BeamIOError
        raise QueryListError(f"cannot read query list {path}: {err}") from err


def _decode_text(data: bytes, path: str) -> list[str]:
    """One entry per `\\n`-terminated line; a final line without `\\n` is an entry too."""
    if data.startswith(BOM):
        data = data[len(BOM):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1)
        raise QueryListError(f"{path} line {line}: not UTF-8 at byte {column} of the line "
                             f"(byte {err.start} of the file): {data[err.start:err.start + 4]!r}") from None
    # split("\n"), not splitlines(): U+2028, \x0b, \x1c ... are characters of an entry here.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _decode_json(data: bytes, path: str) -> list:
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise QueryListError(f"{path}: not UTF-8 at byte {err.start}") from None
    except json.JSONDecodeError as err:
        raise QueryListError(f"{path} line {err.lineno} column {err.colno}: not JSON: {err.msg}") from None
    if not isinstance(value, list):
        raise QueryListError(f"{path}: expected a JSON list of strings, got a {type(value).__name__}")
    return value


def load_entries(path: str, *, allow_empty: bool = False, allow_duplicates: bool = False) -> list[str]:
    """The entries of a text or JSON query list (see the module docstring); id = position."""
    data = _read_bytes(path)
    if is_json_list(path):
        entries = _decode_json(data, path)
        check_entries(entries, path, allow_empty=allow_empty, allow_duplicates=allow_duplicates)
    else:
        entries = _decode_text(data, path)
        check_entries(entries, path, allow_empty=allow_empty, allow_duplicates=allow_duplicates,
                      unit="line")
    return entries


def save_entries(path: str, entries, *, allow_duplicates: bool = False) -> None:
    """Write a query list: one entry per line in UTF-8, or a JSON list when `path` ends in .json.

    Checked before anything is written. A local file is written under a temporary name and
    renamed, so a reader never sees half a list; object stores (gs://, s3://) publish an object
    only when it is closed.
    """
    entries = list(entries)
    check_entries(entries, path, allow_duplicates=allow_duplicates)
    if is_json_list(path):
        data = json.dumps(entries, ensure_ascii=False).encode("utf-8") + b"\n"
    else:
        data = "".join(entry + "\n" for entry in entries).encode("utf-8")
    # The compression comes from the final name: the temporary name has no .gz to detect.
    compression = CompressionTypes.detect_compression_type(path)
    if not isinstance(FileSystems.get_filesystem(path), LocalFileSystem):
        with FileSystems.create(path, compression_type=compression) as f:
            f.write(data)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # Not tempfile.mkstemp: its 0600 mode would stay on the renamed list.
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with FileSystems.create(tmp, compression_type=compression) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


MANIFEST = "manifest.json"


def is_manifest(path: str) -> bool:
    """Whether `path` is a worldwide list's manifest (a JSON object with "languages"), not a list."""
    if not is_json_list(path):
        return False
    try:
        value = json.loads(_read_bytes(path))
    except (QueryListError, ValueError):
        return False
    return isinstance(value, dict) and "languages" in value


def load_manifest(path: str) -> dict[str, str]:
    """language -> path of its list, in the manifest's order, each path resolved against the
    manifest's folder. Refuses, naming the manifest: no languages, a language code that is not a
    short lower-case name, a list that does not exist."""
    import re

    try:
        value = json.loads(_read_bytes(path))
    except ValueError as err:
        raise QueryListError(f"{path}: not a JSON manifest ({err})") from err
    languages = value.get("languages") if isinstance(value, dict) else None
    if not isinstance(languages, dict) or not languages:
        raise QueryListError(f'{path}: a manifest needs "languages": {{"en": "en/queries.txt", ...}}')
    folder = path.rsplit("/", 1)[0] if "/" in path else "."
    lists = {}
    for language, list_path in languages.items():
        if not re.fullmatch(r"[a-z]{2,3}(_[a-z]+)*|other", str(language)) or not isinstance(list_path, str):
            raise QueryListError(f"{path}: {language!r}: {list_path!r} is not a language code "
                                 "(lower-case, as Wikipedia's: en, de, zh, zh_yue) with its list's path")
        resolved = list_path if "://" in list_path or list_path.startswith("/") else FileSystems.join(folder, list_path)
        if not FileSystems.exists(resolved):
            raise QueryListError(f"{path}: the list of {language!r}, {resolved}, does not exist")
        lists[language] = resolved
    return lists
