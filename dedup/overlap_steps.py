"""The Beam steps of `clipdata dedup` (overlap.py runs them): thin layers over the plain Python of
training_shards.py, search.py and candidates.py, one training shard per element.
"""
from __future__ import annotations

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
    """ShardInput -> (shard, candidates for the pixels) when it has any; 'screened' (pairs the
    stored thumbnails decided), 'nearest' distances, 'shard_errors'."""

    def __init__(self, side: TestSide, radius: int, index_kind: str, semantic: dict | None = None,
                 verify: bool = True, thumbnails: bool = True, work: str | None = None,
                 similar: tuple | None = None):
        self.side, self.radius, self.index_kind, self.semantic = side, radius, index_kind, semantic
        self.verify, self.thumbnails, self.work, self.similar = verify, thumbnails, work, similar
        self.described = Metrics.counter("dedup", "train_described")
        self.hash_far = Metrics.counter("dedup", "descriptor_matches_hash_far")
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
            kind = "ivf" if self.side.desc_ivf is not None else "flat"
            rows = index.DescriptorIndex(self.side.desc.vectors, kind=kind, trained=self.side.desc_ivf)
            self.descriptors = DescriptorSearch(rows, *self.similar)
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
            train_desc = describe_training(train)
            self.described.inc(int(train_desc.described.sum()))
        searched = search_shard(self.index, self.side, train, self.radius, self.descriptors, train_desc)
        candidates = searched.candidates
        self.hash_far.inc(searched.hash_far)
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
