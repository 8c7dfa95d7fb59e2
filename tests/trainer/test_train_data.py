"""trainer/data.py: shards in, batches out; bad data counted; split, order and resume exact."""
import io
import itertools
import json
import os
import random
import tarfile

import pytest
import torch

from clipdata.pipeline.demo import synthetic_web as sw
from clipdata.pipeline.demo.synthetic_web import drawing as sw_drawing
from clipdata.pipeline.foundation.imaging import to_rgb
from clipdata.pipeline.foundation.shards import ShardRow, sample_key, write_manifest, write_shard
from clipdata.trainer import data

CLASSES = sw.make_classes(("circle", "square", "star"), ("red", "blue"))


def make_shards(folder, n_shards=4, per_shard=12, seed=0, fmt="jpeg"):
    """Shards as `clipdata download` writes them: coloured shapes, "a photo of a red circle"."""
    for shard in range(n_shards):
        rows = []
        for i in range(per_shard):
            rng = random.Random(f"{seed}:{shard}:{i}")
            shape, colour = rng.choice(CLASSES)
            spec = sw.make_spec(shape, colour, rng, rng.randint(40, 90), rng.randint(40, 90))
            image = sw_drawing.encode(to_rgb(sw.draw_image(spec)), fmt)
            rows.append(ShardRow(key=sample_key(shard, i), url=f"http://x/{shard}/{i}",
                                 caption=f"a photo of a {colour} {shape}", status="success",
                                 image=image, image_ext=sw_drawing.EXTENSIONS[fmt]))
        write_shard(str(folder), shard, rows)
    write_manifest(str(folder))
    return data.resolve_shards(str(folder))


def add_member(tar, name, payload: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def keys_of(loader, limit=None):
    return [k for batch in itertools.islice(loader, limit) for k in batch["keys"]]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("shards"))


def test_sources_folder_pattern_manifest(shards, tmp_path):
    folder = os.path.dirname(shards[0])
    assert data.resolve_shards(folder) == shards
    assert data.resolve_shards(os.path.join(folder, "manifest.json")) == shards
    assert data.resolve_shards(os.path.join(folder, "{00000..00001}.tar") + "::"
                               + os.path.join(folder, "0000{2,3}.tar")) == shards
    assert data.dataset_size(folder) == 48
    with pytest.raises(data.DataError, match="no shards found"):
        data.resolve_shards(str(tmp_path))


def test_epoch_reads_every_sample_once_with_its_caption(shards):
    loader = data.ShardLoader(shards, batch_size=10, image_size=32, train=False, resampled=False)
    batches = list(loader)
    keys = [k for b in batches for k in b["keys"]]
    assert sorted(keys) == sorted(sample_key(s, i) for s in range(4) for i in range(12))
    assert [len(b["keys"]) for b in batches] == [10, 10, 10, 10, 8]  # a last, smaller batch
    first = batches[0]
    assert first["images"].shape == (10, 3, 32, 32) and first["images"].dtype == torch.uint8
    assert all(t.startswith("a photo of a ") for t in first["texts"])
    normalized = data.normalize(first["images"])
    assert normalized.dtype == torch.float32 and -2.5 < normalized.mean() < 2.5
    assert loader.skips == {}


def test_img2dataset_layout_png_webp_members_in_any_order(tmp_path):
    """Tars as img2dataset writes them (and as other tools do): png/webp/jpeg images, json first."""
    rng = random.Random(1)
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        for i, fmt in enumerate(["png", "webp", "jpeg"]):
            key = f"00000{i:04d}"
            spec = sw.make_spec("circle", "red", rng, 50, 70, transparent=fmt != "jpeg")
            image = sw.draw_image(spec)
            add_member(tar, f"{key}.json", json.dumps({"key": key, "status": "success"}).encode())
            add_member(tar, f"{key}.{'jpeg' if fmt == 'jpeg' else fmt}",
                       sw_drawing.encode(image if fmt != "jpeg" else to_rgb(image), fmt))
            add_member(tar, f"{key}.txt", f"red circle number {i}".encode())
    (tmp_path / "00000_stats.json").write_text("{}")
    loader = data.ShardLoader(data.resolve_shards(str(tmp_path)), batch_size=8, image_size=24,
                              train=False, resampled=False)
    (batch,) = list(loader)
    assert batch["keys"] == ["000000000", "000000001", "000000002"]
    assert batch["texts"] == ["red circle number 0", "red circle number 1", "red circle number 2"]
    # transparency is matted onto white: the corners of the png/webp are white, not black
    assert batch["images"][:2, :, 0, 0].min() > 200


@pytest.mark.parametrize("train", [False, True])  # True: shards interleaved, shuffled, cropped
def test_corrupt_samples_and_shards_are_skipped_and_counted(shards, tmp_path, caplog, train):
    good = tmp_path / "good"
    good.mkdir()
    for path in shards[:2]:
        os.link(path, good / os.path.basename(path))
    # 00002.tar: a truncated jpg, a member that is no image, a sample without text, an empty text
    jpg = sw_drawing.encode(to_rgb(sw.draw_image(sw.make_spec("star", "blue", random.Random(0), 60, 60))),
                    "jpeg")
    with tarfile.open(good / "00002.tar", "w") as tar:
        add_member(tar, "000020000.jpg", jpg[: len(jpg) // 3])
        add_member(tar, "000020000.txt", b"a cut jpg")
        add_member(tar, "000020001.jpg", b"<html>not an image</html>")
        add_member(tar, "000020001.txt", b"an html page")
        add_member(tar, "000020002.jpg", jpg)
        add_member(tar, "000020003.jpg", jpg)
        add_member(tar, "000020003.txt", b"   ")
        add_member(tar, "000020004.jpg", jpg)
        add_member(tar, "000020004.txt", b"the one good sample")
    # 00003.tar: a copy of a good shard cut in the middle of a member
    blob = open(shards[3], "rb").read()
    (good / "00003.tar").write_bytes(blob[: len(blob) // 2 + 100])
    # 00004.tar: not a tar at all
    (good / "00004.tar").write_bytes(b"garbage" * 100)
    # and 00005.tar, which the pattern names but does not exist
    loader = data.ShardLoader(data.resolve_shards(str(good / "{00000..00005}.tar")), batch_size=7,
                              image_size=32, train=train, resampled=False, shards_per_group=6,
                              shuffle_buffer=5)
    with caplog.at_level("WARNING", logger="clipdata.trainer.data"):
        keys = keys_of(loader)
    assert set(sample_key(s, i) for s in range(2) for i in range(12)) <= set(keys)
    assert "000020004" in keys and not {"000020000", "000020001", "000020002", "000020003"} & set(keys)
    readable_in_cut = [k for k in keys if k.startswith("00003")]
    assert 0 < len(readable_in_cut) < 12  # what precedes the cut is kept
    assert loader.skips["image_undecodable"] == 2
    assert loader.skips == {"image_undecodable": 2, "missing_text": 1, "empty_text": 1,
                            "shard_truncated": 1, "shard_corrupt": 1, "shard_unreadable": 1}
    assert "skipped (image that does not decode)" in caplog.text
    assert "skipped (truncated shard) " in caplog.text and "00003.tar" in caplog.text
    assert "stream -1" not in caplog.text
    assert "unexpected end of data" in caplog.text and "BufferedReader" not in caplog.text  # words, no objects
    assert data.skip_words(loader.skips).startswith("2 images that do not decode, ")


@pytest.mark.parametrize("workers", [0, 1])
def test_no_usable_sample_at_all_is_an_error_not_a_hang(tmp_path, workers):
    for i in range(2):
        (tmp_path / f"0000{i}.tar").write_bytes(b"not a tar")
    loader = data.ShardLoader(data.resolve_shards(str(tmp_path)), batch_size=2, image_size=16, num_workers=workers)
    with pytest.raises(data.DataError) as err:
        next(iter(loader))
    # the message as it was raised, from a worker process too (not its traceback in text)
    assert str(err.value).startswith("stream 0: no usable sample in any of the 2 shards")
    assert "Traceback" not in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("world_size,workers", [(2, 0), (2, 2)])
def test_epoch_split_by_rank_then_worker_covers_all_without_overlap(shards, world_size, workers):
    per_rank = []
    for rank in range(world_size):
        loader = data.ShardLoader(shards, batch_size=5, image_size=16, rank=rank,
                                  world_size=world_size, num_workers=workers, resampled=False,
                                  seed=3, epoch=1)
        per_rank.append(keys_of(loader))
    everything = [k for keys in per_rank for k in keys]
    assert sorted(everything) == sorted(sample_key(s, i) for s in range(4) for i in range(12))
    # whole shards per stream: each rank reads 2 of the 4 shards
    for keys in per_rank:
        assert len({k[:5] for k in keys}) == 2


def test_resampled_order_is_a_function_of_the_seed(shards):
    def first_keys(seed, batches=6):
        loader = data.ShardLoader(shards, batch_size=8, image_size=16, seed=seed, num_workers=0,
                                  shuffle_buffer=10, shards_per_group=2)
        return keys_of(loader, batches)

    a = first_keys(7, batches=12)
    assert a == first_keys(7, batches=12)
    assert a[:48] != first_keys(8)
    # one stream: each pass visits every shard once, so the first 48 samples are the data set,
    # shuffled; the stream then goes on with a second pass in another order
    everything = sorted(sample_key(s, i) for s in range(4) for i in range(12))
    assert sorted(a[:48]) == everything and a[:48] != everything
    assert sorted(a[48:]) == everything and a[48:] != a[:48]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_from_state_reproduces_the_continuation(shards, workers):
    def loader():
        return data.ShardLoader(shards, batch_size=7, image_size=24, seed=5, num_workers=workers,
                                shuffle_buffer=6, shards_per_group=2)

    straight = loader()
    batches = list(itertools.islice(straight, 9))  # 63 samples: past one group and one pass
    first = loader()
    list(itertools.islice(first, 5))
    state = first.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    continued = list(itertools.islice(resumed, 4))
    for a, b in zip(batches[5:], continued):
        assert a["keys"] == b["keys"]
        assert torch.equal(a["images"], b["images"])  # random crops included
    assert resumed.state_dict() == straight.state_dict()


def test_changed_data_order_starts_fresh_streams_and_says_so(shards, caplog):
    first = data.ShardLoader(shards, batch_size=4, image_size=16, num_workers=0)
    list(itertools.islice(first, 3))
    other = data.ShardLoader(shards, batch_size=4, image_size=16, num_workers=2)
    with caplog.at_level("WARNING", logger="clipdata.trainer.data"):
        other.load_state_dict(first.state_dict())
    assert "num_workers" in caplog.text and other.positions == {} and other.batches == 3
    assert len(keys_of(other, 2)) == 8


def test_random_crop_trains_centre_crop_evaluates():
    image = to_rgb(sw.draw_image(sw.make_spec("circle", "red", random.Random(2), 120, 40)))
    centre = data.square_crop(image, 20, None)
    left, right = data.square_crop(image, 20, 0.0), data.square_crop(image, 20, 0.999)
    assert centre.shape == left.shape == (3, 20, 20)
    assert not torch.equal(left, right)
    reference = image.resize((60, 20), resample=3).crop((20, 0, 40, 20))  # resize, then crop
    diff = (centre.permute(1, 2, 0).float() - torch.tensor(list(reference.getdata())).view(20, 20, 3))
    assert diff.abs().mean() < 6
