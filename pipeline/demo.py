"""`clipdata demo`: every stage that exists today, end to end, on data the project generates."""
from clipdata.pipeline.cli import add_not_built


def add_commands(subparsers) -> None:
    add_not_built(subparsers, "demo", "run every stage on the embedded synthetic web", 2)
