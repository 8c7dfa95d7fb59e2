"""Train a CLIP model by streaming WebDataset shards (CLIP §2.3-2.5): the loop, top to bottom.

One process (CPU or one GPU):
    clipdata train --data shards/ --output run/ --model tiny-vit --steps 500 --batch-size 64

torchrun on one node (here 2 processes; one per GPU, or gloo processes on CPU):
    torchrun --standalone --nproc_per_node=2 -m clipdata.trainer.train --data shards/ --output run/

Two nodes (run on each, NODE_RANK 0 and 1; MASTER_ADDR is node 0's address):
    torchrun --nnodes=2 --node_rank=$NODE_RANK --nproc_per_node=8 \\
        --master_addr=$MASTER_ADDR --master_port=29500 \\
        -m clipdata.trainer.train --data /shared/shards/manifest.json --output /shared/run/

What one run does: learn a BPE tokenizer from the shards' captions (or take `--tokenizer`), save it
as output/tokenizer.json; build the model; stream batches (trainer/data.py); AdamW with decoupled
weight decay on weights only, cosine LR with warmup, the sharded contrastive loss, gradient
clipping, the temperature clamp; log to output/log.jsonl and TensorBoard (output/tb), zero-shot
eval every `--eval-every` steps, an atomic checkpoint every `--ckpt-every` steps. Rerunning the same
command resumes from the newest checkpoint in output/checkpoints exactly: the same weights as a run
that never stopped (same data order, optimizer state, RNG states). `batch_size` is per process; the
global batch (the N of the N x N similarity matrix) is batch_size x world size.

Exit codes: 0 done; 2 a usage or data error (the message says which); 3 the loss became NaN/inf,
training stopped and the newest checkpoint is the last good one (nothing is written after it).
"""
from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from dataclasses import asdict, fields

import torch
import torch.distributed as dist

from clipdata.pipeline.foundation.storage import atomic_write
from clipdata.trainer import checkpoint, data, distributed, model as clip_model, schedule
from clipdata.trainer.config import TrainConfig
from clipdata.trainer.loss import ClipLoss
from clipdata.trainer.tokenizer import Tokenizer

EXIT_NONFINITE = 3


class NonFiniteLoss(Exception):
    pass


# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, FLOP/s; first match wins.
PEAK_BF16_FLOPS = (
    ("GB200", 2.5e15), ("B200", 2.25e15), ("H200", 989e12), ("GH200", 989e12),
    ("H100 PCIe", 756e12), ("H100", 989e12), ("H800", 989e12), ("A100", 312e12),
    ("A800", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12), ("A10G", 70e12),
    ("A10", 125e12), ("RTX 4090", 165e12), ("RTX 3090", 71e12), ("A6000", 155e12),
)


def peak_flops_of(device: torch.device, override: float = 0.0) -> float | None:
    if override > 0:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def train(config: TrainConfig) -> int:
    # -- processes, device, precision ------------------------------------------------------------
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # DataLoader workers fork after use
    backend = "gloo" if config.device == "cpu" else None  # CPU processes on a GPU machine
    is_distributed, rank, local_rank, world_size, device = distributed.init_distributed(backend)
    if config.device:
        device = torch.device(config.device if config.device != "cuda" else f"cuda:{local_rank}")
    master = rank == 0
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32, bf16 or auto, got {config.precision!r}")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    ckpt_dir = os.path.join(config.output, "checkpoints")
    os.makedirs(ckpt_dir, exist_ok=True)

    # -- the checkpoint to continue from ---------------------------------------------------------
    resume_path, ckpt = None, None
    if config.resume == "auto":
        # the newest checkpoint that loads: a damaged newer one is passed over, and said
        resume_path, ckpt, skipped = checkpoint.load_latest(ckpt_dir)
        for bad in skipped:
            distributed.print0(f"skipping checkpoint {bad.path}: {bad.problem}")
        if skipped:
            distributed.print0(f"resuming from {resume_path}" if resume_path
                               else "no checkpoint loads: starting from scratch")
    elif config.resume == "none":
        if checkpoint.latest_checkpoint(ckpt_dir):
            raise ValueError(f"{ckpt_dir} holds checkpoints and --resume is none: use --resume "
                             "auto to continue, or another --output")
    else:
        resume_path = config.resume
        ckpt = checkpoint.load_checkpoint(resume_path)
    if ckpt:
        changed = {k: (v, getattr(config, k)) for k, v in ckpt["config"].items()
                   if k in {f.name for f in fields(config)} - {"output", "resume"}
                   and getattr(config, k) != v}
        distributed.print0(f"resuming from {resume_path} (step {ckpt['step']})"
                           + (f"; settings changed since: {changed}" if changed else ""))

    # -- tokenizer and model ---------------------------------------------------------------------
    shards = data.resolve_shards(config.data)
    tokenizer = prepare_tokenizer(config, shards, ckpt, master)
    if ckpt:
        model_config = ckpt["model_config"]
    else:
        model_config = clip_model.with_tokenizer(clip_model.load_config(config.model), tokenizer)
    torch.manual_seed(config.seed)  # every rank builds the same weights (DDP checks it)
    model = clip_model.build_model(model_config).to(device)
    model.set_grad_checkpointing(config.grad_checkpointing)
    optimizer = torch.optim.AdamW(clip_model.param_groups(model, config.weight_decay), lr=config.lr,
                                  betas=(config.beta1, config.beta2), eps=config.eps,
                                  fused=device.type == "cuda")
    step, samples_seen = 0, 0
    if ckpt:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step, samples_seen = ckpt["step"], ckpt["metrics"]["samples"]
    ddp_model = model
    if is_distributed:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = ClipLoss(rank=rank, world_size=world_size)
    flops = clip_model.flops_per_sample(model_config)
    peak = peak_flops_of(device, config.peak_flops)
    distributed.print0(f"model {config.model}: {clip_model.count_params(model) / 1e6:.1f}M "
                       f"parameters, vocab {tokenizer.vocab_size}, {flops / 1e9:.2f} GFLOP/sample; "
                       f"world size {world_size}, global batch {config.batch_size * world_size}, "
                       f"{precision} on {device}")

    # -- data: this rank's streams, continued from the checkpoint's position ---------------------
    context_length = model_config["text_cfg"]["context_length"]
    balancer = None
    if config.online_balance:
        from clipdata.trainer.online_balance import OnlineBalance

        balancer = OnlineBalance.from_curated(config.online_balance, config.online_t, seed=config.seed)
        distributed.print0("online balancing: t " + ", ".join(f"{k} {v:,}" for k, v in balancer.thresholds.items())
                           + f" over {len(balancer.probability):,} entries")
    loader = data.ShardLoader(
        shards, batch_size=config.batch_size, image_size=model_config["vision_cfg"]["image_size"],
        seed=config.seed, rank=rank, world_size=world_size, num_workers=config.workers,
        tokenizer=functools.partial(tokenizer, context_length=context_length),
        shards_per_group=config.shards_per_group, shuffle_buffer=config.shuffle_buffer,
        pin_memory=device.type == "cuda", balance=balancer)
    torch.manual_seed(config.seed + rank)
    if ckpt:
        if len(ckpt["ranks"]) == world_size:
            loader.load_state_dict(ckpt["ranks"][rank]["loader"])
            checkpoint.set_rng_state(ckpt["ranks"][rank]["rng"])
        else:
            distributed.print0(f"world size changed ({len(ckpt['ranks'])} -> {world_size}): "
                               "the data streams start afresh from a new seed")
            loader.load_state_dict({**ckpt["ranks"][0]["loader"], "spec": {}})
    dataset_size = data.dataset_size(config.data)
    run_log = RunLog(config.output) if master else None
    progress = _progress_bar(config.steps, step) if master else None

    def save(step: int) -> str | None:
        per_rank = {"loader": loader.state_dict(), "rng": checkpoint.rng_state()}
        ranks = [None] * world_size
        if is_distributed:
            dist.all_gather_object(ranks, per_rank)
        else:
            ranks = [per_rank]
        skips = total_skips()
        path = None
        if master:
            path = checkpoint.save_checkpoint(ckpt_dir, step, {
                "step": step, "config": asdict(config), "model_config": model_config,
                "tokenizer": {"source": config.tokenizer or "learned",
                              "json": open(tokenizer_path(config), encoding="utf-8").read()},
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "ranks": ranks, "world_size": world_size,
                "metrics": {"samples": samples_seen, "skips": skips},
            }, keep_last=config.keep_checkpoints)
        distributed.barrier()
        return path

    def total_skips() -> dict:
        counts = [None] * world_size
        if is_distributed:
            dist.all_gather_object(counts, dict(loader.skips))
        else:
            counts = [dict(loader.skips)]
        summed: dict = {}
        for c in counts:
            for k, v in c.items():
                summed[k] = summed.get(k, 0) + v
        return dict(sorted(summed.items()))

    def check_finite() -> None:
        # first_bad holds the first step (1-based) whose loss was NaN/inf on this rank (-1: none);
        # any rank's stops all of them, before anything is logged or saved.
        worst = first_bad.clone()
        if is_distributed:
            worst = torch.where(worst < 0, torch.full_like(worst, 1 << 62), worst)
            dist.all_reduce(worst, op=dist.ReduceOp.MIN)
            worst = torch.where(worst == 1 << 62, torch.full_like(worst, -1), worst)
        if worst.item() >= 0:
            raise NonFiniteLoss(int(worst.item()))

    # -- the loop ------------------------------------------------------------------------------
    batches = iter(loader)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), device=device)
    # throughput window: steps since the last log, and the time spent in them (eval and
    # checkpoint time left out)
    window_start, window_steps, data_wait, paused = time.perf_counter(), 0, 0.0, 0.0
    ddp_model.train()
    try:
        while step < config.steps:
            lr = schedule.lr_at(step, config.lr, config.warmup, config.steps, config.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            batch = next(batches)
            data_wait += time.perf_counter() - t0
            images = data.normalize(batch["images"].to(device, non_blocking=True))
            tokens = batch["tokens"].to(device, non_blocking=True)

            with autocast:
                image_features, text_features, logit_scale = ddp_model(images, tokens)
            # the N x N similarities and the softmax in fp32, whatever the towers ran in
            loss = loss_fn(image_features.float(), text_features.float(), logit_scale.float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = None
            if config.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            model.clamp_logit_scale()

            step += 1  # steps done; what the log, the checkpoints and the messages count
            bad = ~torch.isfinite(loss.detach())
            first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, step), first_bad)
            loss_sum += loss.detach()
            window_steps += 1
            samples_seen += config.batch_size * world_size

            if step % config.log_every == 0 or step == config.steps:
                check_finite()
                mean_loss = loss_sum / window_steps
                if is_distributed:
                    dist.all_reduce(mean_loss)  # SUM: gloo has no AVG everywhere
                    mean_loss /= world_size
                elapsed = time.perf_counter() - window_start - paused
                samples_per_s = window_steps * config.batch_size * world_size / elapsed
                record = {
                    "step": step, "loss": mean_loss.item(), "lr": lr,
                    "logit_scale": model.logit_scale.exp().item(),
                    "samples_per_s": samples_per_s, "data_wait": data_wait / elapsed,
                    "grad_norm": grad_norm.item() if grad_norm is not None else None,
                    "samples": samples_seen,
                    "epoch": samples_seen / dataset_size if dataset_size else None,
                    "mfu": flops * samples_per_s / (peak * world_size) if peak else None,
                    "skips": total_skips(),
                }
                if master:
                    run_log.write(record)
                    progress.update(step - progress.n)
                    progress.set_postfix(loss=f"{record['loss']:.3f}", sps=f"{samples_per_s:.0f}")
                loss_sum.zero_()
                window_start, window_steps, data_wait, paused = time.perf_counter(), 0, 0.0, 0.0

            last = step == config.steps
            t0 = time.perf_counter()
            if config.eval_data and ((config.eval_every and step % config.eval_every == 0) or last):
                check_finite()
                if master:
                    run_log.write({"step": step, **evaluate(model, tokenizer, config, device, step)})
                distributed.barrier()
            if step % config.ckpt_every == 0 or last:
                check_finite()
                save(step)
            paused += time.perf_counter() - t0
    except NonFiniteLoss as err:
        last_good = checkpoint.latest_checkpoint(ckpt_dir)
        distributed.print0(
            f"\nstopped: the loss became non-finite (NaN or inf) at step {err.args[0]}; nothing "
            f"was saved after it. Last good checkpoint: {last_good or 'none'}. Lower --lr, raise "
            "--warmup, or use --precision fp32 to find the cause.", file=sys.stderr)
        return EXIT_NONFINITE
    finally:
        if progress is not None:
            progress.close()
        if run_log is not None:
            run_log.close()
    skipped = total_skips()
    balanced = f"; online balancing left out {loader.balanced_out:,} samples (this process)" if balancer else ""
    distributed.print0(f"done: {step} steps, {samples_seen:,} samples; skipped {data.skip_words(skipped)}"
                       f"{balanced}; checkpoints in {ckpt_dir}")
    return 0


# ---------------------------------------------------------------------------------------------
# The pieces the loop calls


def tokenizer_path(config: TrainConfig) -> str:
    return os.path.join(config.output, "tokenizer.json")


def prepare_tokenizer(config: TrainConfig, shards: list[str], ckpt: dict | None,
                      master: bool) -> Tokenizer:
    """output/tokenizer.json: the checkpoint's, else --tokenizer's, else learned from the shards'
    first captions (by the master; the other ranks wait and read it)."""
    path = tokenizer_path(config)
    if master:
        if ckpt:
            text = ckpt["tokenizer"]["json"]
        elif config.tokenizer:
            text = _tokenizer_json(load_tokenizer(config.tokenizer), path)
        elif os.path.exists(path):  # learned by a run stopped before its first checkpoint
            text = open(path, encoding="utf-8").read()
        else:
            captions = list(data.iter_captions(shards, config.tokenizer_captions))
            if not captions:
                raise data.DataError(f"no captions in {config.data} to learn a tokenizer from")
            tokenizer = Tokenizer.train(captions, vocab_size=config.vocab_size, min_frequency=2)
            print(f"learned a tokenizer of {tokenizer.vocab_size} tokens from "
                  f"{len(captions):,} captions", flush=True)
            text = _tokenizer_json(tokenizer, path)
        atomic_write(path, text.encode("utf-8"))
    distributed.barrier()
    return Tokenizer.load(path)


def _tokenizer_json(tokenizer: Tokenizer, path: str) -> str:
    temp = f"{path}.tmp-{os.getpid()}"
    tokenizer.save(temp)
    with open(temp, encoding="utf-8") as f:
        text = f.read()
    os.remove(temp)
    return text


def load_tokenizer(path: str) -> Tokenizer:
    """Our tokenizer.json, or CLIP's merges file (.txt or .txt.gz)."""
    if path.endswith(".json"):
        return Tokenizer.load(path)
    return Tokenizer.from_clip_bpe(path)


def evaluate(model, tokenizer, config: TrainConfig, device, step: int) -> dict:
    from clipdata.trainer import zeroshot

    out = os.path.join(config.output, "eval", f"step_{step:08d}_predictions.csv")
    result = zeroshot.evaluate(model, tokenizer, config.eval_data, device=device,
                               classnames=config.eval_classnames or None,
                               batch_size=max(config.batch_size, 64), workers=config.workers,
                               predictions_csv=out)
    return {f"zeroshot/{k}": v for k, v in result.items() if isinstance(v, (int, float))}


class RunLog:
    """log.jsonl (one JSON object per log step) and TensorBoard events under output/tb."""

    def __init__(self, output: str):
        self.jsonl = open(os.path.join(output, "log.jsonl"), "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(os.path.join(output, "tb"))
        except ImportError:
            print("tensorboard is not installed: logging to log.jsonl only", file=sys.stderr)
            self.tb = None

    def write(self, record: dict) -> None:
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step" and math.isfinite(value):
                    self.tb.add_scalar(key if "/" in key else f"train/{key}", value, record["step"])
                elif isinstance(value, dict):
                    for k, v in value.items():
                        self.tb.add_scalar(f"{key}/{k}", v, record["step"])
            self.tb.flush()

    def close(self) -> None:
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()


def _progress_bar(total: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m clipdata.trainer.train` (torchrun's entry point): the flags of `clipdata train`."""
    from clipdata.pipeline.foundation.errors import UsageError
    from clipdata.trainer import cli

    parser = cli.build_train_parser(prog="python -m clipdata.trainer.train")
    args = parser.parse_args(argv)
    try:
        return cli.run_training(args)
    except UsageError as err:
        print(f"clipdata.trainer.train: error: {err}", file=sys.stderr)
        return 2
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    sys.exit(main())
