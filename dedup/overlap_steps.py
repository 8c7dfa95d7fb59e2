"""The Beam steps of `clipdata dedup` (overlap.py runs them): thin layers over the plain Python of
training_shards.py, search.py and candidates.py: the search one training shard per element, the
screen one test image's candidates per element, the pixel check one shard's candidates per element.
"""
from __future__ import annotations

import time
import uuid
import zlib

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from clipdata.dedup import hashed_test_sets, progress
from clipdata.dedup.candidates import TestImages, check_candidates, screen_candidates, without_thumb
from clipdata.dedup.hashing import hex64
from clipdata.dedup.search import NO_NEIGHBOUR, THUMB, DescriptorSearch, TestSide, describe_training, search_shard
from clipdata.dedup.semantic import embed_in_batches, load_embedder, semantic_pairs
from clipdata.dedup.training_shards import ShardInput, read_train_hashes, read_train_images
from clipdata.pipeline.foundation import failures

# ---------------------------------------------------------------------------------------------
# Beam steps: thin layers over the functions above


class SearchShardFn(beam.DoFn):
    """ShardInput -> (test image number, (shard, candidate)) for each candidate, to be screened
    with the test image's other candidates; 'nearest' distances, 'shard_errors'."""

    def __init__(self, side: TestSide, radius: int, index_kind: str, semantic: dict | None = None,
                 work: str | None = None, similar: tuple | None = None):
        self.side, self.radius, self.index_kind, self.semantic = side, radius, index_kind, semantic
        self.work, self.similar = work, similar
        self.described = Metrics.counter("dedup", "train_described")
        self.hash_far = Metrics.counter("dedup", "descriptor_matches_hash_far")
        self.window_weak = Metrics.counter("dedup", "descriptor_matches_window_weak")
        self.beyond_cap = Metrics.counter("dedup", "candidates_beyond_cap")
        self.search_thumbs_from_tar = Metrics.counter("dedup", "thumbnails_from_tar")
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
            kind = "ivf" if self.side.desc_ivf is not None else "flat"
            rows = index.DescriptorIndex(self.side.desc.vectors, kind=kind, trained=self.side.desc_ivf)
            self.descriptors = DescriptorSearch(rows, *self.similar)
        self.embedder = load_embedder(self.semantic["checkpoint"]) if self.semantic else None

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
            train_desc = describe_training(train)
            self.described.inc(int(train_desc.described.sum()))
        searched = search_shard(self.index, self.side, train, self.radius, self.descriptors, train_desc)
        candidates = searched.candidates
        self.hash_far.inc(searched.hash_far)
        self.window_weak.inc(searched.window_weak)
        self.beyond_cap.inc(searched.beyond_cap)
        if self.embedder is not None and shard.tar:
            candidates += self._semantic_candidates(shard, train, candidates, errors)
        if errors:
            self.shards_with_errors.inc()
            yield TaggedOutput("shard_errors", {"shard": shard.name, "tar": shard.tar, "parquet": shard.parquet,
                                                "stage": "search", "errors": errors})
        yield TaggedOutput("nearest", searched.nearest)
        self.candidates.inc(len(candidates))
        if self.work:
            progress.record(self.work, "search", shard.name, {"images": len(train.keys), "candidates": len(candidates)})
        for c in candidates:
            yield screen_key(c["test_index"], shard.name), (shard, c)

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
                        "original_size": train.original_sizes[i] if i < len(train.original_sizes) else None,
                        THUMB: train.thumbs[i] if i < len(train.thumbs) else None})
        return out


SCREEN_NOTE_SECONDS = 5.0   # a worker's screen note is rewritten at most this often (and when a bundle ends)
SCREEN_SPLIT = 16           # a test image's candidates are screened in up to this many groups (by shard)
SCREEN_TEST_CACHE = 8       # test images (and their pyramids) a screening worker keeps


def screen_key(test_index: int, shard_name: str) -> tuple[int, int]:
    """The group a candidate is screened in: its test image, and one of SCREEN_SPLIT parts of the
    shards. One part would put a popular test image's candidates on one worker (at 400M x 100k
    ~140k for the most popular of the scale benchmark's: ~20 min); each part decodes the test
    image once (~1 ms) and keeps its reductions for its candidates (~40 a part on average)."""
    return int(test_index), zlib.crc32(shard_name.encode()) % SCREEN_SPLIT


class ScreenTestImageFn(beam.DoFn):
    """((test image number, part), [(shard, candidate), ...]) -> (shard name, (shard, candidate))
    for each candidate the screen passes (or could not screen: no stored thumbnail; its thumbnail
    is made from the tar where the pixels are checked); 'screened': the pairs the stored
    thumbnails decided. A test image's candidates come together (screen_key), so it is read,
    decoded and reduced once for them, and the reductions the screen makes of it (its pyramid)
    serve every one: its own work was ~1/5 of a candidate's screen when done per pair. A candidate
    that passed goes on without its thumbnail (the shuffle to the pixels carries the ~1 in 7 that
    pass, not their thumbnails)."""

    def __init__(self, refs: list, thumbnails: bool, work: str | None = None):
        self.refs, self.thumbnails, self.work = refs, thumbnails, work
        self.screened_out = Metrics.counter("dedup", "pairs_screened_out")

    def setup(self):
        from clipdata.dedup.verify import one_thread_per_worker

        one_thread_per_worker()
        self.tests = TestImages(self.refs, SCREEN_TEST_CACHE)
        # one progress note per worker, rewritten with its running totals: as many files as
        # workers, however many candidates (~60M at 400M x 100k); a retried bundle may count
        # some twice in the progress line, never in the report
        self.note_name, self.note, self.noted = uuid.uuid4().hex, {"screened": 0, "screened_out": 0}, None
        self.unwritten = False

    def process(self, element):
        _, pairs = element
        for shard, c in pairs:   # iterated, not listed: a test image may have many thousands
            decided, passed = screen_candidates([c], self.tests, self.thumbnails)
            self.note["screened"] += 1
            self.unwritten = True
            for pair in decided:
                self.screened_out.inc()
                self.note["screened_out"] += 1
                yield TaggedOutput("screened", without_thumb(dict(pair, shard=shard.name)))
            for pair in passed:
                # screened: on without its thumbnail; not (none stored, or unreadable): as it came,
                # so the pixel step tells the two apart (check_candidates)
                yield shard.name, (shard, without_thumb(pair) if "screen_score" in pair else pair)
            if self.noted is None or time.monotonic() - self.noted >= SCREEN_NOTE_SECONDS:
                self._write_note()

    def finish_bundle(self):
        if self.unwritten:
            self._write_note()

    def _write_note(self):
        if self.work:
            progress.record(self.work, "screen", self.note_name, self.note)
        self.noted, self.unwritten = time.monotonic(), False


class VerifyShardFn(beam.DoFn):
    """(shard name, [(shard, candidate), ...]) -> each candidate with its verdict, from the
    shard's tar (opened once); 'shard_errors'."""

    def __init__(self, refs: list, verify: bool, thumbnails: bool, work: str | None = None):
        self.refs, self.verify, self.thumbnails, self.work = refs, verify, thumbnails, work
        self.pixel_checked = Metrics.counter("dedup", "pairs_checked_on_pixels")
        self.thumbs_from_tar = Metrics.counter("dedup", "thumbnails_from_tar")
        self.screened_out = Metrics.counter("dedup", "pairs_screened_out")

    def setup(self):
        from clipdata.dedup.verify import one_thread_per_worker

        one_thread_per_worker()
        self.tests = TestImages(self.refs)

    def process(self, element):
        _, pairs = element
        pairs = list(pairs)
        shard = pairs[0][0]
        # sorted by test image: the worker's test image cache holds each while its pairs are checked
        candidates = sorted((c for _, c in pairs), key=lambda c: (c["test_index"], c["key"]))
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
            | "Search" >> beam.ParDo(SearchShardFn(self.side, self.radius, self.index_kind, self.semantic,
                                                   self.work, self.similar)
                                     ).with_outputs("nearest", "shard_errors", main="candidates")
        )
        if self.verify:
            screened = (
                searched.candidates
                | "ByTestImage" >> beam.GroupByKey()
                | "ScreenOnThumbnails" >> beam.ParDo(ScreenTestImageFn(self.side.refs, self.thumbnails, self.work)
                                                     ).with_outputs("screened", main="to_pixels")
            )
            to_pixels, decided = screened.to_pixels, screened.screened
        else:   # --no-verify: every candidate straight to its shard's step (the report's thumbnails)
            to_pixels = searched.candidates | "Unscreened" >> beam.Map(lambda kv: (kv[1][0].name, kv[1]))
            decided = shard_inputs.pipeline | "NothingScreened" >> beam.Create([])
        checked = (
            to_pixels
            | "ByShard" >> beam.GroupByKey()
            | "VerifyShard" >> beam.ParDo(VerifyShardFn(self.side.refs, self.verify, self.thumbnails, self.work)
                                          ).with_outputs("shard_errors", main="pairs")
        )
        nearest = searched.nearest | "NearestOverShards" >> beam.CombineGlobally(MinDistances(self.side.n_images))
        errors = (searched.shard_errors, checked.shard_errors) | "AllShardErrors" >> beam.Flatten()
        pairs = (decided, checked.pairs) | "AllPairs" >> beam.Flatten()
        return pairs, nearest, errors
