"""Searching one training shard against the test side (plain Python): the pHash range search, the
copy descriptor's search, and the rule that makes a candidate of a (test image, training image)
pair. The test side is flattened here: one row per (test image, view).
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from clipdata.dedup import hashed_test_sets
from clipdata.dedup.hashing import hex64
from clipdata.dedup.training_shards import TrainHashes
from clipdata.pipeline.foundation import eval_sets

# With the descriptor, each training image keeps at most this many candidates, its most alike test
# images: the cost per training image stays bounded however many test images there are (at 100k
# test images and 4e-4 candidates per pair a training image would otherwise bring ~40). Three, not
# one: a test set may hold near copies of its own images (CIFAR-10's test set does).
PER_IMAGE = 3
EXACT_RADIUS = 0            # with the descriptor: pHash-identical pairs are candidates whatever their cosine
NO_NEIGHBOUR = 255          # nearest distance of a test image with no training hash within the radius
THUMB = "_thumb"            # a candidate's stored thumbnail while it moves between steps; never written out

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
