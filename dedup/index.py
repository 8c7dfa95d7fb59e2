"""Hamming-radius search of 64-bit hashes: a FAISS binary index over the test side's views, the
training side's hashes streamed past it as queries, shard by shard.

    stacked = stack_views([hashing.views(im) for im in test_images])   # several views per image
    index = HashIndex(stacked.hashes)                                   # exact ("flat")
    for shard_hashes in shards:                                         # billions, in batches
        pairs = candidate_pairs(index, stacked.owner, shard_hashes, DEFAULT_RADIUS,
                                view_index=stacked.view)
        # pairs.test[k] (test image), pairs.train[k] (row of shard_hashes), pairs.view[k]
        # (stacked.names[...]), pairs.distance[k]: one row per (test image, train image)

Radius is INCLUSIVE here: a pair is found when its Hamming distance is <= radius. (FAISS's own
`range_search` keeps distances strictly below its radius; HashIndex passes radius + 1.)

Kinds: "flat" (IndexBinaryFlat) is exact, a brute-force popcount scan in FAISS's SIMD code;
"ivf" (IndexBinaryIVF, trained on the indexed hashes) visits only `nprobe` of `nlist` clusters
per query: faster, approximate (recall measured in bench/dedup.py speed and tests/dedup/test_index.py).
A HashIndex pickles as its serialized FAISS index, so a Beam DoFn can ship it or rebuild it in
setup() from the test hashes (building a flat index of 1M hashes takes milliseconds).
"""
from __future__ import annotations

import math
from typing import Mapping, NamedTuple, Sequence

import faiss
import numpy as np

from clipdata.dedup.hashing import as_hashes, hamming, to_codes

BITS = 64
KINDS = ("flat", "ivf")
CHOICES = ("auto",) + KINDS   # what `clipdata dedup --index` takes
# With "auto" the pHash index stays exact (flat: a popcount scan, ~0.7 ns per test view and query;
# with the descriptor it is searched only for training images without one) and the descriptor
# index turns IVF from this many rows (~21 per test image: the whole picture, its mirror, the crop
# windows): there a flat scan costs ~0.1 ms per query and grows with the test side, while IVF
# visits ~4 sqrt(rows) centroids and DESCRIPTOR_NPROBE lists (below).
AUTO_IVF_ROWS = 20_000
# Chosen with bench/dedup.py quality (radius sweep there): with the default views (23 per test
# image, 2 per training image), the smallest radius at which every transformation measured there
# (JPEG q30-90, resize 0.25-2x, brightness +-20%, mirror, 5-20% crops, a caption) is found with
# hash recall >= 0.95 on photo-like images in both directions; each 2 bits more (pHash distances
# are even) about doubles the candidates to verify. Pairs within it are verified (verify.py).
DEFAULT_RADIUS = 14
QUERY_BATCH = 1 << 20      # queries per FAISS call: bounds the memory of one call's results
IVF_TRAIN_ITERATIONS = 10  # k-means iterations; FAISS's 25 take seconds more and find no better lists


class Matches(NamedTuple):
    """Pairs within the radius, as parallel arrays sorted by (query, index)."""
    query: np.ndarray     # int64: row of the queries
    index: np.ndarray     # int64: position in the index
    distance: np.ndarray  # int32: Hamming distance, <= radius


class Candidates(NamedTuple):
    """(test image, training image) pairs, one row per pair at its smallest distance over the
    test image's views (and the training image's, when it has several), sorted by (train, test)."""
    test: np.ndarray      # int64: test image (view_owner's values)
    train: np.ndarray     # int64: training image: row of the training hashes given (train_owner's values)
    view: np.ndarray      # int64: which view of the test image came closest (view_index's values)
    distance: np.ndarray  # int32
    train_view: np.ndarray | None = None  # int64: which training view (train_view's values), when given


class StackedViews(NamedTuple):
    """Every view hash of every test image, flattened for the index."""
    hashes: np.ndarray    # uint64
    owner: np.ndarray     # int64: test image of each hash
    view: np.ndarray      # int64: position of the view's name in `names`
    names: tuple          # view names


def _check_radius(radius: int) -> int:
    if int(radius) != radius or not 0 <= radius <= BITS:
        raise ValueError(f"radius must be an integer in 0..{BITS}, not {radius!r}")
    return int(radius)


def _empty_matches() -> Matches:
    return Matches(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32))


def _sorted_matches(query: np.ndarray, index: np.ndarray, distance: np.ndarray) -> Matches:
    order = np.lexsort((index, query))
    return Matches(query[order].astype(np.int64), index[order].astype(np.int64),
                   distance[order].astype(np.int32))


class HashIndex:
    """The indexed side's uint64 hashes (or (n, 8) uint8 codes) in a FAISS binary index."""

    def __init__(self, hashes: np.ndarray, kind: str = "flat", nlist: int | None = None,
                 nprobe: int | None = None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        hashes = as_hashes(hashes)
        self.kind = kind
        self.size = len(hashes)
        codes = to_codes(hashes)
        if kind == "flat":
            self.nlist, self.nprobe = None, None
            self._index = faiss.IndexBinaryFlat(BITS)
        else:
            self.nlist = nlist or default_nlist(self.size)
            self.nprobe = nprobe or max(1, self.nlist // 8)
            if self.size < self.nlist:
                raise ValueError(f"an IVF index of {self.nlist} lists needs at least {self.nlist} "
                                 f"hashes to train on, not {self.size}; use kind='flat'")
            quantizer = faiss.IndexBinaryFlat(BITS)
            self._index = faiss.IndexBinaryIVF(quantizer, BITS, self.nlist)
            self._index.own_fields = True
            quantizer.this.disown()
            self._index.cp.niter = IVF_TRAIN_ITERATIONS
            self._index.train(codes)
            self._index.nprobe = self.nprobe
        if self.size:
            self._index.add(codes)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        extra = f", nlist={self.nlist}, nprobe={self.nprobe}" if self.kind == "ivf" else ""
        return f"HashIndex({self.size} hashes, kind={self.kind!r}{extra})"

    # Pickled as FAISS's own serialization: exact, and no retraining on the other side.
    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k != "_index"}
        state["faiss_index"] = faiss.serialize_index_binary(self._index)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        # deserialize returns the concrete class, owning its C++ object (a downcast proxy of
        # it would not: it would dangle once the first proxy is collected)
        self._index = faiss.deserialize_index_binary(state.pop("faiss_index"))
        self.__dict__.update(state)
        if self.kind == "ivf":
            self._index.nprobe = self.nprobe

    def range_search(self, queries: np.ndarray, radius: int, batch_size: int = QUERY_BATCH) -> Matches:
        """Every (query, indexed hash) pair at Hamming distance <= radius (inclusive)."""
        radius = _check_radius(radius)
        codes = to_codes(as_hashes(queries))
        if not self.size or not len(codes):
            return _empty_matches()
        parts = []
        for start in range(0, len(codes), batch_size):
            lims, dist, idx = self._index.range_search(codes[start:start + batch_size], radius + 1)
            counts = np.diff(lims).astype(np.int64)
            query = np.repeat(np.arange(start, start + len(counts), dtype=np.int64), counts)
            parts.append((query, idx.astype(np.int64), dist.astype(np.int32)))
        return _sorted_matches(*(np.concatenate(p) for p in zip(*parts)))

    def knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances int32 (n, k), positions int64 (n, k)) of the k nearest indexed hashes of
        each query, nearest first; where fewer exist, position -1 and distance BITS + 1."""
        codes = to_codes(as_hashes(queries))
        if not self.size or not len(codes):
            return (np.full((len(codes), k), BITS + 1, np.int32), np.full((len(codes), k), -1, np.int64))
        dist, idx = self._index.search(codes, k)
        dist = dist.astype(np.int32)
        idx = idx.astype(np.int64)
        dist[idx < 0] = BITS + 1
        return dist, idx


def hash_kind(choice: str, n_views: int) -> str:
    """The pHash index `--index choice` builds over n_views test views."""
    _check_choice(choice)
    return "ivf" if choice == "ivf" else "flat"


def descriptor_kind(choice: str, n_rows: int) -> str:
    """The descriptor index `--index choice` builds over n_rows test descriptors."""
    _check_choice(choice)
    if choice == "auto":
        return "ivf" if n_rows >= AUTO_IVF_ROWS else "flat"
    return choice


def _check_choice(choice: str) -> None:
    if choice not in CHOICES:
        raise ValueError(f"the index must be one of {', '.join(CHOICES)}, not {choice!r}")


def default_nlist(n: int) -> int:
    """About 4 sqrt(n) lists, with FAISS's 39 training points per list when n is small."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def brute_force_pairs(test_codes: np.ndarray, train_codes: np.ndarray, radius: int,
                      block: int = 1 << 22) -> Matches:
    """The numpy popcount reference of HashIndex(test).range_search(train, radius): every
    (train row, test position) pair at distance <= radius, as Matches(query=train, index=test).
    Takes uint64 hashes or (n, 8) uint8 codes."""
    radius = _check_radius(radius)
    test, train = as_hashes(test_codes), as_hashes(train_codes)
    if not len(test) or not len(train):
        return _empty_matches()
    rows = max(1, block // len(test))  # about `block` distances in memory at a time
    parts = []
    for start in range(0, len(train), rows):
        d = hamming(train[start:start + rows, None], test[None, :])
        q, i = np.nonzero(d <= radius)
        parts.append((q + start, i, d[q, i]))
    return _sorted_matches(*(np.concatenate(p) for p in zip(*parts)))


def stack_views(view_hashes: Sequence[Mapping[str, int]], names: Sequence[str] | None = None,
                drop_repeats: bool = True) -> StackedViews:
    """Flatten per-image {view name: hash} dicts (hashing.views' output, in test-image order)
    for the index. With drop_repeats a view whose hash equals an earlier view of the same image
    (a square picture's "border" is its "image") is indexed once, under the earlier name."""
    if names is None:
        names = tuple(dict.fromkeys(name for views in view_hashes for name in views))
    names = tuple(names)
    position = {name: i for i, name in enumerate(names)}
    hashes, owner, view = [], [], []
    for i, views in enumerate(view_hashes):
        seen = set()
        for name, h in views.items():
            if drop_repeats and h in seen:
                continue
            seen.add(h)
            hashes.append(h)
            owner.append(i)
            view.append(position[name])
    return StackedViews(np.array(hashes, dtype=np.uint64), np.array(owner, dtype=np.int64),
                        np.array(view, dtype=np.int64), names)


def candidate_pairs(index: HashIndex, view_owner: np.ndarray, train_hashes: np.ndarray, radius: int,
                    view_index: np.ndarray | None = None, train_owner: np.ndarray | None = None,
                    train_view: np.ndarray | None = None) -> Candidates:
    """The (test image, training image) pairs with some view of the test image within `radius`
    (inclusive) of the training hash; `index` holds the test views, `view_owner[j]` is the test
    image of indexed view j and `view_index[j]` which view it is (default: its rank among its
    owner's views, in index order). A training image may have several hashes too:
    `train_owner[k]` is the training image of hash k (default: k) and `train_view[k]` which of its
    views it is. One row per pair, at its smallest distance."""
    view_owner = np.asarray(view_owner, dtype=np.int64)
    if len(view_owner) != len(index):
        raise ValueError(f"view_owner has {len(view_owner)} entries for an index of {len(index)}")
    if view_index is None:
        view_index = _rank_within_owner(view_owner)
    view_index = np.asarray(view_index, dtype=np.int64)
    n = len(as_hashes(train_hashes))
    owner = np.arange(n, dtype=np.int64) if train_owner is None else np.asarray(train_owner, dtype=np.int64)
    tview = np.zeros(n, np.int64) if train_view is None else np.asarray(train_view, dtype=np.int64)
    if len(owner) != n or len(tview) != n:
        raise ValueError(f"train_owner / train_view need one entry per training hash ({n})")
    matches = index.range_search(train_hashes, radius)
    test = view_owner[matches.index]
    view = view_index[matches.index]
    train, tv = owner[matches.query], tview[matches.query]
    # Smallest distance per (train, test), ties to the first training view, then test view.
    order = np.lexsort((view, tv, matches.distance, test, train))
    train, test, view, distance, tv = train[order], test[order], view[order], matches.distance[order], tv[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (train[1:] != train[:-1]) | (test[1:] != test[:-1])
    return Candidates(test[first], train[first], view[first], distance[first],
                      tv[first] if train_view is not None else None)


def _rank_within_owner(owner: np.ndarray) -> np.ndarray:
    order = np.argsort(owner, kind="stable")
    sorted_owner = owner[order]
    starts = np.ones(len(owner), dtype=bool)
    starts[1:] = sorted_owner[1:] != sorted_owner[:-1]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(owner)), 0))
    rank = np.empty(len(owner), dtype=np.int64)
    rank[order] = np.arange(len(owner)) - group_start
    return rank


class DescriptorIndex:
    """The test side's copy descriptors (unit rows, dedup/descriptor.py) in a FAISS inner-product
    index; `similar_pairs` finds every (query, indexed row) at or above a cosine, with its exact
    cosine.

    "flat" is exact: per query one pass over the n indexed rows (n x DIM multiply-adds, done by
    BLAS in blocks: ~1 ms for 200k rows of 128 on one core). "ivf" keeps the rows in `nlist`
    lists (k-means, `train_ivf`) and visits the `nprobe` lists nearest each query: per query
    nlist centroids + nprobe * n / nlist rows, ~1/70 of the flat scan at 100k test images (2.1M
    rows), approximate (a copy whose row sits in an unvisited list is missed; measured below
    DESCRIPTOR_NPROBE). The rows in the lists are 4-bit codes scanned with FAISS's fast-scan
    (IVF-PQ, one code per dimension of the residual, 64 bytes a row against 256 as float16):
    ~2.5x faster a row; their cosine is only estimated (below the exact one by 0.015 on average,
    0.077 at the 99.9th percentile), so the scan keeps pairs down to SCAN_MARGIN below the
    threshold and the exact cosine of each, from the float rows, decides."""

    def __init__(self, rows: np.ndarray, kind: str = "flat", nlist: int | None = None, nprobe: int | None = None,
                 trained: bytes | None = None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        # the caller's rows (float16 in a TestSide) give the exact cosines: kept as they are, not
        # copied, and added in blocks (at 100k test images a float32 copy would be 1.2 GB in
        # each worker)
        self._rows = np.asarray(rows)
        self.kind, self.size, self.dim = kind, len(self._rows), self._rows.shape[1]
        if kind == "flat":
            self._index = faiss.IndexFlatIP(self.dim)
        else:
            if trained is None:
                trained = train_ivf(self._rows, nlist)
            # trained where the job starts: every worker the same lists and codebooks
            self._index = faiss.deserialize_index(np.frombuffer(trained, np.uint8))
            self._index.nprobe = min(self._index.nlist, nprobe or DESCRIPTOR_NPROBE)
        for start in range(0, self.size, RERANK_BATCH):
            self._index.add(np.ascontiguousarray(self._rows[start:start + RERANK_BATCH], dtype=np.float32))

    def __len__(self) -> int:
        return self.size

    def similar_pairs(self, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query row, indexed row, cosine) of every pair with cosine >= threshold, sorted by query."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if not self.size or not len(queries):
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        # FAISS keeps inner products strictly above its radius: for the exact flat index the
        # nearest float below the threshold (so >= it is kept), for the estimating IVF scan the margin
        radius = np.nextafter(np.float32(threshold), -1) if self.kind == "flat" else threshold - SCAN_MARGIN
        lims, sims, idx = self._index.range_search(queries, float(radius))
        query = np.repeat(np.arange(len(queries), dtype=np.int64), np.diff(lims).astype(np.int64))
        idx = idx.astype(np.int64)
        if self.kind == "flat":
            return query, idx, sims.astype(np.float32)
        sims = np.empty(len(idx), np.float32)
        for start in range(0, len(idx), RERANK_BATCH):   # bounded memory: a batch of row pairs at a time
            part = slice(start, start + RERANK_BATCH)
            sims[part] = np.einsum("ij,ij->i", queries[query[part]], self._rows[idx[part]].astype(np.float32))
        keep = sims >= np.float32(threshold)
        return query[keep], idx[keep], sims[keep]


# Lists visited per query by the IVF descriptor index. Measured on bench/dedup.py scale's 10,000
# test images (230k rows, nlist 1,918; one-off, 2026-12-06): of the (query, row) pairs at cosine
# >= 0.80 that a flat scan finds, with the test images' own 20%-crop windows as queries (the
# hardest copies: nearly half of them at 0.80-0.90), nprobe 16 kept 0.968, 32 0.986, 64 0.995
# (0.992 of those under 0.90); with training images as queries (2,000, whole and centre views)
# every pair from 16 on. The cost per query is nlist + nprobe * rows / nlist rows.
DESCRIPTOR_NPROBE = 64
LIST_TRAIN_POINTS = 64   # k-means points per list: FAISS's 256 take 4x longer for no better lists
# How far below the threshold the fast-scan estimate may fall and the pair still be checked
# exactly. Measured (one-off, 2026-12-07) on 20,000 training descriptors of bench/dedup.py's
# quality and scale runs (copies and unrelated) against 540k rows (the quality test side and a
# scale test side): exact - estimate over the 17,366 pairs >= 0.80 had mean 0.015, sd 0.016,
# 99.9th percentile 0.077; with the margin 0.10 or 0.15 the fast-scan index found exactly the
# pairs the index it replaced found (float16 rows, IndexIVFScalarQuantizer, both visiting 64
# lists); each pair the scan keeps costs one 128-value dot product (~4.6 pairs a query there at 0.15).
SCAN_MARGIN = 0.15
RERANK_BATCH = 1 << 16   # pairs whose exact cosines are computed (rows added) at once (~32 MB)
FAST_SCAN_BITS = 4       # FAISS's fast-scan codes: 4 bits per sub-vector


def train_lists(rows: np.ndarray, nlist: int | None = None) -> np.ndarray:
    """The IVF lists (centroids, (nlist, dim) float32) of a descriptor index over `rows`: spherical
    k-means on a sample of LIST_TRAIN_POINTS rows per list, deterministic for the same rows."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    nlist = nlist or default_nlist(len(rows))
    if len(rows) < nlist:
        raise ValueError(f"an IVF index of {nlist} lists needs at least {nlist} descriptors "
                         f"to train on, not {len(rows)}; use kind='flat'")
    kmeans = faiss.Kmeans(rows.shape[1], nlist, niter=IVF_TRAIN_ITERATIONS, spherical=True, seed=1234,
                          max_points_per_centroid=LIST_TRAIN_POINTS)
    kmeans.train(rows)
    return kmeans.centroids.copy()


def train_ivf(rows: np.ndarray, nlist: int | None = None) -> bytes:
    """The trained, empty IVF descriptor index over `rows` (FAISS's serialization): its lists
    (train_lists) and the 4-bit codebooks of the rows' residuals, one per dimension, trained on
    the same kind of sample; deterministic for the same rows. Made once where the job starts and
    shipped to the workers, each of which adds the rows (DescriptorIndex(trained=...))."""
    if len(rows) < 1 << FAST_SCAN_BITS:
        raise ValueError(f"an IVF descriptor index needs at least {1 << FAST_SCAN_BITS} descriptors to train "
                         f"its codes on, not {len(rows)}; use kind='flat'")
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    lists = train_lists(rows, nlist)
    dim = rows.shape[1]
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(lists)
    index = faiss.IndexIVFPQFastScan(quantizer, dim, len(lists), dim, FAST_SCAN_BITS, faiss.METRIC_INNER_PRODUCT)
    index.own_fields = True
    quantizer.this.disown()
    # the codebooks see at most FAISS's 256 points per code value: a fixed sample is enough
    sample = np.random.default_rng(1234).permutation(len(rows))[:256 << FAST_SCAN_BITS]
    index.pq.cp.min_points_per_centroid = 1   # a small test side: no warning, fewer points is fine
    index.train(rows[np.sort(sample)])
    return faiss.serialize_index(index).tobytes()
