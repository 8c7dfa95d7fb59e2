"""Stream image-text batches from WebDataset shards; the position is resumable at any step.

Shards are img2dataset's layout (what `clipdata download` writes): `{shard:05d}.tar` holding
`{key}.jpg|png|webp` (image) and `{key}.txt` (caption). `--data` is a folder of .tar files, a brace
pattern (`shards/{00000..00099}.tar`, runs joined by `::` as in manifest.json), or a manifest.json;
any shard URL webdataset's gopen opens works (local path, `pipe:gsutil cat gs://...`, http(s)).

    loader = ShardLoader(shards, batch_size=256, image_size=224, seed=0, rank=0, world_size=1,
                         num_workers=4, tokenizer=tokenizer)
    for batch in loader:          # dict(images=uint8 [B,3,S,S], texts, tokens, keys)
        images = normalize(batch["images"].to(device))
        ...
        state = loader.state_dict()   # goes into the checkpoint
    loader.load_state_dict(state)     # the next iteration continues exactly there

The streams. Every DataLoader worker of every rank reads its own stream: stream id
j = rank * num_workers + worker, N = world_size * num_workers streams ("split by node, then by
worker"). The shard sequence is counter-based: global draw g = j + k*N is shard
perm(seed, pass = g // S)[g % S] for the k-th shard of stream j (S shards, perm a seeded
permutation). Resampled (training) streams are infinite and every pass of S draws visits every shard
once across all streams; an epoch (eval) stream takes only pass `epoch`, so the streams of one
epoch cover every shard exactly once, without overlap.
A stream reads its shards in groups of `shards_per_group`: the group's shards are interleaved at
random and pass through a shuffle buffer that starts empty and is drained at the group's end. All
randomness is seeded by (seed, stream, group): a group's sample order is a function of its shards.

Resume semantics. A stream's position is (group, raw samples emitted in that group), taken at the
end of the last batch the trainer consumed from it ("raw": before decoding, so the count never
depends on which images decode). To resume, a stream computes its group's shards from the counter
(no reading of earlier groups), replays that group's interleave and shuffle without decoding, and
drops the samples it had emitted: at most one group of tar reading. The random crop of a sample is
seeded by (seed, stream, group, index), so it is reproduced too. DataLoader takes batches from its
workers round-robin, so after B batches the next comes from stream B % num_workers; a resumed loader
rotates its workers by that amount. Result: resuming with the same shards, seed, world size, workers
and batch size gives the same batches as never stopping (resampled streams: exactly; epoch streams:
the same remaining samples per stream, interleaved differently once a stream has ended). With any of
those changed, the saved positions do not apply and the loader starts fresh streams from a seed
derived from (seed, batches consumed), saying so.

Bad data never stops training: each bad shard or sample is skipped, counted by reason (batch
"skips", summed in `ShardLoader.skips`, written to log.jsonl by the trainer) and the first few of
each reason per stream are logged. Reasons: shard_unreadable (cannot be opened), shard_truncated
(ends mid-member; what precedes the cut is used), shard_corrupt (not a tar), missing_image,
missing_text, text_undecodable, empty_text, image_undecodable (a decoder error, or over
MAX_IMAGE_PIXELS). Only data without one usable sample in any shard raises DataError.
"""
from __future__ import annotations

import collections
import hashlib
import io
import itertools
import json
import logging
import os
import random
import tarfile
from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import tarfile_samples

from clipdata.pipeline.foundation import failures, webdataset_tars
from clipdata.trainer.model import IMAGE_MEAN, IMAGE_STD
from clipdata.trainer.online_balance import entry_ids_of

log = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "png", "webp", "jpeg")  # OpenCLIP's and img2dataset's, in that order
TEXT_EXT = "txt"
MAX_IMAGE_PIXELS = 1 << 26  # 67 Mpixel: a decoded image above this is skipped, not decoded
LOGGED_PER_REASON = 3       # per stream; the rest are only counted


class DataError(Exception):
    """The data cannot be used at all: no shards found, or no readable sample in any shard."""


# ---------------------------------------------------------------------------------------------
# Where the shards are


def resolve_shards(data: str) -> list[str]:
    """The shard URLs of a folder, a brace pattern (runs joined by '::'), a manifest.json or a .tar."""
    if data.endswith(".json"):
        with open(data) as f:
            manifest = json.load(f)
        base = os.path.dirname(os.path.abspath(data))
        shards = [os.path.join(base, s["tar"]) for s in manifest.get("shards", [])]
    elif os.path.isdir(data):
        shards = webdataset_tars.tars_in(data, (".tar",))
    else:
        shards = webdataset_tars.expand_patterns(data)
        local = [u for u in shards if "://" not in u and not u.startswith("pipe:")]
        missing = [u for u in local if not os.path.exists(u)]
        if local and len(missing) == len(shards):
            raise DataError(f"no shard of {data!r} exists (first: {missing[0]})")
    if not shards:
        raise DataError(f"no shards found in {data!r} (a folder of .tar files, a brace pattern "
                        "or a manifest.json)")
    return shards


def dataset_size(data: str) -> int | None:
    """Samples in the data according to its manifest.json (None when there is none)."""
    path = data if data.endswith(".json") else os.path.join(data, "manifest.json")
    try:
        with open(path) as f:
            return int(json.load(f)["totals"]["samples"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------
# Images: the paper's only augmentation, a random square crop of the resized image


def load_rgb(data: bytes, size: int) -> Image.Image:
    """Decode to RGB, transparency matted onto white (as img2dataset does). JPEGs are decoded at
    the smallest DCT scale whose shorter side is still >= size, which is the bulk of the speed."""
    image = Image.open(io.BytesIO(data))
    if image.width * image.height > MAX_IMAGE_PIXELS:
        raise ValueError(f"image of {image.width}x{image.height} pixels is over the cap")
    image.draft("RGB", (size, size))
    return matte_on_white(image)


def matte_on_white(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white (as img2dataset stores images)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image.alpha_composite(rgba)
    return image.convert("RGB")


def square_crop(image: Image.Image, size: int, offset: float | None) -> torch.Tensor:
    """Resize the shorter side to `size` and cut a size x size square: at `offset` in [0, 1) of the
    free length (training), or the centre (offset None, eval). Done as one resize of the chosen
    square (PIL's `box`), which equals resize-then-crop and costs less. Returns uint8 [3, size, size]."""
    w, h = image.size
    side = min(w, h)
    free = max(w, h) - side
    start = free // 2 if offset is None else min(free, int(offset * (free + 1)))
    box = (start, 0, start + side, side) if w > h else (0, start, side, start + side)
    square = image.resize((size, size), Image.BICUBIC, box=box, reducing_gap=3.0)
    return torch.from_numpy(np.array(square, dtype=np.uint8)).permute(2, 0, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,3,H,W] -> float normalised with CLIP's mean/std, on the images' device. Batches
    travel as uint8 (4x less to move from workers and to the GPU) and are normalised there."""
    mean = torch.tensor(IMAGE_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def _mix(*values: int) -> int:
    """A 64-bit hash of some ints (splitmix64 steps): per-sample seeds without an RNG object."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 29
    return x


# ---------------------------------------------------------------------------------------------
# The stream of one worker: shards -> raw samples (grouped, interleaved, shuffled) -> batches


@dataclass(frozen=True)
class StreamSpec:
    """Everything that fixes the sample order of every stream (saved with the loader position)."""
    shards: tuple[str, ...]
    seed: int
    world_size: int
    num_workers: int
    batch_size: int
    resampled: bool = True      # infinite streams (training); False: one pass, `epoch`
    shuffle: bool = True        # False: shards in order, samples in order (eval)
    shards_per_group: int = 4
    shuffle_buffer: int = 2000
    epoch: int = 0

    def fingerprint(self) -> dict:
        d = asdict(self)
        d["shards"] = hashlib.sha256("\n".join(self.shards).encode()).hexdigest()[:16]
        return d


# Each skip reason in words, one and many (the log lines and the run's final summary).
SKIP_WORDS = {
    "shard_unreadable": ("shard that cannot be opened", "shards that cannot be opened"),
    "shard_truncated": ("truncated shard", "truncated shards"),
    "shard_corrupt": ("shard that is not a tar", "shards that are not tars"),
    "missing_image": ("sample without an image", "samples without an image"),
    "missing_text": ("sample without a caption", "samples without a caption"),
    "text_undecodable": ("caption that is not UTF-8", "captions that are not UTF-8"),
    "empty_text": ("empty caption", "empty captions"),
    "image_undecodable": ("image that does not decode", "images that do not decode"),
}


def skip_words(counts: dict) -> str:
    """"1 truncated shard, 14 samples without a caption" ("nothing" when empty)."""
    parts = [f"{n:,} {SKIP_WORDS.get(reason, (reason, reason))[n != 1]}"
             for reason, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return ", ".join(parts) or "nothing"


class SkipCounter:
    """Counts, by reason, the shards and samples a stream drops; logs the first few of each."""

    def __init__(self, stream: int):
        self.stream = stream
        self.counts: collections.Counter = collections.Counter()  # since the last batch
        self.logged: collections.Counter = collections.Counter()

    def skip(self, reason: str, detail: str) -> None:
        self.counts[reason] += 1
        self.logged[reason] += 1
        if self.logged[reason] <= LOGGED_PER_REASON:
            more = " (further ones counted only)" if self.logged[reason] == LOGGED_PER_REASON else ""
            # stream -1 reads the captions the tokenizer is learned from; the others are the
            # training data streams (one per DataLoader worker of each process)
            who = "reading captions for the tokenizer" if self.stream < 0 else f"data stream {self.stream}"
            log.warning("%s: skipped (%s) %s%s", who, SKIP_WORDS.get(reason, (reason,))[0], detail[:300], more)


def _shard_reason(errors: list[str]) -> str:
    first = errors[0]
    if first.startswith(("FileNotFoundError", "PermissionError", "IsADirectoryError", "OSError")):
        return "shard_unreadable"
    if first.startswith("EOFError") or "unexpected end of data" in first:
        return "shard_truncated"
    return "shard_corrupt"  # not a tar (invalid header), a broken stream, duplicate members


def read_shard(url: str, counter: SkipCounter, suffixes: set[str] | None = None
               ) -> Iterator[dict]:
    """Raw samples of one shard, dict(__key__, __url__, jpg|png|webp, txt, json, ...): bytes.
    A shard that fails part way yields what it could read and is counted once, by its first error."""
    errors: list[str] = []

    def handler(exn: Exception) -> bool:
        # webdataset's handler= for errors inside this shard; True = go on with what is readable.
        # tarfile's ReadError carries (message, file object): the message alone is the words.
        # (webdataset appends " @ <file object>" to the message.)
        if isinstance(exn, tarfile.ReadError) and exn.args and isinstance(exn.args[0], str):
            errors.append(f"{type(exn).__name__}: {exn.args[0].split(' @ ')[0]}")
        else:
            errors.append(failures.describe(exn))
        return True

    select = None
    if suffixes is not None:  # the other members are skipped over, never read into memory
        select = lambda name: name.rsplit(".", 1)[-1].lower() in suffixes  # noqa: E731
    yield from tarfile_samples([{"url": url}], handler=handler, select_files=select)
    if errors:
        counter.skip(_shard_reason(errors), f"{url} ({errors[0]})")


class ShardStream(IterableDataset):
    """The batches of each DataLoader worker (or of the main process with num_workers=0).

    `positions` maps stream id -> (group, raw samples emitted in it) to resume from;
    `first_worker` rotates workers so a resumed DataLoader continues the round-robin (see top).
    """

    def __init__(self, spec: StreamSpec, rank: int, image_size: int, train: bool,
                 tokenizer: Callable | None = None, positions: dict | None = None,
                 first_worker: int = 0, balance=None):
        self.spec, self.rank, self.image_size, self.train = spec, rank, image_size, train
        self.tokenizer = tokenizer
        self.balance = balance if train else None   # online_balance.OnlineBalance: training only
        self.positions = dict(positions or {})
        self.first_worker = first_worker
        self.good = 0  # usable samples decoded by this worker since it started
        self._perm_cache: tuple[int, list[int]] | None = None

    # -- which shards: counter-based, O(1) per draw ------------------------------------------

    def _perm(self, n_pass: int) -> list[int]:
        if self._perm_cache is None or self._perm_cache[0] != n_pass:
            order = list(range(len(self.spec.shards)))
            if self.spec.shuffle:
                random.Random(f"clipdata-shards:{self.spec.seed}:{n_pass}").shuffle(order)
            self._perm_cache = (n_pass, order)
        return self._perm_cache[1]

    def shard_of(self, stream: int, k: int) -> str | None:
        """The k-th shard stream `stream` reads (None past the end of an epoch stream)."""
        spec, n = self.spec, len(self.spec.shards)
        g = stream + k * spec.world_size * max(1, spec.num_workers)
        if not spec.resampled:
            if g >= n:
                return None
            return spec.shards[self._perm(spec.epoch)[g]]
        return spec.shards[self._perm(g // n)[g % n]]

    # -- raw samples of one group ---------------------------------------------------------------

    def group_samples(self, stream: int, group: int, counter: SkipCounter) -> Iterator[dict]:
        """The shuffled raw samples of a group (empty iterator: past the end of an epoch stream)."""
        spec = self.spec
        per_group = spec.shards_per_group if spec.shuffle else 1
        urls = [self.shard_of(stream, group * per_group + i) for i in range(per_group)]
        urls = [u for u in urls if u is not None]
        rng = random.Random(f"clipdata-group:{spec.seed}:{stream}:{group}")
        readers = [read_shard(u, counter) for u in urls]
        buffer: list[dict] = []
        while readers:
            i = rng.randrange(len(readers)) if spec.shuffle else 0
            sample = next(readers[i], None)
            if sample is None:
                readers.pop(i)
                continue
            if not spec.shuffle or spec.shuffle_buffer <= 1:
                yield sample
                continue
            buffer.append(sample)
            if len(buffer) >= spec.shuffle_buffer:
                j = rng.randrange(len(buffer))
                buffer[j], buffer[-1] = buffer[-1], buffer[j]
                yield buffer.pop()
        rng.shuffle(buffer)
        yield from buffer

    def raw_stream(self, stream: int, counter: SkipCounter) -> Iterator[tuple[int, int, dict]]:
        """(group, index in group, raw sample), from the saved position on.

        A resampled stream never ends, so data without one usable sample would spin forever: once
        this stream has finished groups covering every shard without one good sample (`self.good`,
        counted by `__iter__`), it raises DataError instead.
        """
        group, start = self.positions.get(stream, (0, 0))
        per_group = self.spec.shards_per_group if self.spec.shuffle else 1
        seen: set[str] = set()
        while True:
            urls = [u for i in range(per_group) if (u := self.shard_of(stream, group * per_group + i))]
            if not urls:
                return  # an epoch stream has read all its shards
            samples = self.group_samples(stream, group, counter)
            for index, sample in enumerate(itertools.islice(samples, start, None), start):
                yield group, index, sample
            # Every sample of the group has been decoded by now (the consumer asked for more).
            if self.spec.resampled and self.good == 0:
                seen.update(urls)
                if len(seen) >= len(self.spec.shards):
                    raise DataError(f"stream {stream}: no usable sample in any of the "
                                    f"{len(seen)} shards; skipped so far: {dict(counter.counts)}")
            group, start = group + 1, 0

    # -- decoding and batching -------------------------------------------------------------------

    def decode(self, stream: int, group: int, index: int, sample: dict, counter: SkipCounter):
        """(uint8 image [3,S,S], caption) or None when the sample is skipped (counted)."""
        key = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
        ext = next((e for e in IMAGE_EXTS if e in sample), None)
        if ext is None:
            counter.skip("missing_image", key)
            return None
        if TEXT_EXT not in sample:
            counter.skip("missing_text", key)
            return None
        try:
            caption = sample[TEXT_EXT].decode("utf-8").strip()
        except UnicodeDecodeError:
            counter.skip("text_undecodable", key)
            return None
        if not caption:
            counter.skip("empty_text", key)
            return None
        try:
            image = load_rgb(sample[ext], self.image_size)
            offset = None
            if self.train:
                offset = _mix(self.spec.seed, stream, group, index) / 2.0**64
            pixels = square_crop(image, self.image_size, offset)
        except Exception as exn:  # noqa: BLE001 - any decoder failure is a bad sample, not a crash
            counter.skip("image_undecodable", f"{key}.{ext}: {failures.describe(exn)}")
            return None
        return pixels, caption

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        workers = max(1, self.spec.num_workers)
        worker = 0 if info is None else (info.id + self.first_worker) % workers
        stream = self.rank * workers + worker
        counter = SkipCounter(stream)
        batch_size = self.spec.batch_size
        images, texts, keys = [], [], []
        position = self.positions.get(stream, (0, 0))
        balanced_out = 0
        try:
            for group, index, sample in self.raw_stream(stream, counter):
                position = (group, index + 1)
                if self.balance is not None:
                    ids = entry_ids_of(sample)
                    if ids is not None and not self.balance.keep(ids, stream, group, sample.get("__key__", "")):
                        balanced_out += 1   # not bad data: counted apart from the skips
                        continue
                decoded = self.decode(stream, group, index, sample, counter)
                if decoded is None:
                    continue
                self.good += 1
                images.append(decoded[0])
                texts.append(decoded[1])
                keys.append(sample.get("__key__", ""))
                if len(images) == batch_size:
                    yield self._batch(images, texts, keys, stream, position, counter, balanced_out)
                    images, texts, keys, balanced_out = [], [], [], 0
        except DataError as err:
            # Raised in a DataLoader worker, the exception would reach the trainer as the
            # worker's traceback in text; handed over as a field instead, ShardLoader raises
            # it again as it was.
            yield {"data_error": str(err), "stream": stream, "position": position, "skips": dict(counter.counts)}
            return
        if images or counter.counts:  # the end of an epoch stream: a last, smaller batch
            yield self._batch(images, texts, keys, stream, position, counter, balanced_out)

    def _batch(self, images, texts, keys, stream, position, counter, balanced_out: int = 0) -> dict:
        size = self.image_size
        batch = {
            # Empty only at the end of an epoch stream, to deliver the last skip counts.
            "images": torch.stack(images) if images else torch.empty(0, 3, size, size, dtype=torch.uint8),
            "texts": texts,
            "keys": keys,
            "stream": stream,
            "position": position,
            "skips": dict(counter.counts),
            "balanced_out": balanced_out,
        }
        counter.counts.clear()
        if self.tokenizer is not None and texts:
            batch["tokens"] = self.tokenizer(texts)
        return batch


# ---------------------------------------------------------------------------------------------
# The loader the trainer holds: DataLoader + the position of every stream of this rank


class ShardLoader:
    """Batches of one rank; `state_dict()` is the position to resume from (see the top of the file).

    batch_size is per rank. Iterating again (after a break, or after `load_state_dict`) continues
    from the position of the last batch taken; batches the workers prefetched are read again.
    """

    def __init__(self, shards: list[str], batch_size: int, image_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, num_workers: int = 0, train: bool = True,
                 resampled: bool = True, tokenizer: Callable | None = None, epoch: int = 0,
                 shards_per_group: int = 4, shuffle_buffer: int = 2000, pin_memory: bool = False,
                 balance=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.spec = StreamSpec(shards=tuple(shards), seed=seed, world_size=world_size,
                               num_workers=num_workers, batch_size=batch_size, resampled=resampled,
                               shuffle=train, shards_per_group=shards_per_group,
                               shuffle_buffer=shuffle_buffer, epoch=epoch)
        self.rank, self.image_size, self.train = rank, image_size, train
        self.tokenizer, self.pin_memory = tokenizer, pin_memory
        self.balance = balance    # online_balance.OnlineBalance or None
        self.positions: dict[int, tuple[int, int]] = {}
        self.batches = 0  # taken by the trainer, over the whole run
        self.skips: collections.Counter = collections.Counter()
        self.balanced_out = 0     # samples online balancing left out, over the whole run

    def __iter__(self) -> Iterator[dict]:
        workers = self.spec.num_workers
        dataset = ShardStream(self.spec, self.rank, self.image_size, self.train, self.tokenizer,
                              self.positions, first_worker=self.batches % max(1, workers), balance=self.balance)
        loader = DataLoader(dataset, batch_size=None, num_workers=workers,
                            pin_memory=self.pin_memory, prefetch_factor=4 if workers else None)
        for batch in loader:
            if "data_error" in batch:
                raise DataError(batch["data_error"])
            self.positions[batch.pop("stream")] = tuple(batch.pop("position"))
            self.skips.update(batch.pop("skips"))
            self.balanced_out += batch.pop("balanced_out", 0)
            if len(batch["texts"]):
                self.batches += 1
                yield batch

    def state_dict(self) -> dict:
        return {"spec": self.spec.fingerprint(), "positions": dict(self.positions),
                "batches": self.batches, "skips": dict(self.skips), "balanced_out": self.balanced_out}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved position; with a different data order, fresh streams (logged)."""
        self.batches = int(state["batches"])
        self.skips = collections.Counter(state.get("skips", {}))
        self.balanced_out = int(state.get("balanced_out", 0))
        if state["spec"] == self.spec.fingerprint():
            self.positions = {int(k): tuple(v) for k, v in state["positions"].items()}
            return
        changed = sorted(k for k, v in self.spec.fingerprint().items() if state["spec"].get(k) != v)
        self.spec = replace(self.spec, seed=_mix(self.spec.seed, self.batches) % (1 << 31))
        self.positions = {}
        log.warning("data order changed since the checkpoint (%s): the saved stream positions do "
                    "not apply; starting fresh streams with seed %d", ", ".join(changed),
                    self.spec.seed)


def iter_captions(shards: list[str], limit: int) -> Iterator[str]:
    """The first `limit` non-empty captions of the shards in order, reading only the text members
    (what the tokenizer is learned from)."""
    counter = SkipCounter(stream=-1)
    n = 0
    for url in shards:
        for sample in read_shard(url, counter, suffixes={TEXT_EXT}):
            try:
                text = sample.get(TEXT_EXT, b"").decode("utf-8").strip()
            except UnicodeDecodeError:
                continue
            if text:
                yield text
                n += 1
                if n >= limit:
                    return
