"""How a failure is told: its kind and its detail travel as separate fields from where it happens
(FetchResult.error_kind, StoredImage.error_kind, ShardRow.error_kind, ...), and the words a
person reads hold nothing that changes from run to run.

Python's messages often quote an object by its memory address (PIL: "cannot identify image file
<_io.BytesIO object at 0x7f3a...>"); stored in a shard's parquet or counted in `status_dict`, such
text would make every rerun's outputs differ and grow a key per row. `plain` drops the address.

    detail = failures.describe(err)     # "UnidentifiedImageError: cannot identify image file <_io.BytesIO>"
"""
from __future__ import annotations

import re

_ADDRESS = re.compile(r"<([^<>]*?)\s+at\s+0x[0-9a-fA-F]+>")


def plain(text: str) -> str:
    """`text` without object addresses: "<_io.BytesIO object at 0x7f..>" -> "<_io.BytesIO object>"."""
    return _ADDRESS.sub(r"<\1>", text)


def describe(err: BaseException) -> str:
    """An exception in words: its type and message, no addresses."""
    message = plain(str(err))
    return f"{type(err).__name__}: {message}" if message else type(err).__name__
