"""Searching one training shard against the test side (plain Python): the copy descriptor's search
with the pHash as its check (or the pHash range search alone, without the descriptor), and the
rule that makes a candidate of a (test image, training image) pair. The test side is flattened
here: one row per (test image, view), and one descriptor row per (test image, described view).
"""
from __future__ import annotations

import collections
import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from clipdata.dedup import hashed_test_sets
from clipdata.dedup.hashing import hex64, popcount64
from clipdata.dedup.training_shards import TrainHashes
from clipdata.pipeline.foundation import eval_sets

# With the descriptor, each training image keeps at most this many candidates, its most alike test
# images: the cost per training image stays bounded however many test images there are (at 100k
# test images and 4e-4 candidates per pair a training image would otherwise bring ~40). Three, not
# one: a test set may hold near copies of its own images (CIFAR-10's test set does). Pairs found
# on the descriptor alone (CROP_ALIKE, the pHash not checking) come after the others, whatever
# their cosine: a page of text matches other pages' crop windows at 0.92+, above a crop of
# itself on the whole picture, and would push that copy out.
PER_IMAGE = 3
# A candidate's orientation from the descriptor: the test image's whole rows as it is and mirrored
# (descriptor.TEST_VIEWS) against the training image's descriptor; when one cosine exceeds the
# other by this much, the verifier tries that orientation alone (half its placements). Measured on
# bench/dedup.py quality's candidates (2026-12-07): of 3,322 accepted copies 1 had a mirrored
# cosine 0.1+ above its true orientation's (a near-symmetric 20% crop; 0.05: 2, 0.02: 3), and 66%
# of the 1,340 other candidates get an orientation at 0.1.
ORIENTATION_MARGIN = 0.10
# A match on one of a test image's crop windows (a training image that is that crop) needs
# WINDOW_EXTRA more cosine than a whole-picture match, unless the two pHashes are within
# WINDOW_NEAR bits. A test image has ~20 windows: an unrelated picture gets ~20 tries at the
# threshold there against 2 on the whole picture (as it is, mirrored): matches on a window made a
# third of the candidates at scale, nearly all at 0.80-0.85 (those under 0.83 with pHashes more
# than 4 bits apart, the ones this leaves out, 14-15%); a crop of the picture mostly matches
# its window far above (0.97-1.00 for 20% crops, descriptor.view_input). Measured 2026-12-07 on
# every candidate of bench/dedup.py quality (both ways) and of a 200k x 10k scale run, each
# window's cosine and pHash distance recomputed: at +0.03 (4 bits) 15% fewer candidates at
# scale (13% fewer screened, 11% fewer pixel checks) and no copy lost (the quality run again:
# every cell as before, one false pair fewer); +0.04 lost a 20% crop (cosine 0.843), +0.06 four
# crops; without the pHash escape, 2% more left out.
WINDOW_EXTRA = 0.03
WINDOW_NEAR = 4
# A match on a crop window or on the training image's centre at or above this cosine is a
# candidate whatever the two pHashes: a 20% crop's framing can move its pHash 20-34 bits from the
# window or centre that shows it, beyond the radius, while the descriptor still finds it at
# 0.83-0.94 (bench/dedup.py quality: six of its lost 20% crops). Unrelated pictures rarely
# match a window this high: counted over every such match of the quality run and a 200k scale
# run, 0.92 adds 9 candidates at 200k (0.3%) and proposes 5 of those crops; 0.90 adds 49 and 6.
CROP_ALIKE = 0.92


def window_similar(similar: float) -> float:
    """The cosine a match on a crop window needs when the pHashes are not near (WINDOW_EXTRA)."""
    return similar + WINDOW_EXTRA


NO_NEIGHBOUR = 255          # nearest distance of a test image with no training hash within the radius
THUMB = "_thumb"            # a candidate's stored thumbnail while it moves between steps; never written out

# ---------------------------------------------------------------------------------------------
# The test side, flattened: one row per (test image, view)


@dataclass
class DescriptorRows:
    """The test side's copy descriptors as the descriptor index holds them, one row per (test
    image, described view). "Whole" rows are the picture as it is and mirrored
    (descriptor.TEST_VIEWS): a training image alike one of them is a candidate. The other rows
    are the crop windows among the pHash views (a 20% crop's copy is unlike the whole picture,
    cosine ~0.6, but alike the window that shows it): a training image alike one of them is a
    candidate when its pHash is within the radius of that window's too, so each row carries its
    view's pHash."""

    vectors: np.ndarray        # float16 (rows, DIM), unit length
    owner: np.ndarray          # int64: the global test image number of each row
    whole: np.ndarray          # bool: a whole-picture row
    code: np.ndarray           # uint64: the pHash of the row's view
    coded: np.ndarray          # bool: code is known (a whole row of a side hashed without that view)
    first_whole: np.ndarray    # int64 per test image: its first whole row (the rest follow), -1: none
    n_whole: np.ndarray        # int64 per test image: how many whole rows it has

    def __len__(self) -> int:
        return len(self.owner)


def descriptor_rows(per_image: list, dim: int | None = None) -> DescriptorRows:
    """DescriptorRows from, per test image (global number order), None (not described) or its
    rows as (vector, whole, pHash of the view or None), whole rows first."""
    from clipdata.dedup import descriptor

    vectors, owner, whole, code, coded = [], [], [], [], []
    first = np.full(len(per_image), -1, np.int64)
    n_whole = np.zeros(len(per_image), np.int64)
    for number, rows in enumerate(per_image):
        for vector, is_whole, hashed in rows or ():
            if is_whole:
                if first[number] < 0:
                    first[number] = len(owner)
                n_whole[number] += 1
            vectors.append(np.asarray(vector, np.float16))
            owner.append(number)
            whole.append(bool(is_whole))
            code.append(0 if hashed is None else int(hashed))
            coded.append(hashed is not None)
    dim = dim or (len(vectors[0]) if vectors else descriptor.DIM)
    return DescriptorRows(np.stack(vectors) if vectors else np.zeros((0, dim), np.float16),
                          np.array(owner, np.int64), np.array(whole, bool), np.array(code, np.uint64),
                          np.array(coded, bool), first, n_whole)


@dataclass
class TestSide:
    """Every readable test image's views, flattened for the index; images numbered across sets."""

    names: list[str]                   # test set of each global image number
    ids: list[str]                     # test image id of each global image number
    refs: list[eval_sets.ImageRef]
    codes: np.ndarray                  # uint64, one per (image, view), in image number order
    owner: np.ndarray                  # int64: the global image number of each code (ascending)
    view: np.ndarray                   # int16: index into view_names of each code
    view_names: list[str]
    desc: DescriptorRows | None = None   # the copy descriptors; None when the descriptor is not used
    # the descriptor index's IVF lists and codebooks, trained once where the job starts
    # (index.train_ivf: FAISS's bytes) so that every worker's index is the same; None: a flat index
    desc_ivf: bytes | None = None

    @property
    def n_images(self) -> int:
        return len(self.ids)

    @functools.cached_property
    def _starts(self) -> np.ndarray:
        return np.searchsorted(self.owner, np.arange(self.n_images + 1))

    def codes_of(self, number: int) -> slice:
        """The rows of codes/owner/view that belong to test image `number`."""
        return slice(int(self._starts[number]), int(self._starts[number + 1]))

    @functools.cached_property
    def sorted_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(order, codes[order]): the test views' hashes sorted, for lookups of identical ones."""
        order = np.argsort(self.codes, kind="stable")
        return order, self.codes[order]


def flatten(hashed: list[hashed_test_sets.HashedTestSet], view_names: list[str]) -> TestSide:
    """Number the test images across sets (set by set, in listing order) and stack their views;
    a view whose hash repeats an earlier one of the same image is indexed once. With descriptors,
    each image's whole rows (as it is, mirrored) and the rows of its crop-window views."""
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
    if hashed and all(h.descriptors is not None and h.view_descriptors is not None for h in hashed):
        from clipdata.dedup import descriptor

        wholes = [d for h in hashed for d in h.descriptors]
        windows = [d for h in hashed for d in h.view_descriptors]
        per_image = []
        for image_views, whole, by_view in zip(views, wholes, windows):
            if whole is None:
                per_image.append(None)
                continue
            rows = []
            for name, vector in zip(descriptor.TEST_VIEWS, whole):
                rows.append((vector, True, image_views.get(name)))
            for name, vector in (by_view or {}).items():
                if name not in descriptor.WHOLE_VIEWS and name in image_views:
                    rows.append((vector, False, image_views[name]))
            per_image.append(rows)
        side.desc = descriptor_rows(per_image)
    return side


# ---------------------------------------------------------------------------------------------
# Searching one shard (plain Python)


@dataclass
class DescriptorSearch:
    """How the copy descriptor takes part in one search (see search_shard)."""

    index: object                  # index.DescriptorIndex over side.desc.vectors
    similar: float                 # a pair at or above this cosine is a candidate (windows: with its pHash)
    per_image: int = PER_IMAGE     # candidates kept per training image, most alike first


@dataclass
class TrainDescriptors:
    """The copy descriptors of one shard's training images: as stored and of their centre view
    (the centre 70% without the padding bars, hashing.train_views' "centre", whose pHash is
    `phash_centre`: it meets a test view when the test image is the cropped one)."""

    whole: np.ndarray              # float32 (n, DIM); zero rows where not described
    described: np.ndarray          # bool (n,): a readable stored thumbnail
    centre: np.ndarray             # float32 (n, DIM); zero rows where not described
    centre_described: np.ndarray   # bool (n,): described and with a centre view (phash_centre)


DESCRIBE_BLOCK = 1024   # training images described at a time: their network inputs (~24 KB an
                        # image, centre view included) stay bounded whatever the shard's size


def describe_training(train: TrainHashes) -> TrainDescriptors:
    """The descriptors of a shard's stored thumbnails and of their centre views: each thumbnail
    decoded once, both inputs through the network together, DESCRIBE_BLOCK images at a time. A
    missing or unreadable thumbnail is not described (its pairs are left to the hashes)."""
    from clipdata.dedup import descriptor

    n = len(train.codes)
    has_centre = train.has_centre if train.centre is not None and train.has_centre is not None else np.zeros(n, bool)
    out = TrainDescriptors(np.zeros((n, descriptor.DIM), np.float32), np.zeros(n, bool),
                           np.zeros((n, descriptor.DIM), np.float32), np.zeros(n, bool))
    for start in range(0, n, DESCRIBE_BLOCK):
        inputs, whole_at, centre_at = _training_inputs(train, has_centre, range(start, min(n, start + DESCRIBE_BLOCK)))
        if not inputs:
            continue
        described = descriptor.shared().describe_inputs(np.stack(inputs))
        for rows, vectors, flags in ((whole_at, out.whole, out.described), (centre_at, out.centre, out.centre_described)):
            if rows:
                vectors[list(rows)] = described[list(rows.values())]
                flags[list(rows)] = True
    return out


def _training_inputs(train: TrainHashes, has_centre: np.ndarray, rows: range) -> tuple[list, dict, dict]:
    """(network inputs, {image row: position of its whole input}, {image row: position of its
    centre's}) of the training images `rows` with a readable stored thumbnail."""
    from clipdata.dedup import descriptor, hashing
    from clipdata.pipeline.foundation import thumbs

    inputs, whole_at, centre_at = [], {}, {}
    for j in rows:
        data = train.thumbs[j] if j < len(train.thumbs) else None
        if data is None:
            continue
        try:
            pixels = thumbs.decode(data)
            whole = descriptor.to_input(pixels)
            centre = descriptor.to_input(hashing.pad_to_square(hashing.centre_crop(
                hashing.stored_content(Image.fromarray(pixels)), hashing.TRAIN_CENTRE_KEEP))) if has_centre[j] else None
        except ValueError:
            continue
        whole_at[j] = len(inputs)
        inputs.append(whole)
        if centre is not None:
            centre_at[j] = len(inputs)
            inputs.append(centre)
    return inputs, whole_at, centre_at


@dataclass
class ShardSearch:
    """What searching one shard found."""

    candidates: list[dict]       # one per (test image, training sample), sorted
    hash_far: int                # descriptor matches on a window or the training centre left out:
                                 # under CROP_ALIKE, their pHashes farther apart than the radius
    nearest: np.ndarray          # uint8 per test image: nearest pHash distance within the radius
                                 # among the pairs searched (NO_NEIGHBOUR: none)
    beyond_cap: int = 0          # candidates left out: their training image had per_image more alike
    window_weak: int = 0         # descriptor matches on a crop window left out: under window_similar,
                                 # their pHashes more than WINDOW_NEAR bits apart


SEARCH_CHUNK = 512   # training images searched at a time: bounds the memory of their matches
                     # whatever the shard's size


def search_shard(index, side: TestSide, train: TrainHashes, radius: int, descriptors: DescriptorSearch | None = None,
                 train_desc: TrainDescriptors | None = None) -> ShardSearch:
    """The candidate pairs of one shard, one per (test image, training sample), searched
    SEARCH_CHUNK training images at a time.

    Without `descriptors`: every pHash match within `radius` in `index` (the test views), at its
    nearest pair of views (`view` names the test image's view, with " / train centre" when the
    training image's centre view was the nearer).

    With them (`train_desc` from describe_training) the descriptor proposes and the pHash checks:
    each training image's descriptor is searched in the descriptor index (the test side's
    whole-picture and crop-window rows) for rows at or above `similar`; a whole-picture row
    makes a candidate, a window row one when the training pHash is within `radius` of that
    window's (WINDOW_EXTRA) or the cosine is CROP_ALIKE or more; the training image's centre view
    (described from the stored thumbnail) is searched the same way, with its own pHash (the test
    image is the crop). Pairs whose pHashes are identical are candidates whatever their cosine,
    at most `per_image` per training image (PER_IMAGE), and a training image
    without a descriptor falls back to its pHash matches. The cost per training image is a
    search of the descriptor index (IVF at scale: a fixed number of lists) and a popcount per
    row it returns, not a scan of every test view. Each pair carries its best cosine as
    `similarity`, and its nearest pHash views as `distance` and `view` (None and "descriptor"
    when beyond the radius)."""
    nearest = np.full(side.n_images, NO_NEIGHBOUR, np.uint8)
    if not len(train.codes):
        return ShardSearch([], 0, nearest)
    described_search = descriptors is not None and train_desc is not None and side.desc is not None
    pairs: dict[tuple[int, int], tuple] = {}
    checked: set[tuple[int, int]] = set()   # pairs with a match that is not on the descriptor alone
    far, weak = 0, 0
    all_codes, all_owner, all_view = train.search_codes()   # every training hash, once per shard
    for start in range(0, len(train.codes), SEARCH_CHUNK):
        rows = np.arange(start, min(start + SEARCH_CHUNK, len(train.codes)))
        part = (all_owner >= start) & (all_owner < rows[-1] + 1)
        hashes = (all_codes[part], all_owner[part], all_view[part])   # the chunk's, all views
        if described_search:
            left_out = _descriptor_pairs(side, train, descriptors, train_desc, radius, rows, hashes, pairs, checked)
            far, weak = far + left_out[0], weak + left_out[1]
            hashed_only = rows[~train_desc.described[rows]]
        else:
            hashed_only = rows
        _hash_pairs(index, side, hashes, radius, hashed_only, pairs)
    beyond = _cap_per_image(pairs, descriptors, checked) if described_search else 0
    candidates = []
    for (t, j), (distance, view, sim, mirrored) in pairs.items():
        if distance is not None:
            nearest[t] = min(int(nearest[t]), distance)
        candidates.append({
            "test_set": side.names[t], "test_index": t, "test_id": side.ids[t],
            "key": train.keys[j], "url": train.urls[j], "caption": train.captions[j],
            "train_phash": hex64(train.codes[j]), "distance": distance, "view": view,
            "similarity": None if sim != sim else round(sim, 4),
            # the descriptor's own verdict: an unalike pair needs more of the pixels (verify.py)
            "alike": None if sim != sim or not described_search else bool(sim >= descriptors.similar),
            # the orientation the descriptor sees (verify tries it alone): mirrored, as it is, None: both
            "mirrored": mirrored,
            # the picture's size before the download padded it (verify finds its box from it)
            "original_size": train.original_sizes[j] if j < len(train.original_sizes) else None,
            THUMB: train.thumbs[j] if j < len(train.thumbs) else None,
        })
    return ShardSearch(sorted(candidates, key=lambda c: (c["test_index"], c["key"])), far, nearest, beyond, weak)


def _view_name(side: TestSide, view: int, train_view: int) -> str:
    from clipdata.dedup.hashing import TRAIN_VIEWS

    name = side.view_names[int(view)]
    return name if train_view == 0 else f"{name} / train {TRAIN_VIEWS[int(train_view)]}"


def _hash_pairs(index, side: TestSide, hashes: tuple, radius: int, rows: np.ndarray, pairs: dict) -> None:
    """Every pHash match within `radius` of the training images `rows` (all their views, from
    `hashes`: (codes, image row, training view) of the chunk), at its nearest pair of views, into
    `pairs` without a cosine."""
    from clipdata.dedup.index import candidate_pairs

    if not len(rows):
        return
    codes, owner, train_view = hashes
    part = np.isin(owner, rows)
    found = candidate_pairs(index, side.owner, codes[part], radius, view_index=side.view,
                            train_owner=owner[part], train_view=train_view[part])
    for k in range(len(found.test)):
        pairs[int(found.test[k]), int(found.train[k])] = (
            int(found.distance[k]), _view_name(side, found.view[k], found.train_view[k]), math.nan, None)


def _descriptor_pairs(side: TestSide, train: TrainHashes, descriptors: DescriptorSearch,
                      train_desc: TrainDescriptors, radius: int, rows: np.ndarray, hashes: tuple,
                      pairs: dict, checked: set) -> tuple[int, int]:
    """search_shard's decision for the training images `rows` with a descriptor; adds their
    candidates (best cosine each) to `pairs`, and those with a match on a whole-picture row or
    with its pHash checked to `checked`; returns how many window or centre rows at or above
    `similar` it left out (for their pHash beyond the radius, under CROP_ALIKE; on a window,
    under window_similar with pHashes more than WINDOW_NEAR bits apart)."""
    rows_of = side.desc
    best: dict[tuple[int, int], float] = {}
    far, weak = 0, 0
    # the training images as they are: a whole row, or a window whose pHash is within the
    # radius (and near, or the cosine window_similar); their centre views (the test image is the
    # crop): a row whose pHash is within the radius of the centre's. A window or centre match at
    # CROP_ALIKE or above, whatever the pHashes.
    for vectors, has, codes, whole_counts in ((train_desc.whole, train_desc.described, train.codes, True),
                                              (train_desc.centre, train_desc.centre_described, train.centre, False)):
        queries = rows[has[rows]]
        if not len(queries):
            continue
        q, r, s = descriptors.index.similar_pairs(vectors[queries], descriptors.similar)
        j_of = queries[q]
        bits = popcount64(codes[j_of] ^ rows_of.code[r])
        near = rows_of.coded[r] & (bits <= radius)
        sure = s >= CROP_ALIKE
        whole = rows_of.whole[r] if whole_counts else np.zeros(len(r), bool)
        if whole_counts:
            weak_window = near & ~whole & (s < window_similar(descriptors.similar)) & (bits > WINDOW_NEAR)
            weak += int(weak_window.sum())
            checks = (near & ~weak_window) | whole
        else:
            checks = near
        accept = checks | sure
        far += int((~near & ~whole & ~sure).sum())
        for j, t, sim, checked_too in zip(j_of[accept].tolist(), rows_of.owner[r[accept]].tolist(), s[accept].tolist(),
                                          checks[accept].tolist()):
            if sim > best.get((t, j), -2.0):
                best[t, j] = sim
            if checked_too:
                checked.add((t, j))
    # identical pHashes, whatever the cosine (a lookup, not a scan)
    described = rows[train_desc.described[rows]]
    for t, j in _identical_pairs(side, hashes, described):
        if (t, j) not in best:
            best[t, j] = _whole_cosine(side, t, train_desc.whole[j])
    for (t, j), sim in best.items():
        distance, view = _nearest_views(side, train, t, j, radius)
        pairs[t, j] = (distance, view, sim, _orientation(side, t, train_desc.whole[j]))
    return far, weak


def _identical_pairs(side: TestSide, hashes: tuple, rows: np.ndarray) -> list[tuple[int, int]]:
    """(test image, training row) pairs of `rows` with identical pHashes (any views of either,
    from the chunk's `hashes`): each training hash looked up among the test views' sorted hashes."""
    codes, owner, _ = hashes
    part = np.isin(owner, rows)
    codes, owner = codes[part], owner[part]
    order, sorted_codes = side.sorted_codes
    lo = np.searchsorted(sorted_codes, codes, "left")
    hi = np.searchsorted(sorted_codes, codes, "right")
    found = set()
    for j, a, b in zip(owner.tolist(), lo.tolist(), hi.tolist()):
        for i in order[a:b].tolist():
            found.add((int(side.owner[i]), j))
    return sorted(found)


def _whole_cosines(side: TestSide, t: int, vector: np.ndarray) -> list[float]:
    """The cosines of `vector` with test image t's whole rows, in descriptor.TEST_VIEWS order (as
    it is, mirrored); empty when it has none."""
    first, n = int(side.desc.first_whole[t]), int(side.desc.n_whole[t])
    if first < 0 or not n:
        return []
    return (side.desc.vectors[first:first + n].astype(np.float32) @ vector).tolist()


def _whole_cosine(side: TestSide, t: int, vector: np.ndarray) -> float:
    """The best cosine of `vector` with test image t's whole rows (NaN: it has none)."""
    return max(_whole_cosines(side, t, vector), default=math.nan)


def _orientation(side: TestSide, t: int, vector: np.ndarray) -> bool | None:
    """Whether the training image is test image t mirrored (True) or as it is (False), by the
    cosines of t's two whole rows (as it is, mirrored); None when they are within
    ORIENTATION_MARGIN of each other (a near-symmetric picture: both are tried)."""
    cosines = _whole_cosines(side, t, vector)
    if len(cosines) != 2:
        return None
    as_is, mirrored = cosines
    if abs(mirrored - as_is) <= ORIENTATION_MARGIN:
        return None
    return mirrored > as_is


def _nearest_views(side: TestSide, train: TrainHashes, t: int, j: int, radius: int) -> tuple[int | None, str]:
    """(distance, view) of a pair's nearest pHash views (the training image's centre view too),
    as the pHash search reports them; (None, "descriptor") when none is within the radius."""
    span = side.codes_of(t)
    codes = side.codes[span]
    if not len(codes):
        return None, "descriptor"
    d = popcount64(codes ^ train.codes[j])
    at, train_view = int(np.argmin(d)), 0
    best = int(d[at])
    if train.centre is not None and train.has_centre is not None and train.has_centre[j]:
        dc = popcount64(codes ^ train.centre[j])
        if int(dc.min()) < best:
            at, train_view, best = int(np.argmin(dc)), 1, int(dc.min())
    if best > radius:
        return None, "descriptor"
    return best, _view_name(side, side.view[span][at], train_view)


def _cap_per_image(pairs: dict, descriptors: DescriptorSearch, checked: set) -> int:
    """Keep at most descriptors.per_image candidates per training image: those in `checked` (a
    whole-picture match, or the pHash checked) first, then those found on the descriptor alone;
    each the highest cosines first (ties: the lower test image number); pairs without a cosine
    (no descriptor) and identical hashes are kept whatever their count. Returns how many were
    left out."""
    ranked: dict[int, list] = collections.defaultdict(list)
    for (t, j), (distance, _, sim, _) in pairs.items():
        if sim == sim and distance != 0:
            ranked[j].append(((t, j) not in checked, -sim, t))
    left_out = 0
    for j, alike in ranked.items():
        if len(alike) > descriptors.per_image:
            for _, _, t in sorted(alike)[descriptors.per_image:]:
                del pairs[t, j]
                left_out += 1
    return left_out
