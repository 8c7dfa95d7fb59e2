"""`clipdata train`: stream the shards into a CLIP model; `clipdata train eval`: zero-shot accuracy.

    clipdata train --data shards/ --output run/ --model tiny-vit --steps 500 --batch-size 64
    clipdata train eval --checkpoint run/checkpoints/step_00000500.pt --data test_set/

One flag per field of `TrainConfig` (trainer/config.py), with its help. Several processes run the
same flags through torchrun, whose entry point is `python -m clipdata.trainer.train`
(see EXAMPLES below and trainer/train.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

EXAMPLES = """examples:
  one process (CPU, or one GPU):
    clipdata train --data shards/ --output run/ --model tiny-vit --steps 500

  one node, 2 processes (one per GPU; gloo processes on a CPU machine):
    torchrun --standalone --nproc_per_node=2 -m clipdata.trainer.train \\
        --data shards/ --output run/ --model ViT-B-32 --batch-size 256

  two nodes, 8 GPUs each (run on both; NODE_RANK 0 or 1, MASTER_ADDR = node 0):
    torchrun --nnodes=2 --node_rank=$NODE_RANK --nproc_per_node=8 \\
        --master_addr=$MASTER_ADDR --master_port=29500 \\
        -m clipdata.trainer.train --data /shared/shards/manifest.json --output /shared/run/

  zero-shot accuracy of a checkpoint (writes per-example id,correct for `clipdata dedup`):
    clipdata train eval --checkpoint run/checkpoints/step_00000500.pt --data test_set/

Rerunning a training command continues from the newest checkpoint in OUTPUT/checkpoints, exactly.
--batch-size is per process: the global batch is batch size x processes. Exit code 3: the loss
became NaN/inf (the newest checkpoint is the last good one)."""


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One --flag per TrainConfig field: same name with '-', the field's type, default and help."""
    from clipdata.trainer.config import TrainConfig

    # --data and --output are checked by check_config, not argparse (`clipdata train eval` shares
    # the parser), and listed apart in --help
    required = parser.add_argument_group("required (except for `clipdata train eval`)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata["help"]
        target = required if f.name in ("data", "output") else parser
        if f.type in (bool, "bool"):
            target.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=f.default, help=help_text + " (default: %(default)s)")
            continue
        kind = {"int": int, "float": float, "str": str}.get(f.type, f.type)
        metavar = f.name.upper() if kind is str else None
        shown = " (default: %(default)s)" if f.default not in ("", None) else ""
        target.add_argument(flag, dest=f.name, type=kind, default=f.default, metavar=metavar,
                            help=help_text + shown)


def build_train_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The training flags alone: `python -m clipdata.trainer.train` (torchrun) parses these."""
    parser = argparse.ArgumentParser(prog=prog, description="Train a CLIP model by streaming "
                                     "WebDataset shards.", epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser)
    return parser


def add_commands(subparsers) -> None:
    train = subparsers.add_parser(
        "train", help="train a CLIP model by streaming the shards (and `train eval`)",
        description="Train a CLIP model by streaming WebDataset shards; `clipdata train eval "
        "--help` for zero-shot evaluation of a checkpoint.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(train)
    train.set_defaults(handler=run_train_command, beam=False)

    verbs = train.add_subparsers(dest="verb", required=False, metavar="[eval]")
    evaluate = verbs.add_parser(
        "eval", help="zero-shot top-1/top-5 of a checkpoint on a labelled folder or shards",
        description="Zero-shot classification accuracy of a training checkpoint; writes the "
        "per-example id,correct CSV that `clipdata dedup` turns into All/Clean/Overlap accuracy.")
    evaluate.add_argument("--checkpoint", required=True, help="a checkpoint file "
                          "(OUTPUT/checkpoints/step_*.pt), or a run folder for its newest one")
    evaluate.add_argument("--data", required=True, dest="eval_set",
                          help="labelled image folder (class-per-subfolder, classes.json for class "
                          "texts) or labelled shards (cls member or json label)")
    evaluate.add_argument("--classnames", help="class texts: JSON list (label = index), JSON "
                          "object (label -> text) or one per line")
    evaluate.add_argument("--predictions", help="per-example CSV to write (default: "
                          "RUN/eval/<checkpoint>_<data>_predictions.csv)")
    evaluate.add_argument("--batch-size", dest="eval_batch_size", type=int, default=256,
                          help="images per forward pass (default: %(default)s)")
    evaluate.add_argument("--workers", dest="eval_workers", type=int, default=2,
                          help="image decoding processes (default: %(default)s)")
    evaluate.add_argument("--device", dest="eval_device", default="",
                          help="cpu or cuda (default: cuda when available)")
    evaluate.set_defaults(handler=run_eval_command, beam=False)


def config_from_args(args):
    from clipdata.trainer.config import TrainConfig

    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})


def check_config(config) -> None:
    """User errors found before anything starts, as UsageError."""
    from clipdata.pipeline.foundation.errors import UsageError
    from clipdata.trainer import checkpoint, data, model

    if not config.data or not config.output:
        raise UsageError("--data (the training shards) and --output (the run folder) are required")
    try:
        data.resolve_shards(config.data)
    except data.DataError as err:
        raise UsageError(str(err)) from err
    try:
        model.load_config(config.model)
    except ValueError as err:
        raise UsageError(str(err)) from err
    if config.online_balance and not os.path.exists(os.path.join(config.online_balance, "entry_counts.parquet")):
        raise UsageError(f"--online-balance {config.online_balance}: no entry_counts.parquet there; give the "
                         "folder `clipdata curate` wrote for these shards")
    if config.online_t < 1:
        raise UsageError(f"--online-t must be at least 1, got {config.online_t}")
    if config.tokenizer and not os.path.exists(config.tokenizer):
        raise UsageError(f"--tokenizer {config.tokenizer}: no such file")
    if config.precision not in ("auto", "fp32", "bf16"):
        raise UsageError(f"--precision must be auto, fp32 or bf16, got {config.precision!r}")
    if config.resume not in ("auto", "none") and not os.path.exists(config.resume):
        raise UsageError(f"--resume {config.resume}: no such checkpoint")
    existing = checkpoint.latest_checkpoint(os.path.join(config.output, "checkpoints"))
    if config.resume == "none" and existing:
        raise UsageError(f"{existing} exists and --resume is none: use --resume auto to continue "
                         "it, or another --output")
    if config.eval_data and not os.path.exists(config.eval_data.split("::")[0].split("{")[0]):
        raise UsageError(f"--eval-data {config.eval_data}: not found")
    for name in ("batch_size", "steps", "log_every", "ckpt_every"):
        if getattr(config, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")


def run_training(args) -> int:
    """Check the flags, then train; data that turns out unusable is a UsageError too."""
    from clipdata.pipeline.foundation.errors import UsageError
    from clipdata.trainer import checkpoint, data, train

    config = config_from_args(args)
    check_config(config)
    try:
        return train.train(config)
    except checkpoint.CheckpointError as err:
        raise UsageError(f"--resume {err}") from err
    except data.DataError as err:
        raise UsageError(str(err)) from err


def run_train_command(args, extra) -> int:
    from clipdata.trainer import distributed

    try:
        return run_training(args)
    finally:
        distributed.cleanup()


def run_eval_command(args, extra) -> int:
    import torch

    from clipdata.pipeline.foundation.errors import UsageError
    from clipdata.trainer import checkpoint, zeroshot

    path = checkpoint.resolve_checkpoint(args.checkpoint)
    if path is None:
        raise UsageError(f"no checkpoint in {args.checkpoint}")
    if not os.path.exists(path):
        raise UsageError(f"--checkpoint {path}: no such file")
    if os.path.isdir(args.checkpoint):   # a run folder: its newest checkpoint that loads
        folder = os.path.dirname(path)
        found, _, skipped = checkpoint.load_latest(folder)
        for bad in skipped:
            print(f"skipping checkpoint {bad.path}: {bad.problem}", file=sys.stderr)
        if found is None:
            raise UsageError(f"no checkpoint in {folder} loads (the newest: {skipped[0].problem})")
        path = found
    predictions = args.predictions
    if not predictions:
        run = os.path.dirname(os.path.dirname(os.path.abspath(path)))
        stem = os.path.basename(path).rsplit(".", 1)[0]
        name = os.path.basename(os.path.normpath(args.eval_set)).split(".")[0] or "eval"
        predictions = os.path.join(run, "eval", f"{stem}_{name}_predictions.csv")
    device = args.eval_device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        result = zeroshot.evaluate_checkpoint(
            path, args.eval_set, device=device, classnames=args.classnames,
            batch_size=args.eval_batch_size, workers=args.eval_workers,
            predictions_csv=predictions)
    except (zeroshot.EvalError, checkpoint.CheckpointError) as err:
        raise UsageError(f"--checkpoint {err}" if isinstance(err, checkpoint.CheckpointError) else str(err)) from err
    print(f"step {result['step']}: zero-shot top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f} "
          f"on {result['n']} images, {result['classes']} classes"
          + (f" ({result['unreadable']} unreadable, left out)" if result["unreadable"] else ""))
    print(f"per-example predictions: {predictions}")
    return 0
