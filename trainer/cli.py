"""`clipdata train`: streaming distributed contrastive training (issue #6)."""
from clipdata.pipeline.cli import add_not_built


def add_commands(subparsers) -> None:
    add_not_built(subparsers, "train", "train a CLIP model by streaming the shards", 6)
