"""Online balancing in the loader: kept with the entries' probability, drawn afresh each time a
sample is read, exactly reproduced on resume; per-language t from a worldwide curate run."""
import collections
import itertools
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from clipdata.pipeline.demo import synthetic_web as sw
from clipdata.pipeline.demo.synthetic_web import drawing as sw_drawing
from clipdata.pipeline.foundation.imaging import to_rgb
from clipdata.pipeline.foundation.shards import ShardRow, sample_key, write_manifest, write_shard
from clipdata.trainer import data
from clipdata.trainer.online_balance import OnlineBalance

N_SHARDS, PER_SHARD = 4, 50


def entry_of(shard, i):
    """Entry 0 (a head entry) for 4 of 5 samples, entry 1 (the tail) for the rest; every 25th sample
    has no entry ids (shards made elsewhere)."""
    if i % 25 == 24:
        return []
    return [1] if i % 5 == 0 else [0]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("balanced")
    image = sw_drawing.encode(to_rgb(sw.draw_image(sw.make_spec("circle", "red", random.Random(0), 32, 32))), "jpeg")
    for shard in range(N_SHARDS):
        rows = [ShardRow(key=sample_key(shard, i), url=f"http://x/{shard}/{i}", caption=f"caption {shard} {i}",
                         status="success", image=image, image_ext="jpg", entry_ids=entry_of(shard, i))
                for i in range(PER_SHARD)]
        write_shard(str(folder), shard, rows)
    write_manifest(str(folder))
    return data.resolve_shards(str(folder))


def counts():
    c = collections.Counter(e for s in range(N_SHARDS) for i in range(PER_SHARD) for e in entry_of(s, i))
    return np.array([c[0], c[1]])


def entry_by_key():
    return {sample_key(s, i): entry_of(s, i) for s in range(N_SHARDS) for i in range(PER_SHARD)}


def test_head_samples_are_kept_at_t_over_count_and_the_tail_whole(shards):
    head, tail = counts()                      # 152 and 40 of 200
    balance = OnlineBalance.from_counts(counts(), t=40, seed=1)
    assert balance.probability.tolist() == [40 / 152, 1.0]
    loader = data.ShardLoader(shards, batch_size=10, image_size=16, seed=3, balance=balance, shuffle_buffer=20)
    by_key = entry_by_key()
    kept = [k for batch in itertools.islice(loader, 60) for k in batch["keys"]]   # > 2 passes read
    # only head samples are ever left out: the head's keep rate is kept / (kept + left out)
    heads = sum(by_key[k] == [0] for k in kept)
    assert heads / (heads + loader.balanced_out) == pytest.approx(40 / 152, abs=0.05)
    # the tail and the samples without entry ids: every one of them, every time
    assert {k for k in kept if by_key[k] != [0]} == {k for k, ids in by_key.items() if ids != [0]}


def test_the_rule_on_many_readings():
    balance = OnlineBalance.from_counts(np.array([400, 20, 100]), t=100, seed=7)
    rate = np.mean([balance.keep([0], 0, g, "k") for g in range(20_000)])
    assert rate == pytest.approx(0.25, abs=0.01)
    assert all(balance.keep([1], 0, g, "k") for g in range(100))              # under t: always
    both = np.mean([balance.keep([0, 2], 0, g, "k") for g in range(20_000)])  # 1 - (1 - .25)(1 - 1)
    assert both == 1.0
    assert balance.keep([], 0, 0, "k") and balance.keep([99], 0, 0, "k")       # nothing to balance by


def test_each_reading_is_a_fresh_draw(shards):
    balance = OnlineBalance.from_counts(counts(), t=40, seed=1)
    loader = data.ShardLoader(shards, batch_size=10, image_size=16, seed=3, balance=balance, num_workers=0)
    by_key = entry_by_key()
    kept_heads = [k for batch in itertools.islice(loader, 60) for k in batch["keys"] if by_key[k] == [0]]
    # a head sample read in several passes is not kept in every one of them, nor in none: at ~25%
    # keep rate, several distinct head samples appear, and some more than once
    times = collections.Counter(kept_heads)
    assert len(times) > 60 and max(times.values()) >= 2


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_exact_with_online_balancing(shards, workers):
    def loader():
        return data.ShardLoader(shards, batch_size=7, image_size=24, seed=5, num_workers=workers,
                                shuffle_buffer=6, shards_per_group=2,
                                balance=OnlineBalance.from_counts(counts(), t=40, seed=2))

    straight = loader()
    batches = list(itertools.islice(straight, 12))
    first = loader()
    list(itertools.islice(first, 5))
    state = first.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    continued = list(itertools.islice(resumed, 7))
    for a, b in zip(batches[5:], continued):
        assert a["keys"] == b["keys"]
        assert torch.equal(a["images"], b["images"])
    assert resumed.state_dict() == straight.state_dict()
    assert straight.balanced_out > 0


def test_a_worldwide_curate_run_gives_one_t_per_language(tmp_path):
    # English: "dog" 400, "cat" 20 -> at t=100 the tail share is 20/420; German: 200 and 40 -> t 40
    pq.write_table(pa.table({"entry_id": pa.array([0, 1, 2, 3], pa.int32()), "entry": ["dog", "cat", "Hund", "Katze"],
                             "matched": [400, 20, 200, 40], "kept": [400, 20, 200, 40],
                             "language": ["en", "en", "de", "de"]}), str(tmp_path / "entry_counts.parquet"))
    balance = OnlineBalance.from_curated(str(tmp_path), t=100)
    assert balance.thresholds == {"en": 100, "de": 40}
    assert balance.probability.tolist() == [0.25, 1.0, 0.2, 1.0]


def test_the_trainer_refuses_a_folder_without_counts(tmp_path, shards):
    from clipdata.pipeline import cli

    code = cli.main(["train", "--data", shards[0].rsplit("/", 1)[0], "--output", str(tmp_path / "run"),
                     "--online-balance", str(tmp_path), "--steps", "1"])
    assert code == 2
