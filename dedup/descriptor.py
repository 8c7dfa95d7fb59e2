"""A learned copy descriptor: 128 numbers per image whose inner product says "same picture".

CLIP's own duplicate detector (paper section 5) and the copy-detection literature after it (SSCD;
DataComp's contamination check) embed images with a network trained contrastively on synthetic
copies and compare the embeddings by cosine: far more selective than a perceptual hash at the
same recall, which is what a check over 10^13 (test, training) pairs needs (a pHash radius lets
~1e-2 of unrelated pairs through, each costing tens of ms to reject).

This one is small enough for a CPU: it reads the 64 px thumbnail `clipdata download` stores of
every image (pipeline/foundation/thumbs.py, the `thumb` column), ~30 M multiply-adds, in int8
where torch can (INT8_ENGINE: ~0.2 ms an input on one core, a third of the float network's).
Its weights (`weights/copy_descriptor.pt`, ~2 MB with the int8 state) were trained here by
`bench/train_descriptor.py` on copies of freely licensed wallpapers (Debian's mate-backgrounds)
and generated drawings, logos, texts and dead-leaves images, with the trainer's contrastive loss
(trainer/loss.ClipLoss, image against image): nothing is fetched at run time.

The descriptor only proposes candidates; what is a copy is still decided by verify.screen on the
thumbnails and verify.verify on the pixels. `similar` (stored with the weights: 0.80) is the
cosine from which a pair is a candidate, chosen by measurement (`bench/train_descriptor.py
measure`, 2026-12-06, on pictures none of which were trained on): at 0.80 recall 1.00 for JPEG
q30-90, resizes 0.25-2x, mirror and 5% crops, 0.98 for 10% crops, 0.93-1.00 for brightness
+-20% and captions, but 0.47-0.58 for 20% crops (0.97-1.00 at 0.60); unrelated pairs at or
above it 1.3e-4 (2.86M pairs of photos, clip art, drawings, logos, texts) and 6.1e-5 (1e8 pairs
of the scale benchmark's generated pictures). The 20% crops are found through the test image's
crop windows, each described too (view_input): the crop's copy is alike the window that shows it
(0.97-1.00 at 0.80 with the best window), and the window's pHash confirms it (dedup/search.py).
A second training run (more pictures, temperature 1/30) was more tolerant of crops and less
selective at every equal false rate (5.3e-4 at 0.80): not shipped.

Both sides go through the same form: the stored image (img2dataset's resize to 256 with white
padding to a square) reduced to a thumbnail, padded to a square and resized to INPUT px. The
layout matters (a red circle on the left is not a red circle on the right), so the head keeps a
4x4 grid of the last feature map besides its global pooling.
"""
from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np
from PIL import Image

INPUT = 64
DIM = 128
WEIGHTS = os.path.join(os.path.dirname(__file__), "weights", "copy_descriptor.pt")
BATCH = 256


def _net(width: int = 32, dim: int = DIM):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from torch.ao.quantization import DeQuantStub, QuantStub

    def block(cin, cout, k, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True))

    class CopyDescriptor(nn.Module):
        def __init__(self):
            super().__init__()
            w = width
            self.body = nn.Sequential(block(3, w, 5, 2), block(w, 2 * w, 3, 2), block(2 * w, 2 * w, 3, 1),
                                      block(2 * w, 4 * w, 3, 2), block(4 * w, 4 * w, 3, 1))
            self.layout = nn.Conv2d(4 * w, 32, 1)
            self.head = nn.Linear(4 * w + 32 * 16, dim)
            # where the int8 body (quantize_body) takes floats in and gives them back; nothing in
            # the float network (no weights: float checkpoints load as they are)
            self.quant, self.dequant = QuantStub(), DeQuantStub()

        def forward(self, x):
            f = self.dequant(self.body(self.quant(x)))                  # (n, 4w, 8, 8)
            pooled = f.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3)   # GeM, p = 3
            grid = F.adaptive_avg_pool2d(self.layout(f), 4).flatten(1)  # where things are
            return F.normalize(self.head(torch.cat([pooled, grid], 1)), dim=1)

    return CopyDescriptor()


def new_model():
    """An untrained descriptor network (for training)."""
    return _net()


def to_input(thumb) -> np.ndarray:
    """A thumbnail (PIL image or uint8 RGB array) as the network's INPUT x INPUT x 3 uint8 array:
    padded to a square with white (as the stored form is) and resized."""
    from clipdata.dedup.hashing import pad_to_square

    image = thumb if isinstance(thumb, Image.Image) else Image.fromarray(np.asarray(thumb, dtype=np.uint8))
    image = pad_to_square(image.convert("RGB"))
    if image.size != (INPUT, INPUT):
        image = image.resize((INPUT, INPUT), Image.BOX if image.width > INPUT else Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


TEST_VIEWS = ("image", "mirror")   # a test image is described as it is and mirrored
# the pHash views (dedup/hashing.py) that show the whole picture: their descriptors would be the
# TEST_VIEWS ones (to_input pads to a square as "border" does), so they are not described as views
WHOLE_VIEWS = ("image", "mirror", "border", "border_mirror")


def test_inputs(image: Image.Image) -> np.ndarray:
    """(len(TEST_VIEWS), INPUT, INPUT, 3) uint8: a test image in the form its training copies are
    described from (the stored image's thumbnail), as it is and mirrored."""
    from clipdata.dedup.hashing import pad_to_square
    from clipdata.pipeline.foundation import thumbs

    # padded with white as the downloader's resizer stores it, then reduced to the thumbnail
    seen = to_input(thumbs.thumbnail(pad_to_square(image.convert("RGB"))))
    return np.stack([seen, seen[:, ::-1]])


def view_input(view: Image.Image) -> np.ndarray:
    """One of a test image's hash views (hashing.VIEW_FUNCTIONS: a crop window, the mirror, ...)
    in the form its training copies are described from. A training copy that is a crop of the
    test image is alike the test view that shows the same window (bench/dedup.py's originals:
    20% crops at >= 0.80 with the best of the 23 views, 0.97-1.00; with the whole picture 0.56)."""
    from clipdata.dedup.hashing import pad_to_square
    from clipdata.pipeline.foundation import thumbs

    return to_input(thumbs.thumbnail(pad_to_square(view.convert("RGB"))))


def as_tensor(inputs: np.ndarray):
    """(n, INPUT, INPUT, 3) uint8 -> the network's float input (n, 3, INPUT, INPUT), centred."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(inputs)).permute(0, 3, 1, 2).float().div_(255).sub_(0.5)


def fold_batch_norms(net) -> None:
    """Fold each block's batch norm into its convolution (and the ReLU after it) for inference:
    the same function (outputs within ~5e-7) in ~0.6 of the time on a CPU (0.94 -> 0.57 ms an
    image, one core, batches of 256; measured 2026-12-06 on thumbnails of bench/dedup.py scale)."""
    from torch.ao.quantization import fuse_modules

    for block in net.body:
        fuse_modules(block, [["0", "1", "2"]], inplace=True)


# The network's convolutions (nearly all of its ~30 M multiply-adds) run in int8 where torch has
# this quantized engine (x86 CPUs: fbgemm and oneDNN, VNNI where the CPU has it) and the weights
# hold the int8 state (bench/train_descriptor.py makes it: activation ranges observed on training
# pictures). Measured 2026-12-07 (one core, 2,048 stored thumbnails of bench/dedup.py scale, the
# same run): 0.19 ms an input against the folded float network's 0.67; its descriptors' cosines
# with the float ones 0.9998 on average (lowest 0.997), pairwise cosines 0.003 apart on average
# (0.017 at the 99.9th percentile); bench/train_descriptor.py measure: the float network's recall
# and false rates within rounding (its docstring). Elsewhere (another CPU, a checkpoint without
# the int8 state) the float network runs: the same descriptors within that difference.
INT8_ENGINE = "x86"


def int8_available() -> bool:
    import torch

    return INT8_ENGINE in torch.backends.quantized.supported_engines


@contextlib.contextmanager
def _int8_engine():
    """torch's quantized engine set to INT8_ENGINE for the block (a process-wide setting: put back
    after; not guarded between threads, which all set the same engine here)."""
    import torch

    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = INT8_ENGINE
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


# torch's notices that eager-mode quantization and typed storages are deprecated: said on every
# load, nothing a user can act on
TORCH_NOTICES = r"(?s).*(torch\.ao\.quantization|TypedStorage|deprecat)"


def quantize_body(net, calibration: np.ndarray | None = None, state: dict | None = None):
    """`net` (eval mode, batch norms folded) with its convolution body in int8, in place: the
    activations' ranges observed on `calibration` inputs ((n, INPUT, INPUT, 3) uint8, when the
    weights are made), or the int8 state saved then (`state`, what this returns' state_dict()
    holds). The layout convolution and the head stay float (under 1% of the work)."""
    import torch
    from torch.ao import quantization as tq

    if (calibration is None) == (state is None):
        raise ValueError("quantize_body needs calibration inputs or a saved int8 state (one of them)")
    net.qconfig = tq.get_default_qconfig(INT8_ENGINE)
    net.layout.qconfig = net.head.qconfig = None
    with warnings.catch_warnings(), _int8_engine():
        warnings.filterwarnings("ignore", message=TORCH_NOTICES)
        if state is not None:   # the observers see no data: the state loaded after sets every range
            warnings.filterwarnings("ignore", message="must run observer")
        tq.prepare(net, inplace=True)
        if calibration is not None:
            with torch.inference_mode():
                for start in range(0, len(calibration), BATCH):
                    net(as_tensor(calibration[start:start + BATCH]))
        tq.convert(net, inplace=True)
        if state is not None:
            net.load_state_dict(state)
    return net


class Descriptor:
    """The shipped descriptor, ready to describe thumbnails: `Descriptor().describe([thumb, ...])`.
    `int8=False` runs the float network even where the int8 one could run."""

    def __init__(self, path: str | None = None, threads: int | None = 1, int8: bool = True):
        import torch

        # one Beam worker per core: no oversubscription (set around each call, so that a process
        # that trains afterwards, like the demo, keeps its own setting)
        self.threads = threads
        path = path or WEIGHTS
        if not os.path.exists(path):
            raise FileNotFoundError(f"the copy descriptor's weights are missing: {path} "
                                    "(reinstall clipdata, or make them with bench/train_descriptor.py)")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=TORCH_NOTICES)   # on the int8 tensors' storage
            state = torch.load(path, map_location="cpu", weights_only=True)
        self.net = _net()
        self.net.load_state_dict(state["model"])
        self.net.eval()
        fold_batch_norms(self.net)
        self.similar = float(state["similar"])
        self.int8 = bool(int8 and "int8" in state and int8_available())
        if self.int8:
            quantize_body(self.net, state=state["int8"])

    def describe(self, thumbs: list) -> np.ndarray:
        """(n, DIM) float32, unit rows, of thumbnails (PIL images or RGB arrays)."""
        if not thumbs:
            return np.zeros((0, DIM), np.float32)
        return self.describe_inputs(np.stack([to_input(t) for t in thumbs]))

    def describe_inputs(self, inputs: np.ndarray) -> np.ndarray:
        import torch

        out = []
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode(), (_int8_engine() if self.int8 else contextlib.nullcontext()):
                for start in range(0, len(inputs), BATCH):
                    out.append(self.net(as_tensor(inputs[start:start + BATCH])).numpy())
        finally:
            torch.set_num_threads(before)
        return np.concatenate(out).astype(np.float32)


_SHARED: dict[str, Descriptor] = {}


def shared(path: str | None = None) -> Descriptor:
    """One Descriptor per process (a worker loads the network once, not once per shard)."""
    path = path or WEIGHTS
    if path not in _SHARED:
        _SHARED[path] = Descriptor(path)
    return _SHARED[path]
