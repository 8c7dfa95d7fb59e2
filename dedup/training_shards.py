"""The big side of `clipdata dedup`: finding the training shards a user names, and reading one
shard's per-image data (key, pHashes, stored thumbnail) from its parquet, or from its tar for
shards written before that data existed. Plain Python: the Beam steps (overlap_steps.py) call it.
"""
from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, field

import numpy as np

from clipdata.pipeline.foundation import failures, webdataset_tars
from clipdata.pipeline.foundation.storage import storage_for

TRAIN_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")

@dataclass(frozen=True)
class ShardInput:
    """One training shard: its tar and/or parquet (either may be missing)."""

    name: str
    tar: str | None
    parquet: str | None


# ---------------------------------------------------------------------------------------------
# Finding the training shards


def list_shards(patterns: list[str]) -> tuple[list[ShardInput], list[dict]]:
    """Training shards named by folders, files, globs and brace patterns ('::' joins several).

    A folder with `_stats.json` files gives its committed shards (others there are named as
    skipped); a folder without gives every tar/parquet pair by name. A .tar or .parquet path is
    paired with the file of the other kind beside it, when there is one.
    """
    found: dict[str, ShardInput] = {}
    problems: list[dict] = []
    for path in webdataset_tars.expand_patterns(patterns):
        if any(c in path for c in "*?["):
            matches = _glob(path)
            if not matches:
                problems.append({"shard": path, "error": "no file matches"})
            for match in matches:
                _add_file(match, found, problems)
        elif webdataset_tars.is_folder(path, (".tar", ".parquet")):
            _add_folder(path, found, problems)
        else:
            _add_file(path, found, problems)
    return sorted(found.values(), key=lambda s: (len(s.name), s.name)), problems


def _glob(pattern: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems

    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def _add_folder(folder: str, found: dict, problems: list) -> None:
    storage = storage_for(folder)
    names = [n for n in storage.list(folder) if not n.startswith(".")]
    stats = [n for n in names if n.endswith("_stats.json")]
    data = [n for n in names if n.endswith((".tar", ".parquet"))]
    if not stats and not data:
        problems.append({"shard": folder, "error": "no .tar, .parquet or _stats.json files"})
        return
    if stats:
        committed = set()
        for name in stats:
            stem = name[: -len("_stats.json")]
            committed.add(stem)
            tar, parquet = f"{stem}.tar", f"{stem}.parquet"
            found[storage.join(folder, stem)] = ShardInput(
                stem, storage.join(folder, tar) if tar in names else None,
                storage.join(folder, parquet) if parquet in names else None)
        for stem in sorted({n.rsplit(".", 1)[0] for n in data} - committed):
            problems.append({"shard": storage.join(folder, stem),
                             "error": "not committed (no _stats.json): skipped"})
        return
    for stem in sorted({n.rsplit(".", 1)[0] for n in data}):
        tar, parquet = f"{stem}.tar", f"{stem}.parquet"
        found[storage.join(folder, stem)] = ShardInput(
            stem, storage.join(folder, tar) if tar in names else None,
            storage.join(folder, parquet) if parquet in names else None)


def _add_file(path: str, found: dict, problems: list) -> None:
    storage = storage_for(path)
    if not path.endswith((".tar", ".parquet")):
        problems.append({"shard": path, "error": "not a .tar or .parquet file"})
        return
    if not storage.exists(path):
        problems.append({"shard": path, "error": "does not exist"})
        return
    stem_path = path.rsplit(".", 1)[0]
    tar, parquet = stem_path + ".tar", stem_path + ".parquet"
    name = stem_path.replace("\\", "/").rsplit("/", 1)[-1]
    found[stem_path] = ShardInput(name, tar if storage.exists(tar) else None,
                                  parquet if storage.exists(parquet) else None)


# ---------------------------------------------------------------------------------------------
# Reading one training shard (plain Python)


@dataclass
class TrainHashes:
    """The searchable side of one shard: a key, a 64-bit hash and the text around it per sample."""

    keys: list[str]
    codes: np.ndarray                    # uint64: the pHash of each image (training view "image")
    urls: list[str | None]
    captions: list[str | None]
    hashed_from_tar: int = 0
    errors: list[str] = field(default_factory=list)
    unreadable_images: int = 0
    centre: np.ndarray | None = None     # uint64: the "centre" view's pHash of each image (0: none)
    has_centre: np.ndarray | None = None  # bool: which images have one (shards written before it: none)
    thumbs: list[bytes | None] = field(default_factory=list)  # stored thumbnails (pipeline/foundation/thumbs.py);
                                         # None for shards written before the column existed
    thumbs_from_tar: int = 0             # thumbnails made from the tar (the parquet had none)
    original_sizes: list[tuple[int, int] | None] = field(default_factory=list)  # (original_width,
                                         # original_height) as img2dataset records them; None: not recorded

    def search_codes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hashes, image row of each, training view of each: index into hashing.TRAIN_VIEWS):
        every image's pHash, then the centre view of those that have one."""
        n = len(self.codes)
        if self.centre is None or self.has_centre is None or not self.has_centre.any():
            return self.codes, np.arange(n, dtype=np.int64), np.zeros(n, np.int64)
        rows = np.flatnonzero(self.has_centre)
        return (np.concatenate([self.codes, self.centre[rows]]),
                np.concatenate([np.arange(n, dtype=np.int64), rows]),
                np.concatenate([np.zeros(n, np.int64), np.ones(len(rows), np.int64)]))


def _open(path: str):
    return storage_for(path).open(path)


def read_train_hashes(shard: ShardInput, need_thumbs: bool = False) -> TrainHashes:
    """Keys, pHashes, thumbnails and recorded original sizes of a shard's images (both training
    views, hashing.train_views; thumbs.encode): from the parquet's phash, phash_centre and thumb columns
    when it has them; from the tar's images for samples without a phash (img2dataset's parquet,
    plain tars). Shards written before phash_centre existed are searched by their phash alone;
    those written before thumb existed get their thumbnails from the tar: here for every image
    with `need_thumbs` (the descriptor reads them all), else later for their candidates only."""
    import pyarrow.parquet as pq

    from clipdata.dedup import hashing
    from clipdata.pipeline.foundation import thumbs

    out = TrainHashes([], np.zeros(0, np.uint64), [], [])
    meta: dict[str, tuple] = {}         # key -> (url, caption, original size) from the parquet
    to_hash: set[str] | None = None     # keys to hash from the tar; None = every image there
    codes: list[int] = []
    centre: list[int] = []              # 0 where there is none
    has_centre: list[bool] = []
    if shard.parquet:
        try:
            with _open(shard.parquet) as f:
                present = pq.read_schema(f).names
            wanted = [c for c in ("key", "phash", "phash_centre", "thumb", "url", "caption", "status",
                                  "original_width", "original_height") if c in present]
            if "key" not in wanted:
                raise ValueError(f"no 'key' column (columns: {', '.join(present)})")
            with _open(shard.parquet) as f:
                table = pq.read_table(f, columns=wanted).to_pydict()
            n = len(table["key"])
            status = table.get("status") or ["success"] * n
            codes_in, valid = hashing.from_hex_many(table.get("phash") or [None] * n)
            centre_in, centre_valid = hashing.from_hex_many(table.get("phash_centre") or [None] * n)
            urls, captions = table.get("url") or [None] * n, table.get("caption") or [None] * n
            stored_thumbs = table.get("thumb") or [None] * n
            sizes = [_original_size(w, h) for w, h in zip(table.get("original_width") or [None] * n,
                                                          table.get("original_height") or [None] * n)]
            to_hash = set()
            for i in range(n):
                if status[i] != "success":
                    continue
                key = str(table["key"][i])
                meta[key] = (urls[i], captions[i], sizes[i])
                if valid[i]:
                    out.keys.append(key)
                    codes.append(int(codes_in[i]))
                    centre.append(int(centre_in[i]))
                    has_centre.append(bool(centre_valid[i]))
                    out.urls.append(urls[i])
                    out.captions.append(captions[i])
                    out.thumbs.append(stored_thumbs[i] or None)
                    out.original_sizes.append(sizes[i])
                else:  # no phash (img2dataset's parquet), or not one we can read
                    to_hash.add(key)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
            out.errors.append(f"parquet unreadable ({failures.describe(err)}); hashed the tar instead")
            out.keys, out.urls, out.captions, codes, meta, to_hash = [], [], [], [], {}, None
            centre, has_centre, out.thumbs, out.original_sizes = [], [], [], []
    if to_hash is None or to_hash:
        if not shard.tar:
            out.errors.append("no tar to hash images from" if to_hash is None
                              else f"{len(to_hash)} samples without phash and no tar to hash them from")
        else:
            try:
                for key, ext, data, sample in _tar_samples(shard.tar, to_hash):
                    try:
                        image = hashing.open_image(data)
                        views = hashing.train_views(image)
                    except ValueError:  # not an image: counted, not fatal
                        out.unreadable_images += 1
                        continue
                    url, caption, size = meta.get(key) or (sample.get("url"), sample.get("caption"), None)
                    size = size if size is not None else sample.get("original_size")   # the parquet's, else the json's
                    out.keys.append(key)
                    codes.append(views["image"])
                    centre.append(views["centre"])
                    has_centre.append(True)
                    out.urls.append(url)
                    out.captions.append(caption)
                    out.thumbs.append(thumbs.encode(image))
                    out.original_sizes.append(size)
                    out.hashed_from_tar += 1
            except (OSError, tarfile.TarError, EOFError, ValueError) as err:
                out.errors.append(f"tar unreadable after {out.hashed_from_tar} images "
                                  f"({failures.describe(err)})")
    if need_thumbs and shard.tar and any(t is None for t in out.thumbs):
        _thumbs_from_tar(shard.tar, out)
    out.codes = np.array(codes, dtype=np.uint64)
    out.centre = np.array(centre, dtype=np.uint64)
    out.has_centre = np.array(has_centre, dtype=bool)
    return out


def _thumbs_from_tar(tar_path: str, out: TrainHashes) -> None:
    """The missing thumbnails of `out`, made from the tar's images (the same bytes the download
    stored); an image that cannot be read keeps None (its pairs are left to the hashes)."""
    from clipdata.dedup import hashing
    from clipdata.pipeline.foundation import thumbs

    row = {k: i for i, k in enumerate(out.keys) if out.thumbs[i] is None}
    try:
        for key, _, data, _ in _tar_samples(tar_path, set(row)):
            try:
                out.thumbs[row[key]] = thumbs.encode(hashing.open_image(data))
                out.thumbs_from_tar += 1
            except ValueError:
                out.unreadable_images += 1
    except (OSError, tarfile.TarError, EOFError, ValueError) as err:
        out.errors.append(f"tar unreadable after {out.thumbs_from_tar} thumbnails "
                          f"({failures.describe(err)})")


def _tar_samples(tar_path: str, wanted: set[str] | None):
    """(key, image ext, image bytes, {url, caption}) per sample with an image, in tar order;
    only the `wanted` keys when given (reading stops once they are all found)."""
    with _open(tar_path) as f, tarfile.open(fileobj=f, mode="r|") as tar:
        for sample in webdataset_tars.samples(tar, read=TRAIN_IMAGE_EXTS + ("txt", "json"), wanted=wanted):
            ext = next((e for e in TRAIN_IMAGE_EXTS if e in sample.data), None)
            if ext:
                yield sample.key, ext, sample.data[ext], _sample_text(sample.data)


def _original_size(width, height) -> tuple[int, int] | None:
    """(original_width, original_height) as img2dataset records them, None unless both are
    positive whole numbers."""
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError, OverflowError):   # None, text, NaN, a json Infinity
        return None
    return (w, h) if w > 0 and h > 0 and w == width and h == height else None


def _sample_text(sample: dict) -> dict:
    out = {"url": None, "caption": None, "original_size": None}
    if "txt" in sample:
        out["caption"] = sample["txt"].decode("utf-8", errors="replace")
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
            if isinstance(meta, dict):
                out["url"] = meta.get("url")
                out["caption"] = out["caption"] if out["caption"] is not None else meta.get("caption")
                out["original_size"] = _original_size(meta.get("original_width"), meta.get("original_height"))
        except ValueError:
            pass
    return out


def read_train_images(tar_path: str, keys: set[str]) -> dict[str, bytes]:
    """The image bytes of the given keys, reading the tar once and stopping when all are found."""
    return {key: data for key, _, data, _ in _tar_samples(tar_path, keys)}
