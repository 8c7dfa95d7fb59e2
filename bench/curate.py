"""Benchmarks for `clipdata curate`, on one core.

    python bench/curate.py matcher                      # 500k entries, 200k captions
    python bench/curate.py matcher --captions 20000     # quicker
    python bench/curate.py pipeline                     # end to end, 1M rows, 2 local workers
    python bench/curate.py steps                        # CPU per step without Beam (after pipeline)

`matcher`: our `Matcher` against MetaCLIP's Aho-Corasick approach (`ReferenceMatcher`) on a
synthetic 500,000-entry list with MetaCLIP's mix and Zipf-distributed captions from the same
vocabulary; checks the two agree on every caption, then prints captions per CPU-second for each,
and the build time and peak memory of each matcher (each built in a fresh subprocess).

`pipeline`: the whole `clipdata curate` job (read, clean, match, dedup, balance, write) on a
generated parquet pool of --rows rows against the same 500,000-entry list, on the in-process
Beam runner with --workers local workers (1: in process; more: as worker processes and, in the
same run, as worker threads), beside the matcher alone on the same captions (one process, per
CPU-second; times the number of workers, the ideal the job could reach): how close the pipeline
gets to its limit. Each job runs three times: with an empty matcher cache (the launcher builds
the matcher), on a 1-row pool, whose time is the fixed cost, and again on the whole pool (it loads
the matcher); the steady-state rate leaves the fixed cost out. The "bound" line is the best end to
end could do if dedup, balancing, the work files and the runner's per-row work cost nothing: the
fixed cost, then the CPU of the steps no implementation can skip (reading the pool, cleaning,
matching, hashing pairs to uids, writing the curated files; each measured here on one core)
spread perfectly over the workers. The "/ 1 core" column divides by the matcher
alone on one core instead of on every worker.

    python bench/curate.py pipeline --workers 2
    python bench/curate.py pipeline --workers 1
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

# The most frequent caption words come first, as in real alt text; they are all entries, as they
# are in the real list (Wikipedia unigrams with count >= 100 include "the", "red", "dog").
COMMON_WORDS = """
the a of and in with on for to at by from an is are this that it its his her their my your
our new old red blue green black white yellow orange pink purple brown gray grey gold silver
big small large little long short high low tall wide young good best great beautiful happy
dog cat bird horse cow fish bear lion tiger elephant duck chicken sheep pig rabbit mouse
man woman boy girl child children baby people person family friend father mother king queen
car truck bus train plane boat ship bike bicycle road street city town village house home
building church tower bridge park garden tree flower grass forest mountain hill river lake sea
ocean beach island sky sun moon star cloud rain snow water fire light night day morning
summer winter spring autumn food cake bread pizza coffee tea wine beer apple banana table
chair bed door window wall floor room kitchen book paper card logo icon photo image picture
vector illustration design pattern background art drawing painting poster print shirt dress
hat shoe bag box ball game team player sport football soccer music song band guitar piano
phone computer screen video movie film show party wedding birthday christmas holiday travel
hotel restaurant shop store market school university office wood stone glass metal plastic
vintage modern classic style fashion sale free set top front side view close up one two three
four five six seven eight nine ten first second last full half open sunset
""".split()

SYLLABLE_HEADS = "b c d f g h j k l m n p r s t v w z ch sh th st tr br pl gr kr fl".split()
SYLLABLE_VOWELS = "a e i o u y ai ea ou io ee".split()


def synthetic_vocabulary(size: int, seed: int) -> list[str]:
    """`size` distinct words by frequency rank: COMMON_WORDS, then pseudo-words of 1-6 syllables
    (some longer than 16 UTF-8 bytes); about one in eight is a proper noun, always capitalised;
    some have accented letters and about one in fifty is written in CJK characters."""
    rng = np.random.default_rng(seed)
    syllables = [h + v for h in SYLLABLE_HEADS for v in SYLLABLE_VOWELS]
    syllables += [h + v for h in SYLLABLE_HEADS[:4] for v in ("é", "ü")]
    n_syllables = [1, 2, 3, 4, 5, 6]
    p_syllables = [0.2, 0.35, 0.25, 0.12, 0.05, 0.03]
    words = list(dict.fromkeys(COMMON_WORDS))
    seen = set(words)
    while len(words) < size:
        lengths = rng.choice(n_syllables, p=p_syllables, size=size)
        picks = rng.integers(0, len(syllables), size=(size, 6))
        kind = rng.random(size)
        for n, row, k in zip(lengths, picks, kind):
            if k < 0.02:
                word = "".join(chr(0x4E00 + int(i) * 37) for i in row[:n + 1])
            else:
                word = "".join(syllables[i] for i in row[:n])
                if n == 1 and k < 0.5:
                    word += "n"
                if k > 0.875:
                    word = word.capitalize()
            if word not in seen:
                seen.add(word)
                words.append(word)
                if len(words) == size:
                    break
    return words


def zipf_sampler(n_words: int, rng: np.random.Generator, exponent: float = 1.0):
    cdf = np.cumsum(1.0 / np.arange(1, n_words + 1) ** exponent)
    cdf /= cdf[-1]
    return lambda k: np.minimum(np.searchsorted(cdf, rng.random(k)), n_words - 1)


def synthetic_query_list(vocabulary: list[str], seed: int, size: int = 500_000) -> list[str]:
    """MetaCLIP's mix: "0".."99", ~86.6k WordNet-like lemmas (some multi-word), 251,465 unigrams,
    100,646 bigrams, 61,235 titles (some with brackets, apostrophes or hyphens, and some with a
    comma, colon or period, which can never match), capped at `size`, without duplicates."""
    rng = np.random.default_rng(seed + 1)
    common = zipf_sampler(50_000, rng, 0.8)
    entries = {str(i): None for i in range(100)}
    n_unigrams = 251_465
    for word in vocabulary[:n_unigrams]:
        entries.setdefault(word)
    rare = vocabulary[n_unigrams:]
    n_before = len(entries)
    while len(entries) < n_before + 86_600:
        if rng.random() < 0.2:
            lemma = " ".join(vocabulary[j].lower() for j in common(int(rng.integers(2, 4))))
        else:
            lemma = rare[int(rng.integers(0, len(rare)))]
        entries.setdefault(lemma)
    n_before = len(entries)
    while len(entries) < n_before + 100_646:
        entries.setdefault(" ".join(vocabulary[j] for j in common(2)))
    n_before = len(entries)
    marks = [("{} {}", 0.9), ("{}, {}", 0.02), ("{} ({})", 0.03), ("{}: {}", 0.02), ("St. {} {}", 0.01),
             ("{}'s {}", 0.01), ("{}-{}", 0.01)]
    templates, weights = zip(*marks)
    weights = np.array(weights) / sum(weights)
    while len(entries) < n_before + 61_235:
        n = int(rng.integers(1, 6))
        words = [vocabulary[j].capitalize() if k == 0 or rng.random() < 0.7 else vocabulary[j]
                 for k, j in enumerate(common(n))]
        if n >= 2:
            template = templates[rng.choice(len(templates), p=weights)]
            title = template.format(words[0], " ".join(words[1:]))
        else:
            title = words[0]
        entries.setdefault(title)
    return list(entries)[:size]


def synthetic_captions(vocabulary: list[str], entries: list[str], n: int, seed: int) -> list[str]:
    """Alt-text-like captions of 4-14 Zipf-distributed words; one in three also holds a
    multi-word entry; punctuation, possessives, brackets, hyphens, numbers and stray whitespace."""
    rng = np.random.default_rng(seed + 2)
    word = zipf_sampler(len(vocabulary), rng, 1.0)
    phrases = [e for e in entries if " " in e]
    captions = []
    for _ in range(n):
        words = [vocabulary[j] for j in word(int(rng.integers(4, 15)))]
        r = rng.random(7)
        if r[0] < 0.35:
            words.insert(int(rng.integers(0, len(words))), phrases[int(rng.integers(0, len(phrases)))])
        if r[1] < 0.4:
            words[0] = words[0][:1].upper() + words[0][1:]
        for k, x in enumerate(rng.random(len(words)) * 100):
            if x < 6:
                words[k] += ","
            elif x < 8:
                words[k] += "'s"
            elif x < 9:
                words[k] = f"({words[k]})"
            elif x < 10.5:
                words[k] = str(int(rng.integers(0, 2030)))
            elif x < 11:
                words[k] += "."
            elif x < 11.5:
                words[k] = f'"{words[k]}"'
            elif x < 12:
                words[k] += ":"
        caption = " ".join(words)
        if r[2] < 0.02:
            caption = caption.replace(" ", "-", 1)
        if r[3] < 0.01:
            caption = caption.replace(" ", "  ", 1)
        if r[4] < 0.005:
            caption = caption.replace(" ", "\n", 1)
        if r[5] < 0.005:
            caption = caption.replace(" ", "\t", 1)
        end = r[6]
        caption += "." if end < 0.25 else "!" if end < 0.28 else "?" if end < 0.3 else " | Stock Photo" if end < 0.32 else ""
        captions.append(caption)
    return captions


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_in_subprocess(kind: str, entries_path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "_build", kind, entries_path],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def _build(kind: str, entries_path: str) -> None:
    from clipdata.pipeline.curate.match import Matcher, ReferenceMatcher

    with open(entries_path, encoding="utf-8") as f:
        entries = json.load(f)
    before = _rss_mb()
    start = time.perf_counter()
    matcher = (Matcher if kind == "ours" else ReferenceMatcher)(entries)
    report = {"build_s": time.perf_counter() - start, "rss_before_mb": before,
              "rss_after_mb": _rss_mb(), "peak_rss_mb": _peak_rss_mb()}
    if kind == "ours":
        start = time.perf_counter()
        blob = pickle.dumps(matcher, protocol=pickle.HIGHEST_PROTOCOL)
        report["pickle_mb"] = len(blob) / 2**20
        pickle.loads(blob)
        report["pickle_roundtrip_s"] = time.perf_counter() - start
    print(json.dumps(report))


def _timed(fn, repeat: int):
    """fn's result, and the fastest of `repeat` runs in wall and in CPU seconds."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return result, best_wall, best_cpu


def bench_matcher(n_entries: int = 500_000, n_captions: int = 200_000, seed: int = 0,
                  batch_sizes=(10_000, 100_000), repeat: int = 3) -> None:
    from clipdata.pipeline.curate.match import Matcher, ReferenceMatcher

    start = time.perf_counter()
    vocabulary = synthetic_vocabulary(700_000, seed)
    entries = synthetic_query_list(vocabulary, seed, n_entries)
    captions = synthetic_captions(vocabulary, entries, n_captions, seed)
    print(f"data: {len(entries):,} entries ({sum(' ' in e for e in entries):,} multi-word), "
          f"{len(captions):,} captions, mean {np.mean([len(c) for c in captions]):.0f} chars "
          f"({time.perf_counter() - start:.1f} s to generate)")
    print("examples:", " | ".join(captions[:3]))

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
        json.dump(entries, f)
    try:
        builds = {kind: build_in_subprocess(kind, f.name) for kind in ("reference", "ours")}
    finally:
        os.unlink(f.name)

    reference, ours = ReferenceMatcher(entries), Matcher(entries)
    expected, ref_wall, ref_cpu = _timed(lambda: reference.match_batch(captions), repeat)
    rows = [("reference (pyahocorasick)", "1 caption", ref_wall, ref_cpu)]
    for batch_size in batch_sizes:
        def run():
            parts = [ours.match_batch(captions[i:i + batch_size]) for i in range(0, len(captions), batch_size)]
            return _concat(parts)
        got, wall, cpu = _timed(run, repeat)
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]), "matches differ"
        rows.append(("ours (Matcher)", f"{batch_size:,}", wall, cpu))
    n_matches = len(expected[1])
    print(f"identical matches on all {len(captions):,} captions "
          f"({n_matches:,} matches, {n_matches / len(captions):.1f} per caption, "
          f"{np.mean(np.diff(expected[0]) == 0):.1%} captions with none)")

    print()
    print(f"best of {repeat} runs, one process: captions per CPU-second, and per wall-clock second")
    print(f"{'matcher':<27}{'batch':>10}{'captions/s/core':>17}{'wall':>10}{'vs reference':>14}")
    for name, batch, wall, cpu in rows:
        print(f"{name:<27}{batch:>10}{len(captions) / cpu:>17,.0f}{len(captions) / wall:>10,.0f}{ref_cpu / cpu:>13.1f}x")
    print()
    print(f"build, {len(entries):,} entries, each in a fresh process (MB of RSS: the process before "
          f"building, its peak, and what building added to the peak and kept)")
    print(f"{'matcher':<27}{'time s':>10}{'before':>10}{'peak':>10}{'+peak':>10}{'+kept':>10}")
    for kind, name in (("reference", "reference (pyahocorasick)"), ("ours", "ours (Matcher)")):
        b = builds[kind]
        print(f"{name:<27}{b['build_s']:>10.1f}{b['rss_before_mb']:>10,.0f}{b['peak_rss_mb']:>10,.0f}"
              f"{b['peak_rss_mb'] - b['rss_before_mb']:>10,.0f}{b['rss_after_mb'] - b['rss_before_mb']:>10,.0f}")
    b = builds["ours"]
    print(f"ours pickled: {b['pickle_mb']:.0f} MB, dumps + loads {b['pickle_roundtrip_s']:.2f} s")


def _concat(parts):
    offsets = [parts[0][0]]
    shift = parts[0][0][-1]
    for off, _ in parts[1:]:
        offsets.append(off[1:] + shift)
        shift += off[-1]
    return np.concatenate(offsets), np.concatenate([ids for _, ids in parts])


def bench_pipeline(n_rows: int = 1_000_000, n_entries: int = 500_000, workers: int = 2, seed: int = 0,
                   workdir: str = "bench_output/curate", beam_args: list[str] = ()) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from clipdata.pipeline.curate import job as curate
    from clipdata.pipeline.curate.match import Matcher
    from clipdata.pipeline.foundation import beam_runner

    beam_runner.quiet_beam_logs()
    os.makedirs(workdir, exist_ok=True)
    pool_path = os.path.join(workdir, f"pool-{n_rows}.parquet")
    queries_path = os.path.join(workdir, f"queries-{n_entries}.txt")
    vocabulary = synthetic_vocabulary(700_000, seed)
    entries = synthetic_query_list(vocabulary, seed, n_entries)
    if not os.path.exists(queries_path):
        with open(queries_path, "w", encoding="utf-8") as out:
            out.write("\n".join(entries) + "\n")
    if not os.path.exists(pool_path):
        captions = synthetic_captions(vocabulary, entries, n_rows, seed)
        rng = np.random.default_rng(seed)
        # 1% of rows repeat an earlier (url, caption) pair, as crawls do.
        ids = np.arange(n_rows)
        repeats = rng.random(n_rows) < 0.01
        ids[repeats] = rng.integers(0, n_rows, repeats.sum())
        urls = [f"https://img{i % 997}.example.com/p/{i}.jpg" for i in ids]
        captions = [captions[i] for i in ids]
        pq.write_table(pa.table({"url": urls, "caption": captions}), pool_path, row_group_size=100_000)
    # The captions as the job hands them to the matcher: an Arrow column, 65,536 rows at a time.
    captions = pq.read_table(pool_path, columns=["caption"]).column("caption").combine_chunks()
    print(f"pool: {pool_path} ({n_rows:,} rows), list: {len(entries):,} entries, {os.cpu_count()} cores")

    matcher = Matcher(entries)
    cpu = time.process_time()
    for i in range(0, len(captions), 65_536):
        matcher.match_batch(captions.slice(i, 65_536))
    matcher_rate = len(captions) / (time.process_time() - cpu)
    del matcher

    output = os.path.join(workdir, "out")
    cache = os.path.join(workdir, "cache")
    tiny_path = os.path.join(workdir, "pool-1.parquet")
    pq.write_table(pq.read_table(pool_path).slice(0, 1), tiny_path)

    def run(pool: str, args: list[str], label: str) -> tuple[float, dict]:
        config = curate.CurateConfig(pool=[pool], queries=queries_path, output=output, partitions=16,
                                     batch_rows=65_536, matcher_cache=cache)
        start = time.perf_counter()
        stats = curate.run_curate(config, args)
        seconds = time.perf_counter() - start
        print(f"  {label}: {seconds:.1f} s", flush=True)
        return seconds, stats

    # Several local workers run as processes (Beam's multi_processing, our default) or as threads
    # of one process (multi_threading: no worker start-up, but one GIL); both are measured.
    modes = [("", [])] if workers == 1 else [
        ("processes", ["--direct_running_mode", "multi_processing"]),
        ("threads", ["--direct_running_mode", "multi_threading"])]
    # Cold: an empty cache, so the launcher builds the matcher (and the ftfy shortcut's classes);
    # warm: a rerun with the same list, which loads them. Fixed costs: the warm job on a 1-row pool
    # (runner and workers starting, matcher loading, the 500k-row entry_counts.parquet).
    results = []
    for mode, mode_args in modes:
        args = ["--direct_num_workers", str(workers), *mode_args, *beam_args]
        if os.path.exists(cache):
            shutil.rmtree(cache)
        label = f"{workers} worker {mode}" if mode else f"{workers} worker"
        cold, _ = run(pool_path, args, f"{label}, cold cache")
        fixed, _ = run(tiny_path, args, f"{label}, fixed costs (1-row pool, warm cache)")
        warm, stats = run(pool_path, args, f"{label}, warm cache")
        results.append((label, cold, warm, fixed))
    rows = stats["rows_read"]
    limit = matcher_rate * workers
    # What no implementation of the job can skip: reading the pool, cleaning the text (ftfy),
    # matching, hashing each pair to its uid (exact dedup needs it) and writing the curated files
    # (the last warm run's, as the job writes them: one zstd parquet per partition), each
    # measured here on one core. Spread perfectly over the workers after the fixed cost, they
    # bound what end to end can reach even if dedup, balancing, the work files and the runner's
    # per-row work cost nothing.
    floor = {"matching": rows / matcher_rate}
    floor.update(_read_clean_hash_cpu(pool_path, fast_path_patterns=curate.fast_path_patterns(cache)))
    floor["writing"] = _write_cpu(os.path.join(output, "curated"))
    print(f"kept {stats['rows_kept']:,} of {rows:,} rows; dropped {stats['dropped']}")
    print("CPU-s every run spends: " + ", ".join(f"{step} {cpu:.2f}" for step, cpu in floor.items()))
    print()
    print(f"{'':<62}{'rows/s':>12}{'/ limit':>9}{'/ 1 core':>10}")
    print(f"{'matcher alone, 1 core':<62}{matcher_rate:>12,.0f}")
    print(f"{f'matcher alone x {workers} workers (the limit)':<62}{limit:>12,.0f}{1:>9.0%}")
    for label, cold, warm, fixed in results:
        print(f"clipdata curate end to end, {label}:")
        for what, seconds in ((f"cold cache ({cold:.1f} s)", cold), (f"warm cache ({warm:.1f} s)", warm)):
            rate = rows / seconds
            print(f"{'  ' + what:<62}{rate:>12,.0f}{rate / limit:>9.0%}{rate / matcher_rate:>10.0%}")
        steady = rows / max(warm - fixed, 1e-9)
        name = f"  steady state: warm less fixed costs ({fixed:.1f} s)"
        print(f"{name:<62}{steady:>12,.0f}{steady / limit:>9.0%}{steady / matcher_rate:>10.0%}")
        bound = rows / (fixed + sum(floor.values()) / workers)
        name = "  bound: fixed costs + the steps above on all workers"
        print(f"{name:<62}{bound:>12,.0f}{bound / limit:>9.0%}{bound / matcher_rate:>10.0%}")
    print(f"{' '.join(beam_args)} load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("target: end to end >= 50% of the limit")


class StepTimes(dict):
    """CPU-seconds per step name, summed over calls of `timed`."""

    def timed(self, step: str, fn, *args):
        start = time.process_time()
        result = fn(*args)
        self[step] = self.get(step, 0.0) + time.process_time() - start
        return result


def _read_clean_hash_cpu(pool_path: str, fast_path_patterns) -> StepTimes:
    """CPU-seconds to read the pool's (url, caption) batches as the job does (row group by row
    group), to clean them, and to hash the cleaned pairs to uids (the job hashes the matched ones:
    in this pool all but a handful)."""
    import pyarrow.parquet as pq

    from clipdata.pipeline.foundation import pool

    times = StepTimes()
    for group in range(pq.ParquetFile(pool_path).metadata.num_row_groups):
        batches = iter(pool.read_pool_file(pool_path, batch_rows=65_536, row_groups=(group, group + 1)))
        while (batch := times.timed("reading", next, batches, None)) is not None:
            kept, _ = times.timed("cleaning", text_clean, batch, fast_path_patterns)
            times.timed("uid hashing", uid_words, kept)
    return times


def _write_cpu(curated_dir: str) -> float:
    """CPU-seconds to write the curated files again, as the job writes them."""
    import glob

    import pyarrow.parquet as pq

    from clipdata.pipeline.curate import steps as curate_steps

    tables = [pq.read_table(path) for path in sorted(glob.glob(os.path.join(curated_dir, "*.parquet")))]
    cpu = time.process_time()
    for table in tables:
        curate_steps.parquet_bytes(table)
    return time.process_time() - cpu


def bench_steps(n_rows: int = 1_000_000, n_entries: int = 500_000, partitions: int = 16, seed: int = 0,
                workdir: str = "bench_output/curate") -> None:
    """CPU-seconds of each step of the curate job over the pipeline benchmark's pool, run as plain
    functions in one process without Beam: what the job costs before the runner adds anything."""
    import glob
    import tempfile

    import pyarrow.parquet as pq

    from clipdata.pipeline.curate import job as curate, match, rows as curate_rows, steps as curate_steps, work_files
    from clipdata.pipeline.foundation import pool

    pool_path = os.path.join(workdir, f"pool-{n_rows}.parquet")
    cache = os.path.join(workdir, "cache")
    matchers = glob.glob(os.path.join(cache, "matchers", "*.pkl"))
    if not os.path.exists(pool_path) or not matchers:
        raise SystemExit(f"run `bench/curate.py pipeline --rows {n_rows}` first: it writes the pool and the matcher")
    with open(matchers[0], "rb") as handle:
        matcher, entries = match.read_matcher_file(handle)
    if len(entries) != n_entries:
        raise SystemExit(f"the cached matcher has {len(entries):,} entries, not {n_entries:,}")
    patterns = curate.fast_path_patterns(cache)
    seconds = StepTimes()
    timed = seconds.timed
    refs: dict[int, list] = {}
    groups = pq.ParquetFile(pool_path).metadata.num_row_groups
    with tempfile.TemporaryDirectory() as work:
        for group in range(groups):  # one piece per row group, as the job cuts this pool
            writer = work_files.PartitionWriter(work_files.unique_path(work, f"matched-{group}"), partitions)
            batches = iter(pool.read_pool_file(pool_path, batch_rows=65_536, row_groups=(group, group + 1)))
            while (batch := timed("read", next, batches, None)) is not None:
                kept, _ = timed("clean", text_clean, batch, patterns)
                offsets, entry_ids = timed("match", matcher.match_batch, kept.column("caption"))
                high, low = timed("uid", uid_words, kept)
                # (every row of this pool matches something but a handful; those few are kept
                # here, where the job drops them)
                table = curate_rows.work_table(kept, offsets, entry_ids, high, low)
                timed("work files", writer.write, table, curate_rows.partition_of(high, partitions))
            for partition, ref in writer.close().items():
                refs.setdefault(partition, []).append((pool_path, ref))
        counts = np.zeros(len(entries), dtype=np.int64)
        firsts = {}
        for partition, piece_refs in refs.items():
            rows = timed("work files", curate_rows.read_partition_rows, piece_refs)
            first, _ = timed("dedup", curate_rows.keep_first_copies, rows)
            ids, n = timed("dedup", curate_rows.entry_counts, rows, first)
            counts[ids] += n
            firsts[partition] = first
        for partition, piece_refs in refs.items():
            rows = curate_rows.read_partition_rows(piece_refs)
            kept, _ = timed("balance", curate_rows.balance_partition, rows, firsts[partition], counts, 20_000, seed)
            timed("parquet write", lambda k: curate_steps.parquet_bytes(curate_rows.curated_table(k)), kept)
    total = sum(seconds.values())
    print(f"curate's steps as plain functions, one process, {n_rows:,} rows, {partitions} partitions "
          f"(CPU-seconds; the job adds the runner, small files and counters):")
    for step, cpu in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {step:<16}{cpu:>7.2f} s{cpu / total:>7.0%}")
    print(f"  {'all':<16}{total:>7.2f} s   matching {seconds['match']:.2f} s, the rest {total - seconds['match']:.2f} s")


def text_clean(batch, patterns):
    from clipdata.pipeline.curate import text

    return text.clean_batch(batch, text.MAX_CAPTION_CHARS, patterns)


def uid_words(table):
    from clipdata.pipeline.curate import pair_dedup

    return pair_dedup.pair_uid_words(table.column("url"), table.column("caption"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("matcher", help="our Matcher against the pyahocorasick reference")
    m.add_argument("--entries", type=int, default=500_000, help="query list size")
    m.add_argument("--captions", type=int, default=200_000, help="number of captions to match")
    m.add_argument("--seed", type=int, default=0, help="seed for the synthetic list and captions")
    m.add_argument("--repeat", type=int, default=3, help="timed runs per matcher; the fastest counts")
    pl = sub.add_parser("pipeline", help="clipdata curate end to end against the matcher alone")
    pl.add_argument("--rows", type=int, default=1_000_000, help="pool rows")
    pl.add_argument("--entries", type=int, default=500_000, help="query list size")
    pl.add_argument("--workers", type=int, default=2, help="local Beam worker processes")
    pl.add_argument("--workdir", default="bench_output/curate")
    pl.add_argument("--beam-arg", action="append", default=[], dest="beam_args",
                    help="a Beam option passed to the job, e.g. --beam-arg=--direct_running_mode=multi_threading")
    st = sub.add_parser("steps", help="CPU-seconds of each curate step without Beam (after `pipeline`)")
    st.add_argument("--rows", type=int, default=1_000_000, help="pool rows (the pipeline benchmark's pool)")
    st.add_argument("--entries", type=int, default=500_000, help="query list size")
    st.add_argument("--workdir", default="bench_output/curate")
    b = sub.add_parser("_build", help=argparse.SUPPRESS)
    b.add_argument("kind", choices=["ours", "reference"])
    b.add_argument("entries_path")
    args = parser.parse_args(argv)
    if args.command == "matcher":
        bench_matcher(args.entries, args.captions, args.seed, repeat=args.repeat)
    elif args.command == "steps":
        bench_steps(args.rows, args.entries, workdir=args.workdir)
    elif args.command == "pipeline":
        bench_pipeline(args.rows, args.entries, args.workers, workdir=args.workdir, beam_args=args.beam_args)
    else:
        _build(args.kind, args.entries_path)


if __name__ == "__main__":
    main()
