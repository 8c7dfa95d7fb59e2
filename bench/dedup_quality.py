"""bench/dedup.py quality: recall per transformation and false pairs, measured through the whole
`clipdata dedup` job (the pHash search, the copy descriptor's search and its candidate rule, the
thumbnail screen, the pixels) on bench/dedup.py's originals.

Each original is a test image and has exactly one copy among the training images, in one of the
13 transformations (taken in turn, separately among the photo-like originals and the others, so
every cell holds both kinds). Two runs: copy on the test side (the test image is the transformed
original, the training side stored the original through the downloader's resizer) and copy on
the training side (the test image is the original, the training side stored the transformed
copy). Every other (test, training) pair is of two different originals: a lookalike pair when
they were made alike (bench/dedup.py's groups: a moved shape, another word, ...), an unrelated
pair otherwise. A planted pair is found when the job's report accepts it; lost when it was no
candidate, or rejected on the thumbnail or on the pixels (the report's pairs tell which).
"""
from __future__ import annotations

import io
import os
import random
import shutil
import time

import dedup as bench  # bench/dedup.py: the originals, the transformations

DIRECTIONS = ("test", "train")
ROWS_PER_SHARD = 500
_STORE: dict = {}     # the downloader's resizer, one per process


def assign(originals: list, transforms=bench.TRANSFORMS) -> list[str]:
    """The transformation of each original: in turn among the photo-like ones and among the rest."""
    counters = {True: 0, False: 0}
    out = []
    for o in originals:
        photo = o.category in bench.PHOTO_LIKE
        out.append(transforms[counters[photo] % len(transforms)])
        counters[photo] += 1
    return out


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _make_pair(job):
    """(test image PNG bytes, stored training image) of original i in one direction."""
    from clipdata.pipeline.download import images

    i, transform, direction, seed = job
    o = bench._WORLD["originals"][i]
    copy = bench.apply(o.image, transform, random.Random(f"{seed}:{i}:{transform}:{direction}"))
    test, train_source = (copy, o.image) if direction == "test" else (o.image, copy)
    if "resizer" not in _STORE:
        _STORE["config"] = images.ImageConfig()
        _STORE["resizer"] = images.make_resizer(_STORE["config"])
    stored = images.store_image(_png(train_source), _STORE["resizer"], _STORE["config"])
    if stored.error:
        raise RuntimeError(f"original {i} ({o.name}): {stored.error}")
    return _png(test), stored


def write_world(originals: list, transforms: list[str], direction: str, folder: str, workers: int, seed: int) -> None:
    """test/<i>.png and the training shards (row i: original i's copy or original), as the
    downloader writes them."""
    from clipdata.pipeline.foundation import shards

    test_dir, shards_dir = os.path.join(folder, "test"), os.path.join(folder, "shards")
    os.makedirs(test_dir, exist_ok=True)
    made = bench._map(_make_pair, [(i, transforms[i], direction, seed) for i in range(len(originals))], workers, 8)
    digits = shards.row_digits_for(ROWS_PER_SHARD)
    for shard, start in enumerate(range(0, len(made), ROWS_PER_SHARD)):
        rows = []
        for i in range(start, min(len(made), start + ROWS_PER_SHARD)):
            test_png, stored = made[i]
            with open(os.path.join(test_dir, f"{i:05d}.png"), "wb") as f:
                f.write(test_png)
            rows.append(shards.ShardRow(
                key=shards.sample_key(shard, i - start, row_digits=digits), url=f"http://quality.test/{i}.png",
                caption=originals[i].name, status="success", width=stored.width, height=stored.height,
                original_width=stored.original_width, original_height=stored.original_height,
                sha256=stored.sha256, phash=stored.phash, phash_centre=stored.phash_centre, thumb=stored.thumb,
                image=stored.data, image_ext=stored.ext))
        shards.write_shard(shards_dir, shard, rows, {"start_time": 0.0, "end_time": 1.0})


def run_direction(originals: list, transforms: list[str], direction: str, folder: str, workers: int,
                  seed: int, log=print) -> dict:
    """One run of the job; per original: "found" | "no candidate" | "screen" | "pixels" (where its
    copy was lost); the accepted pairs of two different originals."""
    from clipdata.dedup import overlap, report
    from clipdata.pipeline.foundation import shards

    shutil.rmtree(folder, ignore_errors=True)
    t = time.perf_counter()
    write_world(originals, transforms, direction, folder, workers, seed)
    made_s = time.perf_counter() - t
    config = overlap.OverlapConfig(shards=[os.path.join(folder, "shards")],
                                   test_sets=[("quality", os.path.join(folder, "test"))],
                                   output=os.path.join(folder, "report"), workers=workers, thumbnails=False)
    t = time.perf_counter()
    result = overlap.run_overlap(config, ["--direct_num_workers", str(workers)] if workers > 1 else [])
    job_s = time.perf_counter() - t
    report.write_report(result, config.output)    # report.html, pairs.csv: what each pair measured
    digits = shards.row_digits_for(ROWS_PER_SHARD)
    row_of = {shards.sample_key(i // ROWS_PER_SHARD, i % ROWS_PER_SHARD, row_digits=digits): i
              for i in range(len(originals))}
    test_of = {number: int(os.path.splitext(os.path.basename(ref_id))[0])
               for number, ref_id in enumerate(result.side.ids)}
    outcome = ["no candidate"] * len(originals)
    false_pairs = []
    for p in result.pairs:
        test, train = test_of[p["test_index"]], row_of[p["key"]]
        if test == train:
            outcome[test] = "found" if p.get("verified") else p.get("stage") or "rejected"
        elif p.get("verified"):
            false_pairs.append((test, train))
    c = result.counters
    log(f"  copy on the {direction} side: {len(originals):,} test x {len(originals):,} training images made in "
        f"{made_s:.0f} s; the job {job_s:.0f} s; {c.get('candidates', 0):,} candidates, "
        f"{c.get('pairs_checked_on_pixels', 0):,} checked on the pixels")
    return {"outcome": outcome, "false_pairs": false_pairs, "candidates": c.get("candidates", 0),
            "job_s": job_s}


def run(originals: list, workers: int, folder: str, seed: int = 0, directions=DIRECTIONS, keep: bool = False,
        log=print) -> dict:
    """Both runs and the tables: recall per (transformation, direction, photo-like or other),
    false pairs (lookalike, unrelated) per pair."""
    bench._init_world(originals, seed)
    transforms = assign(originals)
    runs = {d: run_direction(originals, transforms, d, os.path.join(folder, d), workers, seed, log)
            for d in directions}
    n = len(originals)
    groups = [o.group for o in originals]
    lookalike_pairs = sum(1 for i in range(n) for j in range(n) if i != j and groups[i] == groups[j])
    kinds = ("photo-like", "other")

    def kind(i):
        return kinds[0] if originals[i].category in bench.PHOTO_LIKE else kinds[1]

    recall, lost = {}, {}
    for d, r in runs.items():
        for i, outcome in enumerate(r["outcome"]):
            cell = (transforms[i], d, kind(i))
            hits, total = recall.get(cell, (0, 0))
            recall[cell] = (hits + (outcome == "found"), total + 1)
            if outcome != "found":
                lost.setdefault(outcome, []).append((originals[i].name, transforms[i], d))
    log(f"\nRecall through the whole job (found / copies), {n:,} originals, each copied once per direction:")
    header = ["transformation"] + [f"{k} {d}" for k in kinds for d in directions]
    rows = []
    for tr in bench.TRANSFORMS:
        row = [tr]
        for k in kinds:
            for d in directions:
                hits, total = recall.get((tr, d, k), (0, 0))
                row.append(f"{hits / total:.3f} ({hits}/{total})" if total else "-")
        rows.append(row)
    bench._table(header, rows, log)
    for outcome, items in sorted(lost.items()):
        log(f"  lost ({outcome}): {len(items)}")
        cells = {}
        for name, tr, d in items:
            cells.setdefault((tr, d), []).append(name)
        for (tr, d), names in sorted(cells.items()):
            log(f"    {tr} {d}: {', '.join(names)}")

    pairs = {d: n * n - n for d in directions}
    false_look = {d: sum(groups[i] == groups[j] for i, j in r["false_pairs"]) for d, r in runs.items()}
    false_unrel = {d: len(r["false_pairs"]) - false_look[d] for d, r in runs.items()}
    total_pairs = sum(pairs.values())
    unrelated_pairs = total_pairs - len(directions) * lookalike_pairs
    log(f"\nFalse pairs (accepted pairs of two different originals), {total_pairs:,} pairs over both runs:")
    log(f"  unrelated: {sum(false_unrel.values())} of {unrelated_pairs:,} ({sum(false_unrel.values()) / unrelated_pairs:.1e} "
        f"per pair); lookalike: {sum(false_look.values())} of {len(directions) * lookalike_pairs:,}")
    for d, r in runs.items():
        for i, j in r["false_pairs"]:
            log(f"    {d}: test {originals[i].name} ~ training {originals[j].name}"
                f"{' (lookalike)' if groups[i] == groups[j] else ''}")
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return {"recall": {f"{tr} {d} {k}": v for (tr, d, k), v in recall.items()}, "lost": lost,
            "false_unrelated": sum(false_unrel.values()), "false_lookalike": sum(false_look.values()),
            "unrelated_pairs": unrelated_pairs, "lookalike_pairs": len(directions) * lookalike_pairs,
            "candidates": {d: r["candidates"] for d, r in runs.items()}}
