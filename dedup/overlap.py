"""`clipdata dedup`: which test-set images have a near duplicate in the training shards (CLIP §5).

The small side is indexed, the big side streamed past it, one training shard per element:

    test sets ─► views hashed (driver, process pool) ─► HashIndex built in each worker's setup()
                                                                  │
    test sets ─► copy descriptors (descriptor.py) of the picture, its mirror and each crop-window
                 view ─► IVF lists and codes trained once (driver, at scale) ─► DescriptorIndex in each
                 worker's setup()
    shard list ─Reshuffle─► Search: key, phash and thumb from the parquet (hashed from the tar
                            when the shard has no phash) ─► each thumbnail's copy descriptor (and
                            its centre view's) searched in the DescriptorIndex
                            ─► candidates: cosine >= --similar with the whole picture, or with
                            a window (0.03 more unless the pHashes are within 4 bits) whose
                            pHash is within --radius of the training image's
                            (of its centre's, for the centre view), or a window or centre
                            match at 0.92+ whatever the pHashes, or identical pHashes;
                            at most --per-image per training image, the most alike, those
                            found on the descriptor alone last (without the descriptor:
                            every pHash match within --radius)
                                │           └─► nearest pHash distance per test image within the
                                │               radius (from the same search) ─► CombineMin
                                └─GroupByKey(test image, 1 of 16 parts of the shards)─►
                                    ScreenOnThumbnails: each candidate screened on its stored
                                    thumbnail (verify.screen), the test image decoded and reduced
                                    once for the group: most unrelated candidates are rejected
                                    here, no tar opened (--no-verify: no screen)
                                      └─GroupByKey(shard)─► VerifyShard: open the tar once for the
                                              candidates the screen passed (and those of shards
                                              written before the thumbnail: screened on one made
                                              from the tar image, the same bytes), verify them on
                                              the pixels
    driver: report.html / report.json / pairs.csv / blocklist.txt (dedup/report.py)

Every shard that cannot be read (missing files, a cut tar, a bad parquet) is counted and named in
the report; what was read of it before the error still counts. Nothing here decides what a
duplicate is: hashing.py (views), descriptor.py (the copy descriptor), index.py (search) and
verify.py (screen and pixels) do. training_shards.py reads the big side, search.py makes the
candidates of one shard, candidates.py decides them, semantic.py is the optional semantic stage,
overlap_steps.py holds the Beam steps over them, and this file prepares the test side and runs the
job. Each pair records which stage decided it (`stage`:
screen, pixels, hash, error) and why in words (`reason`).

The optional semantic stage (`--embeddings CHECKPOINT`) adds candidates whose image embeddings
(from a `clipdata train` checkpoint, trainer/embed.py) have cosine similarity >=
--semantic-threshold; they are screened and verified like the hash candidates, unless --no-verify.
See `semantic_pairs` and `load_embedder`.
"""
from __future__ import annotations

import io
import json
import pickle
import time
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from clipdata.dedup import hashed_test_sets, progress
from clipdata.dedup.overlap_steps import FindOverlap
from clipdata.dedup.search import NO_NEIGHBOUR, PER_IMAGE, TestSide, flatten
from clipdata.dedup.semantic import SemanticUnavailable, embed_in_batches, load_embedder
from clipdata.dedup.training_shards import list_shards
from clipdata.pipeline.foundation import beam_runner, eval_sets
from clipdata.pipeline.foundation.storage import clear_folder


class OverlapError(Exception):
    """The inputs or options cannot give a report; the message says why."""


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


def core_defaults() -> tuple[int, tuple[str, ...]]:
    """(default radius, default views) of the detection core (index.py, hashing.py)."""
    from clipdata.dedup import hashing, index

    return index.DEFAULT_RADIUS, tuple(hashing.DEFAULT_VIEWS)


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
        try:
            embedder = load_embedder(config.embeddings)   # fails early, before any hashing
        except SemanticUnavailable as err:
            raise OverlapError(str(err)) from err
    try:
        hashed, side = prepare_test_side(config, radius, views)
    except ValueError as err:  # e.g. a view name the detection core does not know
        raise OverlapError(str(err)) from err
    try:  # what every worker's setup() will do: fail here, once, with the reason
        from clipdata.dedup import index

        index.HashIndex(side.codes, kind=index.hash_kind(config.index, len(side.codes)))
        if side.desc is not None and similar and index.descriptor_kind(config.index, len(side.desc)) == "ivf":
            # the descriptor index's lists and codebooks, trained once here: every worker's index is the same
            side.desc_ivf = index.train_ivf(side.desc.vectors)
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
    with progress.ShardWatcher(work, len(shard_inputs), screening=config.verify):
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


def similar_thresholds(config: OverlapConfig) -> tuple[float, int] | None:
    """(similar, per_image) of the descriptor stage (DescriptorSearch's fields after its index),
    or None when it is off."""
    from clipdata.dedup import descriptor

    if not config.descriptor:
        return None
    similar = descriptor.shared().similar if config.similar is None else float(config.similar)
    return similar, int(config.per_image)


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
