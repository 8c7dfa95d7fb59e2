"""Every setting of a training run (`TrainConfig`), apart from the trainer so that `clipdata`
builds its command line (one flag per field, trainer/cli.py) without importing torch: every
subcommand, `clipdata download` and `clipdata --help` included, builds that parser (importing
torch there cost every command ~1.2 CPU-s and ~250 MB)."""
from __future__ import annotations

from dataclasses import dataclass, field


def _flag(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Every setting of a run; saved in each checkpoint. One CLI flag per field (trainer/cli.py)."""
    # data and output
    data: str = _flag("", "training shards: a folder of .tar files, a brace pattern "
                          "('shards/{00000..00099}.tar', runs joined by '::') or a manifest.json")
    output: str = _flag("", "run folder: checkpoints/, tokenizer.json, log.jsonl, tb/, eval/")
    model: str = _flag("tiny-vit", "architecture: a name in trainer/model_configs "
                                   "(tiny-vit, tiny-rn, ViT-B-32, RN50, ...) or a JSON file")
    tokenizer: str = _flag("", "an existing tokenizer: our tokenizer.json, or CLIP's merges file "
                               "(bpe_simple_vocab_16e6.txt.gz); empty: learn one from the shards")
    vocab_size: int = _flag(49152, "vocabulary of a learned tokenizer (CLIP's 49152); small data "
                                   "gives fewer tokens: merges seen < 2 times are not made")
    tokenizer_captions: int = _flag(200_000, "learn the tokenizer from this many captions, the "
                                             "first ones of the shards in order")
    # batch and length
    batch_size: int = _flag(64, "image-text pairs per process per step; the global batch is this "
                                "times the world size")
    steps: int = _flag(1000, "optimizer steps in all (a resumed run continues up to this)")
    # optimizer (CLIP §2.5 / Table 20: AdamW, beta2 0.98, eps 1e-6, wd 0.2, cosine schedule)
    lr: float = _flag(5e-4, "peak learning rate")
    min_lr: float = _flag(0.0, "learning rate at the end of the cosine decay")
    warmup: int = _flag(100, "linear warmup steps")
    weight_decay: float = _flag(0.2, "AdamW decoupled weight decay, on weights only "
                                     "(not gains, biases or the temperature)")
    beta1: float = _flag(0.9, "AdamW beta1")
    beta2: float = _flag(0.98, "AdamW beta2")
    eps: float = _flag(1e-6, "AdamW epsilon")
    grad_clip: float = _flag(1.0, "clip the gradient's global norm to this (0: no clipping)")
    precision: str = _flag("auto", "fp32, bf16 (autocast) or auto: bf16 on a GPU that supports "
                                   "it, fp32 elsewhere")
    grad_checkpointing: bool = _flag(False, "recompute activations in the backward pass: less "
                                            "memory, about a third more compute")
    # data loading
    workers: int = _flag(4, "DataLoader worker processes per process (0: load in the main process)")
    shuffle_buffer: int = _flag(2000, "samples in each stream's shuffle buffer")
    shards_per_group: int = _flag(4, "shards a stream interleaves at a time (and re-reads at most "
                                     "on resume)")
    seed: int = _flag(0, "seed of the model's initialisation and of the data order")
    online_balance: str = _flag("", "balance online (MetaCLIP's online curation): the folder `clipdata curate` "
                                    "wrote for these shards (entry_counts.parquet); each sample is kept with "
                                    "its entries' probability at --online-t, drawn afresh each time it is read")
    online_t: int = _flag(20_000, "t of --online-balance: about this many samples per entry each pass "
                                  "(English's t with a worldwide list; every other language the t leaving "
                                  "the same tail share)")
    # intervals and outputs
    log_every: int = _flag(10, "log every N steps (log.jsonl, TensorBoard, progress bar); the "
                               "NaN/inf check runs then too")
    ckpt_every: int = _flag(500, "checkpoint every N steps (and at the end)")
    keep_checkpoints: int = _flag(3, "keep the newest N checkpoints (0: all)")
    resume: str = _flag("auto", "auto: continue from the newest checkpoint in output/checkpoints if "
                                "there is one; none: refuse to start over an existing one; or a "
                                "checkpoint path")
    eval_data: str = _flag("", "zero-shot eval set: a labelled image folder (class-per-subfolder, "
                               "classes.json for class texts) or labelled shards")
    eval_classnames: str = _flag("", "class texts for the eval set: JSON list (label = index) or "
                                     "object (label -> text), or one per line")
    eval_every: int = _flag(0, "zero-shot eval every N steps and at the end (0: only at the end, "
                               "when --eval-data is given)")
    peak_flops: float = _flag(0.0, "peak FLOP/s of one accelerator for MFU (0: from the table of "
                                   "known GPUs' dense bf16 peaks)")
    device: str = _flag("", "cpu or cuda (default: cuda:LOCAL_RANK when available)")
