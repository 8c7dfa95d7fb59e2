"""`clipdata dedup`: contamination reports against evaluation test sets (issue #5)."""
from clipdata.pipeline.cli import add_not_built


def add_commands(subparsers) -> None:
    add_not_built(subparsers, "dedup", "find test-set images in the shards (contamination report)", 5)
