"""`clipdata dedup`: which test-set images have a near duplicate in the training shards (CLIP §5).

The small side is indexed, the big side streamed past it, one training shard per element:

    test sets ─► views hashed (driver, process pool) ─► HashIndex built in each worker's setup()
                                                                  │
    test sets ─► copy descriptors (descriptor.py, as they are and mirrored) ─► DescriptorIndex
                 and of each hash view (a crop window's, to check a pHash match on it)
    shard list ─Reshuffle─► SearchAndScreen: key, phash and thumb from the parquet (hashed from
                            the tar when the shard has no phash) ─► range search at --radius,
                            and each thumbnail's copy descriptor against the DescriptorIndex
                            ─► candidates: cosine >= --similar, or a hash match whose matched
                            view's cosine with the training image (or its centre, for a match
                            on the centre view) is >= --similar, or identical hashes; at most
                            --per-image per training image, the most alike
                            ─► screen each on its stored thumbnail (verify.screen):
                            most unrelated candidates are rejected here, no tar opened
                                │           └─► nearest pHash distance per test image within the
                                │               radius (from the same search) ─► CombineMin
                                └─Reshuffle─► VerifyShard: open the tar once for the candidates the
                                              screen passed (and those of shards written before the
                                              thumbnail: screened on one made from the tar image,
                                              the same bytes), verify them on the pixels
    driver: report.html / report.json / pairs.csv / blocklist.txt (dedup/report.py)

Every shard that cannot be read (missing files, a cut tar, a bad parquet) is counted and named in
the report; what was read of it before the error still counts. Nothing here decides what a
duplicate is: hashing.py (views), descriptor.py (the copy descriptor), index.py (search) and
verify.py (screen and pixels) do, and
this file only moves data between them. Each pair records which stage decided it (`stage`:
screen, pixels, hash, error) and why in words (`reason`).

The optional semantic stage (`--embeddings CHECKPOINT`) adds candidates whose image embeddings
(from a `clipdata train` checkpoint, trainer/embed.py) have cosine similarity >=
--semantic-threshold; they are screened and verified like the hash candidates, unless --no-verify.
See `semantic_pairs` and `load_embedder`.
"""
from __future__ import annotations

import base64
import collections
import io
import json
import math
import os
import pickle
import re
import tarfile
import time
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
from PIL import Image
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from clipdata.dedup import hashed_test_sets, progress

from clipdata.dedup.hashing import hex64
from clipdata.pipeline.foundation import beam_runner, eval_sets, failures, webdataset_tars
from clipdata.pipeline.foundation.storage import clear_folder, storage_for

# With the descriptor, each training image keeps at most this many candidates, its most alike test
# images: the cost per training image stays bounded however many test images there are (at 100k
# test images and 4e-4 candidates per pair a training image would otherwise bring ~40). Three, not
# one: a test set may hold near copies of its own images (CIFAR-10's test set does).
PER_IMAGE = 3
EXACT_RADIUS = 0            # with the descriptor: pHash-identical pairs are candidates whatever their cosine
NO_NEIGHBOUR = 255          # nearest distance of a test image with no training hash within the radius
THUMB = "_thumb"            # a candidate's stored thumbnail while it moves between steps; never written out
TEST_CACHE = 256            # decoded test images a worker keeps (their candidates come together)
THUMB_SIZE = 96
TRAIN_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


class OverlapError(Exception):
    """The inputs or options cannot give a report; the message says why."""


class SemanticUnavailable(OverlapError):
    """--embeddings was asked for but no model loader exists yet."""


@dataclass
class OverlapConfig:
    shards: list[str]
    test_sets: list[tuple[str, str]]            # (name, path)
    output: str
    radius: int | None = None                   # None: the detection core's default
    views: tuple[str, ...] | None = None        # None: the detection core's default views
    verify: bool = True
    index: str = "auto"                         # auto | flat | ivf (index.CHOICES)
    columns: eval_sets.Columns = field(default_factory=eval_sets.Columns)
    workers: int | None = None                  # processes hashing the test sets
    embeddings: str | None = None               # trainer checkpoint for the semantic stage
    semantic_threshold: float = 0.92
    thumbnails: bool = True
    descriptor: bool = True                     # the learned copy descriptor proposes candidates
    similar: float | None = None                # its cosine threshold; None: the shipped one
    per_image: int = PER_IMAGE                  # candidates kept per training image (descriptor)


@dataclass(frozen=True)
class ShardInput:
    """One training shard: its tar and/or parquet (either may be missing)."""

    name: str
    tar: str | None
    parquet: str | None


def core_defaults() -> tuple[int, tuple[str, ...]]:
    """(default radius, default views) of the detection core (index.py, hashing.py)."""
    from clipdata.dedup import hashing, index

    return index.DEFAULT_RADIUS, tuple(hashing.DEFAULT_VIEWS)


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
        elif _is_folder(path):
            _add_folder(path, found, problems)
        else:
            _add_file(path, found, problems)
    return sorted(found.values(), key=lambda s: (len(s.name), s.name)), problems


def _glob(pattern: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems

    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def _is_folder(path: str) -> bool:
    if "://" in path:
        return not re.search(r"\.(tar|parquet)$", path)
    return os.path.isdir(path)


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
    """Keys, pHashes and thumbnails of a shard's images (both training views,
    hashing.train_views; thumbs.encode): from the parquet's phash, phash_centre and thumb columns
    when it has them; from the tar's images for samples without a phash (img2dataset's parquet,
    plain tars). Shards written before phash_centre existed are searched by their phash alone;
    those written before thumb existed get their thumbnails from the tar: here for every image
    with `need_thumbs` (the descriptor reads them all), else later for their candidates only."""
    import pyarrow.parquet as pq

    from clipdata.dedup import hashing
    from clipdata.pipeline.foundation import thumbs

    out = TrainHashes([], np.zeros(0, np.uint64), [], [])
    meta: dict[str, tuple] = {}         # key -> (url, caption) from the parquet
    to_hash: set[str] | None = None     # keys to hash from the tar; None = every image there
    codes: list[int] = []
    centre: list[int] = []              # 0 where there is none
    has_centre: list[bool] = []
    if shard.parquet:
        try:
            with _open(shard.parquet) as f:
                present = pq.read_schema(f).names
            wanted = [c for c in ("key", "phash", "phash_centre", "thumb", "url", "caption", "status")
                      if c in present]
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
            to_hash = set()
            for i in range(n):
                if status[i] != "success":
                    continue
                key = str(table["key"][i])
                meta[key] = (urls[i], captions[i])
                if valid[i]:
                    out.keys.append(key)
                    codes.append(int(codes_in[i]))
                    centre.append(int(centre_in[i]))
                    has_centre.append(bool(centre_valid[i]))
                    out.urls.append(urls[i])
                    out.captions.append(captions[i])
                    out.thumbs.append(stored_thumbs[i] or None)
                else:  # no phash (img2dataset's parquet), or not one we can read
                    to_hash.add(key)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
            out.errors.append(f"parquet unreadable ({failures.describe(err)}); hashed the tar instead")
            out.keys, out.urls, out.captions, codes, meta, to_hash = [], [], [], [], {}, None
            centre, has_centre, out.thumbs = [], [], []
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
                    url, caption = meta.get(key) or (sample.get("url"), sample.get("caption"))
                    out.keys.append(key)
                    codes.append(views["image"])
                    centre.append(views["centre"])
                    has_centre.append(True)
                    out.urls.append(url)
                    out.captions.append(caption)
                    out.thumbs.append(thumbs.encode(image))
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


def _sample_text(sample: dict) -> dict:
    out = {"url": None, "caption": None}
    if "txt" in sample:
        out["caption"] = sample["txt"].decode("utf-8", errors="replace")
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
            if isinstance(meta, dict):
                out["url"] = meta.get("url")
                out["caption"] = out["caption"] if out["caption"] is not None else meta.get("caption")
        except ValueError:
            pass
    return out


def read_train_images(tar_path: str, keys: set[str]) -> dict[str, bytes]:
    """The image bytes of the given keys, reading the tar once and stopping when all are found."""
    return {key: data for key, _, data, _ in _tar_samples(tar_path, keys)}


# ---------------------------------------------------------------------------------------------
# The test side, flattened: one row per (test image, view)


@dataclass
class TestSide:
    """Every readable test image's views, flattened for the index; images numbered across sets."""

    names: list[str]                   # test set of each global image number
    ids: list[str]                     # test image id of each global image number
    refs: list[eval_sets.ImageRef]
    codes: np.ndarray                  # uint64, one per (image, view)
    owner: np.ndarray                  # int64: the global image number of each code
    view: np.ndarray                   # int16: index into view_names of each code
    view_names: list[str]
    # copy descriptors (dedup/descriptor.py), one row per (image, descriptor.TEST_VIEWS view);
    # None when the descriptor is not used
    desc: np.ndarray | None = None        # float32 (rows, DIM)
    desc_owner: np.ndarray | None = None  # int64: the global image number of each row
    desc_row: np.ndarray | None = None    # int64 (n_images, views): each image's rows, -1: none
    # the copy descriptor of each hash view (a crop window, the mirror, ...): what a pHash match
    # on that view is checked against; float16 (rows, DIM), row of (image, view) in view_desc_row
    view_desc: np.ndarray | None = None
    view_desc_row: np.ndarray | None = None   # int64 (n_images, len(view_names)), -1: none

    @property
    def n_images(self) -> int:
        return len(self.ids)

    def similarity(self, test: np.ndarray, train_desc: np.ndarray, train_row: np.ndarray) -> np.ndarray:
        """Per pair (test[k], train_desc[train_row[k]]): the highest cosine over the test image's
        described views; NaN where the test image has no descriptor (any cosine, -1 included, is
        a value)."""
        best = np.full(len(test), np.nan, np.float32)
        if self.desc is None or not len(test):
            return best
        for v in range(self.desc_row.shape[1]):
            rows = self.desc_row[test, v]
            ok = np.flatnonzero(rows >= 0)
            best[ok] = np.fmax(best[ok], paired_dots(self.desc, rows[ok], train_desc, train_row[ok]))
        return best

    def view_similarity(self, test: np.ndarray, view: np.ndarray, train_desc: np.ndarray,
                        train_row: np.ndarray) -> np.ndarray:
        """Per pair: the cosine of the test image's hash view `view[k]` (an index into
        view_names) with train_desc[train_row[k]]; NaN where that view has no descriptor."""
        out = np.full(len(test), np.nan, np.float32)
        if self.view_desc is None or not len(test):
            return out
        rows = self.view_desc_row[test, view]
        ok = np.flatnonzero(rows >= 0)
        out[ok] = paired_dots(self.view_desc, rows[ok], train_desc, train_row[ok])
        return out


DOT_BLOCK = 4096   # pairs per block in paired_dots: two blocks of rows stay in the CPU's cache


def paired_dots(a: np.ndarray, a_rows: np.ndarray, b: np.ndarray, b_rows: np.ndarray) -> np.ndarray:
    """a[a_rows[k]] . b[b_rows[k]] for every k, in float32 (a may be float16), block by block:
    at 100k test images a training image has ~800 pHash matches to check, so the rows gathered
    at once stay bounded instead of growing with the matches."""
    out = np.empty(len(a_rows), np.float32)
    for start in range(0, len(a_rows), DOT_BLOCK):
        end = start + DOT_BLOCK
        out[start:end] = np.einsum("ij,ij->i", a[a_rows[start:end]].astype(np.float32, copy=False),
                                   b[b_rows[start:end]])
    return out


def flatten(hashed: list[hashed_test_sets.HashedTestSet], view_names: list[str]) -> TestSide:
    """Number the test images across sets (set by set, in listing order) and stack their views;
    a view whose hash repeats an earlier one of the same image is indexed once."""
    from clipdata.dedup import index

    names, ids, refs, views = [], [], [], []
    for h in hashed:
        for image, image_views in zip(h.test_set.images, h.views):
            names.append(h.test_set.name)
            ids.append(image.id)
            refs.append(image.ref)
            views.append(image_views or {})   # unreadable: numbered, never indexed
    stacked = index.stack_views(views, names=view_names)
    side = TestSide(names, ids, refs, stacked.hashes, stacked.owner, stacked.view.astype(np.int16),
                    list(view_names))
    if all(h.descriptors is not None for h in hashed) and hashed:
        from clipdata.dedup import descriptor

        rows, owner = [], []
        side.desc_row = np.full((side.n_images, len(descriptor.TEST_VIEWS)), -1, np.int64)
        described = (d for h in hashed for d in h.descriptors)
        for number, views in enumerate(described):
            if views is not None:
                side.desc_row[number, :len(views)] = np.arange(len(owner), len(owner) + len(views))
                rows.append(np.asarray(views, np.float32))
                owner += [number] * len(views)
        side.desc = np.concatenate(rows) if rows else np.zeros((0, descriptor.DIM), np.float32)
        side.desc_owner = np.array(owner, dtype=np.int64)
    if hashed and all(h.view_descriptors is not None for h in hashed):
        from clipdata.dedup import descriptor

        side.view_desc_row = np.full((side.n_images, len(view_names)), -1, np.int64)
        rows = []
        per_image = [d for h in hashed for d in h.view_descriptors]
        for number, by_view in enumerate(per_image):
            for name, vector in (by_view or {}).items():
                if name in side.view_names:
                    side.view_desc_row[number, side.view_names.index(name)] = len(rows)
                    rows.append(vector)
        side.view_desc = np.stack(rows).astype(np.float16) if rows else np.zeros((0, descriptor.DIM), np.float16)
    return side


# ---------------------------------------------------------------------------------------------
# Searching one shard (plain Python)


@dataclass
class DescriptorSearch:
    """How the copy descriptor takes part in one search (see search_shard)."""

    index: object                  # index.DescriptorIndex over side.desc
    similar: float                 # a pair at or above this cosine is a candidate
    hash_similar: float            # a hash match is a candidate from this cosine
    exact: int = EXACT_RADIUS      # ... or at or below this Hamming distance, whatever the cosine
    per_image: int = PER_IMAGE     # candidates kept per training image, most alike first


def describe_thumbs(stored: list[bytes | None], view=None) -> tuple[np.ndarray, np.ndarray]:
    """(descriptors (n, DIM), described: bool (n,)) of stored thumbnails, or of `view(thumbnail
    as a PIL image)` of each; a missing or unreadable thumbnail gets a zero row and described
    False (its pairs are left to the hashes)."""
    from clipdata.dedup import descriptor
    from clipdata.pipeline.foundation import thumbs

    inputs, rows = [], []
    for i, data in enumerate(stored):
        if data is None:
            continue
        try:
            pixels = thumbs.decode(data)
            inputs.append(descriptor.to_input(pixels if view is None else view(Image.fromarray(pixels))))
            rows.append(i)
        except ValueError:
            continue
    out = np.zeros((len(stored), descriptor.DIM), np.float32)
    described = np.zeros(len(stored), bool)
    if rows:
        out[rows] = descriptor.shared().describe_inputs(np.stack(inputs))
        described[rows] = True
    return out, described


def describe_centres(stored: list[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """describe_thumbs of the centre view: the centre 70% of the picture without its padding
    bars (hashing.train_views' "centre", whose pHash is `phash_centre`), for the pHash matches
    made on it (the test image is the cropped one)."""
    from clipdata.dedup import hashing

    return describe_thumbs(stored, lambda rgb: hashing.pad_to_square(
        hashing.centre_crop(hashing.stored_content(rgb), hashing.TRAIN_CENTRE_KEEP)))


@dataclass
class ShardSearch:
    """What searching one shard found."""

    candidates: list[dict]       # one per (test image, training sample), sorted
    dissimilar: int              # pHash matches the descriptor left out
    nearest: np.ndarray          # uint8 per test image: nearest pHash distance within the radius,
                                 # NO_NEIGHBOUR when none is (from the search itself: no second scan)
    beyond_cap: int = 0          # candidates left out: their training image had per_image more alike


SEARCH_CHUNK = 512   # training images searched at a time: bounds the memory of their pHash matches
                     # (~800 per training image at 100k test images) whatever the shard's size


def search_shard(index, side: TestSide, train: TrainHashes, radius: int, descriptors: DescriptorSearch | None = None,
                 train_desc: tuple[np.ndarray, np.ndarray] | None = None) -> ShardSearch:
    """The candidate pairs of one shard, one per (test image, training sample), searched
    SEARCH_CHUNK training images at a time. Without `descriptors`: every pHash match within
    `radius`, at its nearest pair of views (`view` names the test image's view, with
    " / train centre" when the training image's centre view was the nearer). With them
    (`train_desc` from describe_thumbs): every pair whose copy descriptors agree to `similar`
    (`view` "descriptor"), and the hash matches within `exact` bits or whose descriptors agree:
    a match on the training image as it is when the matched test view (a crop window, the
    mirror, ...) agrees to `similar` with it (a crop's copy is alike the window that shows it);
    a match on the training image's centre view (the test image is the crop) when that centre,
    described from the stored thumbnail, agrees to `similar` with the matched test view. A pair
    whose whole pictures agree is found by the descriptor search itself and keeps its pHash
    match's distance and view. Without view descriptors (or a thumbnail) a hash match is kept
    when the whole pictures agree to `hash_similar`. A pair with no descriptor on either side
    stays a hash candidate. Each pair carries its best cosine as `similarity`."""
    from clipdata.dedup.index import candidate_pairs

    nearest = np.full(side.n_images, NO_NEIGHBOUR, np.uint8)
    if not len(train.codes):
        return ShardSearch([], 0, nearest)
    codes, owner, train_view = train.search_codes()
    described_search = descriptors is not None and train_desc is not None
    pairs: dict[tuple[int, int], tuple] = {}
    dropped = 0
    for start in range(0, len(train.codes), SEARCH_CHUNK):
        part = (owner >= start) & (owner < start + SEARCH_CHUNK)
        found = candidate_pairs(index, side.owner, codes[part], radius, view_index=side.view,
                                train_owner=owner[part], train_view=train_view[part])
        np.minimum.at(nearest, found.test, found.distance.astype(np.uint8))
        if described_search:
            dropped += _described_pairs(found, side, train, descriptors, train_desc,
                                        np.arange(start, min(start + SEARCH_CHUNK, len(train.codes))), pairs)
        else:
            for k in range(len(found.test)):
                pairs[int(found.test[k]), int(found.train[k])] = (
                    int(found.distance[k]), _view_name(side, found.view[k], found.train_view[k]), math.nan)
    beyond = _cap_per_image(pairs, descriptors) if described_search else 0
    candidates = []
    for (t, j), (distance, view, sim) in pairs.items():
        candidates.append({
            "test_set": side.names[t], "test_index": t, "test_id": side.ids[t],
            "key": train.keys[j], "url": train.urls[j], "caption": train.captions[j],
            "train_phash": hex64(train.codes[j]), "distance": distance, "view": view,
            "similarity": None if sim != sim else round(sim, 4),
            # the descriptor's own verdict: an unalike pair needs more of the pixels (verify.py)
            "alike": None if sim != sim or not described_search else bool(sim >= descriptors.similar),
            THUMB: train.thumbs[j] if j < len(train.thumbs) else None,
        })
    return ShardSearch(sorted(candidates, key=lambda c: (c["test_index"], c["key"])), dropped, nearest, beyond)


def _view_name(side: TestSide, view: int, train_view: int) -> str:
    from clipdata.dedup.hashing import TRAIN_VIEWS

    name = side.view_names[int(view)]
    return name if train_view == 0 else f"{name} / train {TRAIN_VIEWS[int(train_view)]}"


def _described_pairs(found, side: TestSide, train: TrainHashes, descriptors: DescriptorSearch,
                     train_desc: tuple[np.ndarray, np.ndarray], rows: np.ndarray, pairs: dict) -> int:
    """search_shard's decision for the pHash matches `found` of the training images `rows`, and
    their descriptor search; adds the candidates to `pairs`, returns how many matches it left out.
    Each match costs one cosine (its matched view's), whatever the number of test images."""
    desc, described = train_desc
    test, row = found.test, found.train
    sim = side.view_similarity(test, found.view, desc, row)
    centre = found.train_view != 0
    sim[centre] = np.nan
    if side.view_desc is not None and centre.any():
        # a match on the training image's centre view: that centre's descriptor against the
        # matched test view (the test image is the crop: its view shows the same middle)
        centre_rows = np.unique(row[centre])
        centre_desc, centre_ok = describe_centres([train.thumbs[j] if j < len(train.thumbs) else None
                                                    for j in centre_rows.tolist()])
        at = np.searchsorted(centre_rows, row[centre])
        sims = side.view_similarity(test[centre], found.view[centre], centre_desc, at)
        sims[~centre_ok[at]] = np.nan
        sim[centre] = sims
    # no descriptor of the matched view: the whole pictures decide, from hash_similar
    no_view = np.isnan(sim)
    whole = np.full(len(test), np.nan, np.float32)
    if no_view.any():
        k = np.flatnonzero(no_view)
        whole[k] = side.similarity(test[k], desc, row[k])
    unknown = ~described[row] | (no_view & np.isnan(whole))
    agree = np.where(no_view, whole >= descriptors.hash_similar, sim >= descriptors.similar)
    keep = unknown | (found.distance <= descriptors.exact) | agree
    similarity = np.where(no_view, whole, sim)
    similarity[unknown] = np.nan
    for k in np.flatnonzero(keep).tolist():
        pairs[int(test[k]), int(row[k])] = (int(found.distance[k]), _view_name(side, found.view[k], found.train_view[k]),
                                            float(similarity[k]))
    # the descriptor search of the same training images: pairs whose whole pictures agree
    queries = rows[described[rows]]
    q, r, sims = descriptors.index.similar_pairs(desc[queries], descriptors.similar)
    best: dict[tuple[int, int], float] = {}
    for j, t, s in zip(queries[q].tolist(), side.desc_owner[r].tolist(), sims.tolist()):
        best[t, j] = max(s, best.get((t, j), -2.0))
    match_key = row * side.n_images + test          # found is sorted by (training row, test image)
    rescued = 0                                     # left-out matches the whole pictures bring back
    for (t, j), s in best.items():
        if (t, j) in pairs:
            distance, view, before = pairs[t, j]
            pairs[t, j] = (distance, view, s if before != before else max(before, s))
            continue
        k = int(np.searchsorted(match_key, j * side.n_images + t))
        if k < len(match_key) and match_key[k] == j * side.n_images + t:   # a pHash match too
            pairs[t, j] = (int(found.distance[k]), _view_name(side, found.view[k], found.train_view[k]), s)
            rescued += 1
        else:
            pairs[t, j] = (None, "descriptor", s)
    return int((~keep).sum()) - rescued


def _cap_per_image(pairs: dict, descriptors: DescriptorSearch) -> int:
    """Keep at most descriptors.per_image candidates per training image, the highest cosines
    (ties: the lower test image number); pairs without a cosine (no descriptor) and identical
    hashes are kept whatever their count. Returns how many were left out."""
    ranked: dict[int, list] = collections.defaultdict(list)
    for (t, j), (distance, _, sim) in pairs.items():
        if sim == sim and not (distance is not None and distance <= descriptors.exact):
            ranked[j].append((-sim, t))
    left_out = 0
    for j, alike in ranked.items():
        if len(alike) > descriptors.per_image:
            for _, t in sorted(alike)[descriptors.per_image:]:
                del pairs[t, j]
                left_out += 1
    return left_out


# ---------------------------------------------------------------------------------------------
# Deciding one shard's candidates (plain Python): the screen on stored thumbnails, then pixels


def thumbnail(image, size: int = THUMB_SIZE) -> str:
    """A small JPEG of an image as a base64 data URL, for the self-contained HTML report."""
    small = image.copy()
    small.thumbnail((size, size))
    buf = io.BytesIO()
    small.convert("RGB").save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumb_data_url(data: bytes) -> str:
    """A stored thumbnail (pipeline/foundation/thumbs.py) as a data URL for the report, re-encoded as its JPEG."""
    from clipdata.pipeline.foundation import thumbs

    return thumbnail(Image.fromarray(thumbs.decode(data)))


class TestImages:
    """The test images one worker has decoded, the TEST_CACHE most recent kept (a shard's
    candidates come sorted by test image): the picture, its reduction for the screen, its
    thumbnail for the report, or why it cannot be read."""

    def __init__(self, side: TestSide, size: int = TEST_CACHE):
        self.side, self.size = side, size
        self.cache: collections.OrderedDict[int, dict] = collections.OrderedDict()

    def _entry(self, number: int) -> dict:
        if number in self.cache:
            self.cache.move_to_end(number)
            return self.cache[number]
        try:
            entry = {"image": hashed_test_sets.decode(self.side.refs[number].read()), "error": None}
        except Exception as err:  # noqa: BLE001 - an unreadable test image is recorded per pair
            entry = {"image": None, "error": failures.describe(err)}
        self.cache[number] = entry
        if len(self.cache) > self.size:
            self.cache.popitem(last=False)
        return entry

    def image(self, number: int):
        """(PIL image or None, error text or None)."""
        entry = self._entry(number)
        return entry["image"], entry["error"]

    def reduced(self, number: int) -> np.ndarray:
        from clipdata.dedup import verify

        entry = self._entry(number)
        if "reduced" not in entry:
            entry["reduced"] = verify.reduce_for_screen(entry["image"])
        return entry["reduced"]

    def screen(self, number: int, thumb: np.ndarray, alike: bool | None = None):
        """verify.screen of the test image against a thumbnail, the test image's reductions kept
        for its next candidates; stricter when the descriptor found the pair unalike."""
        from clipdata.dedup import verify

        reduced = self.reduced(number)
        thresholds = verify.SCREEN_UNALIKE_THRESHOLDS if alike is False else verify.SCREEN_THRESHOLDS
        return verify.screen(reduced, thumb, thresholds, pyramid=self.cache[number].setdefault("pyramid", {}))

    def thumb(self, number: int) -> str | None:
        entry = self._entry(number)
        if entry["image"] is None:
            return None
        if "thumb" not in entry:
            entry["thumb"] = thumbnail(entry["image"])
        return entry["thumb"]


def _decided(c: dict, verdict, stage: str) -> dict:
    """The candidate with its verdict: `stage` says what decided it (screen, pixels)."""
    return dict(c, verified=bool(verdict.duplicate), score=_round(verdict.score), method=str(verdict.method),
                detail=str(verdict.detail), failed=verdict.failed, reason=verdict.reason, stage=stage)


def _failed(c: dict, problem: str) -> dict:
    return dict(c, verified=False, score=None, method="error", detail=problem, failed="error",
                reason=f"could not be checked: {problem}", stage="error")


def screen_candidates(candidates: list[dict], tests: TestImages, thumbnails: bool = True
                      ) -> tuple[list[dict], list[dict]]:
    """(decided, to_pixels): each candidate with a stored thumbnail is screened on it
    (verify.screen); those the screen rejects are decided here, without the tar. The rest —
    passed the screen, or no thumbnail to screen — go on to the pixels (check_candidates)."""
    from clipdata.pipeline.foundation import thumbs

    decided, to_pixels = [], []
    for c in candidates:
        stored = c.get(THUMB)
        if stored is None or tests.image(c["test_index"])[0] is None:
            to_pixels.append(c)
            continue
        try:
            verdict = tests.screen(c["test_index"], thumbs.decode(stored), c.get("alike"))
        except Exception:  # noqa: BLE001 - an unreadable thumbnail: the pixels decide
            to_pixels.append(c)
            continue
        if verdict.duplicate:
            to_pixels.append(dict(c, screen_score=_round(verdict.score)))
            continue
        pair = _decided(c, verdict, "screen")
        if thumbnails:
            pair.update(test_thumb=tests.thumb(c["test_index"]), train_thumb=thumb_data_url(stored))
        decided.append(pair)
    return decided, to_pixels


def check_candidates(shard: ShardInput, candidates: list[dict], tests: TestImages, verify: bool,
                     thumbnails: bool = True) -> tuple[list[dict], list[str], int]:
    """(pairs, shard errors, thumbnails made from the tar): the candidates' training images read
    from the tar once; a candidate without a stored thumbnail (a shard written before it) is
    screened on the thumbnail made from its image first, exactly as a stored one would be, and
    the rest are verified on the pixels (verify.verify). With verify=False every candidate is a
    duplicate (hash only) and the tar is read for the report's thumbnails alone."""
    from clipdata.dedup import verify as verify_module
    from clipdata.pipeline.foundation import thumbs

    errors = []
    train_images: dict[str, bytes] = {}
    if shard.tar and (verify or thumbnails):
        try:
            train_images = read_train_images(shard.tar, {c["key"] for c in candidates})
        except (OSError, tarfile.TarError, EOFError, ValueError) as err:
            errors.append(f"tar unreadable while verifying ({failures.describe(err)})")
    elif not shard.tar:
        errors.append("no tar: candidates cannot be verified or shown")
    out, made = [], 0
    for c in candidates:
        c = dict(c, shard=shard.name)
        test_image, test_error = tests.image(c["test_index"])
        train_image, problem = None, None
        if c["key"] not in train_images:
            problem = "training image not found in the tar"
        else:
            try:
                train_image = hashed_test_sets.decode(train_images[c["key"]])
            except Exception as err:  # noqa: BLE001 - an undecodable image is recorded
                problem = f"training image undecodable ({failures.describe(err)})"
        if test_error:
            problem = problem or f"test image unreadable ({test_error})"
        if not verify:
            close = f"{c['distance']} bits apart" if c["distance"] is not None else f"cosine {c.get('cosine')}"
            score = 1 - c["distance"] / 64 if c["distance"] is not None else c.get("cosine")
            pair = dict(c, verified=True, score=_round(score), method="hash", failed=None, stage="hash",
                        detail=f"not verified (--no-verify): {close}", reason=f"hash match only ({close})")
        elif problem:
            pair = _failed(c, problem)
        else:
            try:
                verdict = None
                if c.get(THUMB) is None and "screen_score" not in c:
                    made += 1   # the pixels of the thumbnail it would have stored (PNG is lossless)
                    verdict = tests.screen(c["test_index"], np.asarray(thumbs.thumbnail(train_image)), c.get("alike"))
                    stage = "screen"
                if verdict is None or verdict.duplicate:
                    thresholds = (verify_module.UNALIKE_THRESHOLDS if c.get("alike") is False
                                  else verify_module.THRESHOLDS)
                    verdict, stage = verify_module.verify(test_image, train_image, thresholds), "pixels"
                pair = _decided(c, verdict, stage)
            except Exception as err:  # noqa: BLE001 - one odd pair must not end the job
                pair = _failed(c, f"verification failed ({failures.describe(err)})")
        if thumbnails:
            pair["test_thumb"] = tests.thumb(c["test_index"])
            pair["train_thumb"] = None if train_image is None else thumbnail(train_image)
        out.append(pair)
    return out, errors, made


def _round(x):
    try:
        return round(float(x), 4)
    except (TypeError, ValueError):
        return None


def without_thumb(pair: dict) -> dict:
    return {k: v for k, v in pair.items() if k != THUMB}


# ---------------------------------------------------------------------------------------------
# The semantic stage (optional): embeddings of a trained model in a FAISS inner-product index


def normalise(embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12))


def semantic_pairs(test_embeddings: np.ndarray, train_embeddings: np.ndarray, threshold: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(test_idx, train_idx, cosine) of every pair with cosine similarity >= threshold.

    The test side goes in an IndexFlatIP over L2-normalised embeddings (inner product = cosine);
    the training embeddings are the queries, as with the hashes: the small side indexed, the big
    side streamed. FAISS's range search keeps scores strictly above its radius, so the radius is
    nudged just below the threshold and the result filtered to >= threshold.
    """
    import faiss

    test = normalise(test_embeddings)
    train = normalise(train_embeddings)
    if not len(test) or not len(train):
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    if test.shape[1] != train.shape[1]:
        raise ValueError(f"embedding widths differ: test {test.shape[1]}, train {train.shape[1]}")
    index = faiss.IndexFlatIP(test.shape[1])
    index.add(test)
    limits, scores, labels = index.range_search(train, float(np.nextafter(np.float32(threshold), np.float32(-1))))
    train_idx = np.repeat(np.arange(len(train)), np.diff(limits).astype(np.int64))
    keep = scores >= np.float32(threshold)
    return labels[keep].astype(np.int64), train_idx[keep].astype(np.int64), scores[keep]


def load_embedder(checkpoint: str):
    """A function list[PIL image] -> (n, d) L2-normalised embeddings, from a `clipdata train`
    checkpoint file or run folder (its latest checkpoint). Raises SemanticUnavailable with the
    reason when there is none or it does not load."""
    try:
        from clipdata.trainer.embed import ImageEmbedder

        embedder = ImageEmbedder.load(checkpoint)
    except ImportError as err:  # torch missing from a slimmed-down install
        raise SemanticUnavailable(f"--embeddings needs the trainer's dependencies ({err})") from err
    except Exception as err:  # noqa: BLE001 - torch.load raises several kinds on a bad file
        raise SemanticUnavailable(f"--embeddings {checkpoint}: not a loadable clipdata checkpoint "
                                  f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
    return embedder.embed_images


def embed_in_batches(embedder, images: list, batch: int = 64) -> np.ndarray:
    parts = [embedder(images[i:i + batch]) for i in range(0, len(images), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


# ---------------------------------------------------------------------------------------------
# Beam steps: thin layers over the functions above


class SearchShardFn(beam.DoFn):
    """ShardInput -> (shard, candidates for the pixels) when it has any; 'screened' (pairs the
    stored thumbnails decided), 'nearest' distances, 'shard_errors'."""

    def __init__(self, side: TestSide, radius: int, index_kind: str, semantic: dict | None = None,
                 verify: bool = True, thumbnails: bool = True, work: str | None = None,
                 similar: tuple | None = None):
        self.side, self.radius, self.index_kind, self.semantic = side, radius, index_kind, semantic
        self.verify, self.thumbnails, self.work, self.similar = verify, thumbnails, work, similar
        self.described = Metrics.counter("dedup", "train_described")
        self.hash_dropped = Metrics.counter("dedup", "hash_matches_dissimilar")
        self.beyond_cap = Metrics.counter("dedup", "candidates_beyond_cap")
        self.search_thumbs_from_tar = Metrics.counter("dedup", "thumbnails_from_tar")
        self.screened_out = Metrics.counter("dedup", "pairs_screened_out")
        self.shards_read = Metrics.counter("dedup", "shards_read")
        self.shards_with_errors = Metrics.counter("dedup", "shards_with_errors")
        self.train_hashes = Metrics.counter("dedup", "train_hashes")
        self.hashed_from_tar = Metrics.counter("dedup", "train_hashed_from_tar")
        self.unreadable = Metrics.counter("dedup", "train_images_unreadable")
        self.candidates = Metrics.counter("dedup", "candidates")

    def setup(self):
        from clipdata.dedup import index

        self.index = index.HashIndex(self.side.codes, kind=index.hash_kind(self.index_kind, len(self.side.codes)))
        self.descriptors = None
        if self.side.desc is not None and self.similar is not None:
            kind = index.descriptor_kind(self.index_kind, len(self.side.desc))
            self.descriptors = DescriptorSearch(index.DescriptorIndex(self.side.desc, kind=kind), *self.similar)
        self.embedder = load_embedder(self.semantic["checkpoint"]) if self.semantic else None
        self.tests = TestImages(self.side)

    def process(self, shard: ShardInput):
        train = read_train_hashes(shard, need_thumbs=self.descriptors is not None)
        self.shards_read.inc()
        self.search_thumbs_from_tar.inc(train.thumbs_from_tar)
        self.train_hashes.inc(len(train.codes))
        self.hashed_from_tar.inc(train.hashed_from_tar)
        self.unreadable.inc(train.unreadable_images)
        errors = list(train.errors)
        train_desc = None
        if self.descriptors is not None:
            train_desc = describe_thumbs(train.thumbs)
            self.described.inc(int(train_desc[1].sum()))
        searched = search_shard(self.index, self.side, train, self.radius, self.descriptors, train_desc)
        candidates = searched.candidates
        self.hash_dropped.inc(searched.dissimilar)
        self.beyond_cap.inc(searched.beyond_cap)
        if self.embedder is not None and shard.tar:
            candidates += self._semantic_candidates(shard, train, candidates, errors)
        if errors:
            self.shards_with_errors.inc()
            yield TaggedOutput("shard_errors", {"shard": shard.name, "tar": shard.tar, "parquet": shard.parquet,
                                                "stage": "search", "errors": errors})
        yield TaggedOutput("nearest", searched.nearest)
        self.candidates.inc(len(candidates))
        found = len(candidates)
        decided = []
        if self.verify:
            decided, candidates = screen_candidates(candidates, self.tests, self.thumbnails)
            self.screened_out.inc(len(decided))
            for pair in decided:
                yield TaggedOutput("screened", without_thumb(dict(pair, shard=shard.name)))
        if self.work:
            progress.record(self.work, "search", shard.name, {"images": len(train.keys), "candidates": found,
                                                              "screened_out": len(decided)})
        if candidates:
            yield shard, candidates

    def _semantic_candidates(self, shard, train, candidates, errors) -> list[dict]:
        try:
            images = read_train_images(shard.tar, set(train.keys))
            keys = [k for k in train.keys if k in images]
            decoded = [hashed_test_sets.decode(images[k]) for k in keys]
            test_idx, train_idx, cosine = semantic_pairs(self.semantic["test_embeddings"],
                                                         embed_in_batches(self.embedder, decoded),
                                                         self.semantic["threshold"])
        except Exception as err:  # noqa: BLE001 - the hash candidates stand
            errors.append(f"semantic stage failed ({failures.describe(err)})")
            return []
        seen = {(c["test_index"], c["key"]) for c in candidates}
        position = {k: i for i, k in enumerate(train.keys)}
        numbers = self.semantic["numbers"]     # row of test_embeddings -> global test image number
        out = []
        for t, j, s in zip(test_idx.tolist(), train_idx.tolist(), cosine.tolist()):
            number, key = numbers[t], keys[j]
            if (number, key) in seen:
                continue
            i = position[key]
            out.append({"test_set": self.side.names[number], "test_index": number, "test_id": self.side.ids[number],
                        "key": key, "url": train.urls[i], "caption": train.captions[i],
                        "train_phash": hex64(train.codes[i]),
                        "distance": None, "view": "semantic", "cosine": round(float(s), 4),
                        THUMB: train.thumbs[i] if i < len(train.thumbs) else None})
        return out


class VerifyShardFn(beam.DoFn):
    """(shard, candidates) -> each candidate with its verdict, from the shard's tar; 'shard_errors'."""

    def __init__(self, side: TestSide, verify: bool, thumbnails: bool, work: str | None = None):
        self.side, self.verify, self.thumbnails, self.work = side, verify, thumbnails, work
        self.pixel_checked = Metrics.counter("dedup", "pairs_checked_on_pixels")
        self.thumbs_from_tar = Metrics.counter("dedup", "thumbnails_from_tar")
        self.screened_out = Metrics.counter("dedup", "pairs_screened_out")

    def setup(self):
        self.tests = TestImages(self.side)

    def process(self, element):
        shard, candidates = element
        checked, errors, made = check_candidates(shard, candidates, self.tests, self.verify, self.thumbnails)
        self.thumbs_from_tar.inc(made)
        if errors:
            yield TaggedOutput("shard_errors", {"shard": shard.name, "tar": shard.tar, "parquet": shard.parquet,
                                                "stage": "verify", "errors": errors})
        for pair in checked:
            if pair["stage"] == "pixels":
                self.pixel_checked.inc()
            elif pair["stage"] == "screen":
                self.screened_out.inc()
            yield without_thumb(pair)
        if self.work:
            progress.record(self.work, "verify", shard.name,
                            {"pixels": sum(p["stage"] == "pixels" for p in checked)})


class MinDistances(beam.CombineFn):
    """Element-wise minimum of per-shard nearest-distance arrays."""

    def __init__(self, n: int):
        self.n = n

    def create_accumulator(self):
        return np.full(self.n, NO_NEIGHBOUR, np.uint8)

    def add_input(self, best, distances):
        return np.minimum(best, distances)

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        best = next(accumulators)
        for other in accumulators:
            best = np.minimum(best, other)
        return best

    def extract_output(self, best):
        return best


class FindOverlap(beam.PTransform):
    """Training shards -> (checked pairs, nearest distances, shard errors)."""

    def __init__(self, side: TestSide, radius: int, index_kind: str, verify: bool, thumbnails: bool,
                 semantic: dict | None = None, work: str | None = None, similar: tuple | None = None):
        super().__init__()
        self.side, self.radius, self.index_kind = side, radius, index_kind
        self.verify, self.thumbnails, self.semantic, self.work = verify, thumbnails, semantic, work
        self.similar = similar

    def expand(self, shard_inputs):
        searched = (
            shard_inputs
            | "SpreadShards" >> beam.Reshuffle()
            | "SearchAndScreen" >> beam.ParDo(SearchShardFn(self.side, self.radius, self.index_kind, self.semantic,
                                                            self.verify, self.thumbnails, self.work, self.similar)
                                              ).with_outputs("screened", "nearest", "shard_errors", main="candidates")
        )
        checked = (
            searched.candidates
            | "SpreadCandidates" >> beam.Reshuffle()
            | "VerifyShard" >> beam.ParDo(VerifyShardFn(self.side, self.verify, self.thumbnails, self.work)
                                          ).with_outputs("shard_errors", main="pairs")
        )
        nearest = searched.nearest | "NearestOverShards" >> beam.CombineGlobally(MinDistances(self.side.n_images))
        errors = (searched.shard_errors, checked.shard_errors) | "AllShardErrors" >> beam.Flatten()
        pairs = (searched.screened, checked.pairs) | "AllPairs" >> beam.Flatten()
        return pairs, nearest, errors


# ---------------------------------------------------------------------------------------------
# The driver


@dataclass
class OverlapResult:
    """Everything the report needs (dedup/report.py)."""

    config: OverlapConfig
    radius: int
    views: list[str]
    hashed: list[hashed_test_sets.HashedTestSet]
    side: TestSide
    pairs: list[dict]                 # every candidate with its verdict
    nearest: np.ndarray               # per global test image number
    shards: int
    shard_errors: list[dict]
    counters: dict[str, int]
    seconds: float
    similar: float | None = None      # the descriptor's candidate cosine (None: not used)


def prepare_test_side(config: OverlapConfig, radius: int, views: tuple[str, ...]
                      ) -> tuple[list[hashed_test_sets.HashedTestSet], TestSide]:
    """Every test image hashed in its views, and described when config.descriptor."""
    hashed = []
    for name, path in config.test_sets:
        try:
            test_set = eval_sets.load_test_set(name, path, config.columns)
        except eval_sets.TestSetError as err:
            raise OverlapError(str(err)) from err
        with progress.Counter("hashed", len(test_set.images), f"test images of {name}") as counter:
            hashed.append(hashed_test_sets.hash_test_set(test_set, views, workers=config.workers, progress=counter.add,
                                                 describe=config.descriptor))
    side = flatten(hashed, list(views))
    if not side.codes.size:
        raise OverlapError("no test image could be read: nothing to look for")
    return hashed, side


def resolve_options(config: OverlapConfig) -> tuple[int, tuple[str, ...]]:
    from clipdata.dedup import hashing

    default_radius, default_views = core_defaults()
    radius = default_radius if config.radius is None else int(config.radius)
    if not 0 <= radius <= 64:
        raise OverlapError(f"--radius must be between 0 and 64 bits, got {radius}")
    views = tuple(config.views) if config.views else default_views
    if len(views) == 1 and views[0] in hashing.VIEW_PRESETS:
        views = tuple(hashing.VIEW_PRESETS[views[0]])
    unknown = [v for v in views if v not in hashing.VIEW_NAMES]
    if unknown:
        raise OverlapError(f"--views: unknown {', '.join(unknown)}; known: {', '.join(hashing.VIEW_NAMES)}")
    if len(set(views)) != len(views):
        raise OverlapError(f"--views: a view is named twice in {', '.join(views)}")
    if config.per_image < 1:
        raise OverlapError(f"--per-image must be at least 1, got {config.per_image}")
    if config.similar is not None and not -1.0 <= config.similar <= 1.0:
        raise OverlapError(f"--similar is a cosine, between -1 and 1, got {config.similar}")
    from clipdata.dedup import index

    if config.index not in index.CHOICES:
        raise OverlapError(f"--index must be one of {', '.join(index.CHOICES)}, got {config.index!r}")
    return radius, views


def run_overlap(config: OverlapConfig, beam_args: list[str] | None = None) -> OverlapResult:
    """Hash the test sets, stream the shards past them, verify; returns what the report needs."""
    started = time.time()
    radius, views = resolve_options(config)
    shard_inputs, shard_problems = list_shards(config.shards)
    if not shard_inputs:
        detail = "; ".join(f"{p['shard']}: {p['error']}" for p in shard_problems[:5])
        raise OverlapError(f"no training shards found in {config.shards}" + (f" ({detail})" if detail else ""))
    semantic = None
    try:  # the descriptor's weights are loaded here first: a missing file fails once, up front
        similar = similar_thresholds(config)
    except (OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError) as err:  # missing or damaged
        raise OverlapError(f"the copy descriptor could not be loaded: {err}; --no-descriptor runs without it") from err
    if config.embeddings:
        embedder = load_embedder(config.embeddings)   # fails early, before any hashing
    try:
        hashed, side = prepare_test_side(config, radius, views)
    except ValueError as err:  # e.g. a view name the detection core does not know
        raise OverlapError(str(err)) from err
    try:  # what every worker's setup() will do: fail here, once, with the reason
        from clipdata.dedup import index

        index.HashIndex(side.codes, kind=index.hash_kind(config.index, len(side.codes)))
    except ValueError as err:
        raise OverlapError(f"--index {config.index}: {err}") from err
    if config.embeddings:
        semantic = semantic_test_side(config, embedder, side)

    work = FileSystems.join(config.output, "_work")
    clear_folder(work)
    pairs_prefix, errors_prefix = FileSystems.join(work, "pairs"), FileSystems.join(work, "shard_errors")
    nearest_path = FileSystems.join(work, "nearest.npy")

    p = beam_runner.make_pipeline(beam_args)
    pairs, nearest, errors = (
        p | "ShardList" >> beam.Create(shard_inputs)
        | "FindOverlap" >> FindOverlap(side, radius, config.index, config.verify, config.thumbnails, semantic, work,
                                     similar)
    )
    pairs | "PairsAsJson" >> beam.Map(json.dumps) | "WritePairs" >> beam.io.WriteToText(pairs_prefix, ".jsonl")
    errors | "ErrorsAsJson" >> beam.Map(json.dumps) | "WriteErrors" >> beam.io.WriteToText(errors_prefix, ".jsonl")
    nearest | "SaveNearest" >> beam.Map(_save_npy, nearest_path)
    with progress.ShardWatcher(work, len(shard_inputs)):
        result = p.run()
        result.wait_until_finish()
    counters = beam_runner.counters(result)

    pair_rows = _read_jsonl(pairs_prefix)
    pair_rows.sort(key=lambda r: (r["test_set"], r["test_id"], r["distance"] if r["distance"] is not None else 99,
                                  r["shard"], r["key"]))
    shard_errors = sorted(_read_jsonl(errors_prefix), key=lambda e: (e["shard"], e["stage"]))
    shard_errors = [{"shard": p_["shard"], "tar": None, "parquet": None, "stage": "list", "errors": [p_["error"]]}
                    for p_ in shard_problems] + shard_errors
    nearest_array = _load_npy(nearest_path) if FileSystems.exists(nearest_path) else \
        np.full(side.n_images, NO_NEIGHBOUR, np.uint8)
    clear_folder(work, remove=True)
    return OverlapResult(config, radius, list(views), hashed, side, pair_rows, nearest_array,
                         len(shard_inputs), shard_errors, counters, time.time() - started,
                         similar[0] if similar else None)


def similar_thresholds(config: OverlapConfig) -> tuple[float, float, int, int] | None:
    """(similar, hash_similar, exact radius, per_image) of the descriptor stage (DescriptorSearch's
    fields after its index), or None when it is off."""
    from clipdata.dedup import descriptor

    if not config.descriptor:
        return None
    similar = descriptor.shared().similar if config.similar is None else float(config.similar)
    return similar, similar - descriptor.HASH_MARGIN, EXACT_RADIUS, int(config.per_image)


def semantic_test_side(config: OverlapConfig, embedder, side: TestSide) -> dict:
    """What the semantic stage's workers need: the readable test images' embeddings."""
    numbers = np.unique(side.owner).tolist()
    images = [hashed_test_sets.decode(side.refs[i].read()) for i in numbers]
    return {"checkpoint": config.embeddings, "threshold": config.semantic_threshold,
            "test_embeddings": embed_in_batches(embedder, images), "numbers": numbers}


def _save_npy(array: np.ndarray, path: str) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    with FileSystems.create(path) as handle:
        handle.write(buf.getvalue())


def _load_npy(path: str) -> np.ndarray:
    with FileSystems.open(path) as handle:
        return np.load(io.BytesIO(handle.read()))


def _read_jsonl(prefix: str) -> list[dict]:
    rows = []
    for match in sorted(FileSystems.match([prefix + "*"])[0].metadata_list, key=lambda m: m.path):
        with FileSystems.open(match.path) as handle:
            rows += [json.loads(line) for line in handle.read().decode("utf-8").splitlines() if line.strip()]
    return rows
