"""Evaluation test sets: list their images and read them lazily. The contamination check
(dedup/hashed_test_sets.py hashes them) and the trainer's zero-shot evaluation read them here.

A test set is named on the command line as `name=PATH` (`--test-set cifar10=data/cifar10_test`).
PATH is one of:

    an image folder        class-per-subfolder (ImageNet-style `n01440764/x.JPEG`, or `cat/1.png`:
                           the label is the first folder), or flat (no label); nested folders are
                           walked; id = the path relative to the folder ('cat/1.png')
    WebDataset shards      a .tar, a folder of .tar files, a brace pattern ('test-{0000..0009}.tar')
                           or 'a.tar::b.tar'; id = the sample key, label from a `cls` member or the
                           `label`/`cls`/`class` field of a `json` member
    a parquet file         (or a folder of them) with image bytes (a binary column, or a Hugging Face
                           style struct {bytes, path}) or image paths (relative to the parquet's
                           folder); column names configurable (Columns), defaults tried in order

Images are read only when hashed or shown (an ImageRef says where the bytes are: a file, a tar
member's offset and size, a parquet cell). An image that cannot be listed or decoded is counted and
named in `TestSet.unreadable`, never an exception.

    test_set = load_test_set("cifar10", "data/cifar10_test")
    test_set.images[i].ref.read()   # the encoded bytes of one image
"""
from __future__ import annotations

import functools
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from typing import Sequence

from clipdata.pipeline.foundation import webdataset_tars

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm", "pbm",
                    "jfif", "jpe")
LABEL_FIELDS = ("label", "cls", "class", "target", "labels")

class TestSetError(Exception):
    """A test set that cannot be read at all (no such path, no images, missing columns)."""


@dataclass(frozen=True)
class Columns:
    """Parquet column names; None tries the defaults in order."""

    image: str | None = None
    path: str | None = None
    id: str | None = None
    label: str | None = None

    DEFAULT_IMAGE = ("image", "img", "jpg", "png", "webp", "image_bytes", "bytes")
    DEFAULT_PATH = ("path", "image_path", "file", "filename", "file_name", "filepath")
    DEFAULT_ID = ("id", "key", "__key__", "image_id")
    DEFAULT_LABEL = LABEL_FIELDS


@dataclass(frozen=True)
class ImageRef:
    """Where one image's encoded bytes are.

    kind "file": the file at `path`; "tar": `size` bytes at `offset` of the tar at `path`;
    "parquet": row `offset` of `column` in the parquet at `path`; "missing": a listed sample with
    no image (`column` says why), which reads as an error.
    """

    kind: str
    path: str
    offset: int = 0
    size: int = 0
    column: str = ""

    def read(self) -> bytes:
        if self.kind == "file":
            with _open(self.path) as f:
                return f.read()
        if self.kind == "tar":
            with _open(self.path) as f:
                f.seek(self.offset)
                data = f.read(self.size)
            if len(data) != self.size:
                raise OSError(f"{self.path}: member at {self.offset} is cut short "
                              f"({len(data)} of {self.size} bytes)")
            return data
        if self.kind == "parquet":
            value = _parquet_column(self.path, self.column)[self.offset].as_py()
            if isinstance(value, dict):  # Hugging Face's Image feature: {bytes, path}
                if value.get("bytes"):
                    return value["bytes"]
                if value.get("path"):
                    return ImageRef("file", _beside(self.path, value["path"])).read()
                raise ValueError("image cell holds neither bytes nor a path")
            if not value:
                raise ValueError("empty image cell")
            return bytes(value)
        if self.kind == "missing":
            raise ValueError(self.column)
        raise ValueError(f"unknown image reference kind {self.kind!r}")


@dataclass(frozen=True)
class TestImage:
    id: str
    label: str | None
    ref: ImageRef

    def read(self) -> bytes:
        return self.ref.read()


@dataclass
class TestSet:
    name: str
    path: str
    format: str                                  # folder | webdataset | parquet
    images: list[TestImage]                      # every listed image, readable or not
    unreadable: list[dict] = field(default_factory=list)   # {"id", "error"}: images not decoded
    file_errors: list[dict] = field(default_factory=list)  # {"file", "error"}: files cut short
    classes: dict[str, str] | None = None        # label -> class text (a classes.json beside the images)

    @property
    def size(self) -> int:
        """Every image the set lists, readable or not: the denominator of the overlap %."""
        return len(self.images)


# ---------------------------------------------------------------------------------------------
# Naming and listing


def parse_test_set_arg(text: str) -> tuple[str, str]:
    """'cifar10=PATH' -> ('cifar10', 'PATH')."""
    name, sep, path = text.partition("=")
    name = name.strip()
    if not sep or not name or not path:
        raise ValueError(f"a test set is given as NAME=PATH, got {text!r}")
    if not re.match(r"^[A-Za-z0-9_.\-]+$", name):
        raise ValueError(f"test set name {name!r}: use letters, digits, '_', '-', '.'")
    return name, path


def load_test_set(name: str, path: str, columns: Columns = Columns()) -> TestSet:
    """List a test set's images (nothing is decoded); the format is told from the path."""
    fmt, paths = _detect(path)
    if fmt == "folder":
        test_set = _list_folder(name, path)
    elif fmt == "webdataset":
        test_set = _list_webdataset(name, path, paths)
    else:
        test_set = _list_parquet(name, path, paths, columns)
    if not test_set.images and not test_set.file_errors:
        raise TestSetError(f"test set {name}: no images found in {path}")
    return test_set


def _detect(path: str) -> tuple[str, list[str]]:
    if "::" in path or re.search(r"\{.*\.\..*\}", path) or _ext(path) == "tar":
        return "webdataset", _expand_tars(path)
    if _ext(path) == "parquet":
        if not _exists(path):
            raise TestSetError(f"{path} does not exist")
        return "parquet", [path]
    if not os.path.isdir(path):
        raise TestSetError(f"{path} is not a folder, a .tar, a brace pattern of tars or a .parquet file")
    names = _walk(path)
    if any(_ext(n) in IMAGE_EXTENSIONS for n in names):
        return "folder", []
    tars = [n for n in names if _ext(n) == "tar"]
    if tars:
        return "webdataset", [os.path.join(path, n) for n in tars]
    parquets = [n for n in names if _ext(n) == "parquet"]
    if parquets:
        return "parquet", [os.path.join(path, n) for n in parquets]
    raise TestSetError(f"{path}: no images, .tar or .parquet files in it")


def _ext(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base else ""


def _walk(folder: str) -> list[str]:
    """Relative posix paths of the files under folder, hidden ones skipped, sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(root, folder)
        for name in files:
            if not name.startswith("."):
                found.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
    return sorted(found)


def _list_folder(name: str, folder: str) -> TestSet:
    images = []
    for rel in _walk(folder):
        if _ext(rel) not in IMAGE_EXTENSIONS:
            continue
        label = rel.split("/", 1)[0] if "/" in rel else None
        images.append(TestImage(rel, label, ImageRef("file", os.path.join(folder, rel))))
    return TestSet(name, folder, "folder", images, classes=_classes_beside(folder))


def _classes_beside(folder: str) -> dict[str, str] | None:
    path = os.path.join(folder, "classes.json")
    try:
        with open(path, encoding="utf-8") as f:
            classes = json.load(f)
        return {str(k): str(v) for k, v in classes.items()} if isinstance(classes, dict) else None
    except (OSError, ValueError):
        return None


def _expand_tars(path: str) -> list[str]:
    tars = []
    for one in webdataset_tars.expand_patterns(path):
        if os.path.isdir(one):
            tars.extend(os.path.join(one, n) for n in _walk(one) if _ext(n) == "tar")
        else:
            tars.append(one)
    return tars


def _list_webdataset(name: str, path: str, tars: list[str]) -> TestSet:
    samples: list[tuple[str, dict]] = []   # (tar, sample dict of ext -> (offset, size) / label)
    file_errors = []
    for tar_path in tars:
        try:
            _scan_tar(tar_path, samples)
        except (OSError, tarfile.TarError, EOFError) as err:
            # The samples read before the break stand; the tar itself is named.
            file_errors.append({"file": tar_path, "error": f"unreadable tar: {err}"})
    keys = [s["__key__"] for _, s in samples]
    unique = len(set(keys)) == len(keys)
    images = []
    for tar_path, sample in samples:
        sid = sample["__key__"] if unique else f"{os.path.basename(tar_path)}/{sample['__key__']}"
        image_ext = next((e for e in IMAGE_EXTENSIONS if e in sample["members"]), None)
        if image_ext is None:
            ref = ImageRef("missing", tar_path, column=f"no image member (has {sorted(sample['members'])})")
        else:
            offset, size = sample["members"][image_ext]
            ref = ImageRef("tar", tar_path, offset, size)
        images.append(TestImage(sid, sample.get("label"), ref))
    return TestSet(name, path, "webdataset", images, file_errors=file_errors)


def _scan_tar(tar_path: str, samples: list) -> None:
    with _open(tar_path) as f, tarfile.open(fileobj=f, mode="r:") as tar:
        for sample in webdataset_tars.samples(tar, read=("cls", "json")):
            entry = {"__key__": sample.key,
                     "members": {ext: (m.offset_data, m.size) for ext, m in sample.members.items()}}
            for ext in sample.members:           # the first label, in archive order
                label = _label_of(ext, sample.data[ext]) if ext in sample.data else None
                if label is not None:
                    entry["label"] = label
                    break
            samples.append((tar_path, entry))


def _label_of(ext: str, data: bytes) -> str | None:
    try:
        text = data.decode("utf-8").strip()
        if ext == "cls":
            return text or None
        meta = json.loads(text)
        if isinstance(meta, dict):
            for name in LABEL_FIELDS:
                if meta.get(name) is not None and not isinstance(meta[name], (dict, list)):
                    return str(meta[name])
    except (UnicodeDecodeError, ValueError):
        pass
    return None


def _list_parquet(name: str, path: str, files: list[str], columns: Columns) -> TestSet:
    import pyarrow.parquet as pq

    images, file_errors = [], []
    ids_seen: set[str] = set()
    for file in files:
        try:
            with _open(file) as f:
                schema = pq.read_schema(f)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
            file_errors.append({"file": file, "error": f"unreadable parquet: {err}"})
            continue
        present = schema.names
        image_col = _pick(columns.image, Columns.DEFAULT_IMAGE, present)
        path_col = _pick(columns.path, Columns.DEFAULT_PATH, present)
        if image_col is None and path_col is None:
            raise TestSetError(
                f"{file}: no image column (tried {columns.image or ', '.join(Columns.DEFAULT_IMAGE)}) "
                f"and no path column (tried {columns.path or ', '.join(Columns.DEFAULT_PATH)}); "
                f"columns are {', '.join(present)} (set --image-col or --path-col)")
        id_col = _pick(columns.id, Columns.DEFAULT_ID, present)
        label_col = _pick(columns.label, Columns.DEFAULT_LABEL, present)
        wanted = [c for c in dict.fromkeys([id_col, label_col, path_col]) if c]
        with _open(file) as f:
            table = pq.read_table(f, columns=wanted)
        ids = table.column(id_col).to_pylist() if id_col else None
        labels = table.column(label_col).to_pylist() if label_col else None
        paths = table.column(path_col).to_pylist() if path_col else None
        prefix = "" if len(files) == 1 else os.path.basename(file) + "/"
        for row in range(table.num_rows):
            if ids is not None and ids[row] is not None:
                sid = str(ids[row])
            elif paths is not None and paths[row]:
                sid = str(paths[row])
            else:
                sid = f"{prefix}{row}"
            if sid in ids_seen:
                sid = f"{prefix}{sid}#{row}"
            ids_seen.add(sid)
            label = None if labels is None or labels[row] is None else str(labels[row])
            if image_col is not None:
                ref = ImageRef("parquet", file, row, 0, image_col)
            elif paths[row]:
                ref = ImageRef("file", _beside(file, str(paths[row])))
            else:
                ref = ImageRef("missing", file, column=f"empty {path_col!r} cell")
            images.append(TestImage(sid, label, ref))
    return TestSet(name, path, "parquet", images, file_errors=file_errors)


def _pick(given: str | None, defaults: Sequence[str], present: list[str]) -> str | None:
    if given is not None:
        if given not in present:
            raise TestSetError(f"column {given!r} not found; columns are {', '.join(present)}")
        return given
    return next((c for c in defaults if c in present), None)


def _beside(parquet_path: str, image_path: str) -> str:
    if "://" in image_path or os.path.isabs(image_path):
        return image_path
    return os.path.join(os.path.dirname(parquet_path), image_path)


@functools.lru_cache(maxsize=4)
def _parquet_column(path: str, column: str):
    """One column of a test-set parquet, kept while its images are read (a few at a time)."""
    import pyarrow.parquet as pq

    with _open(path) as f:
        return pq.read_table(f, columns=[column]).column(column).combine_chunks()


def _open(path: str):
    if "://" in path:
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return open(path, "rb")


def _exists(path: str) -> bool:
    if "://" in path:
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.exists(path)
    return os.path.exists(path)
