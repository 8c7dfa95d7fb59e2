"""Checkpoints: one file per saved step, written atomically, holding everything an exact resume needs.

    output/checkpoints/step_00001000.pt   {"step", "config" (TrainConfig), "model_config",
                                           "tokenizer" {"kind", "name", "data"}, "model",
                                           "optimizer", "ranks" [per rank: {"loader", "rng"}],
                                           "world_size", "metrics", "format"}

`save_checkpoint` writes it with the project's one atomic write (pipeline/foundation/storage.py: a temporary
file in the same folder, `.step_00001000.pt.tmp-<hex>`, fsynced, renamed into place, the folder
fsynced), so a kill at any moment leaves either the
complete new checkpoint or none: `latest_checkpoint` never sees a partial one. Only the master
process writes; the per-rank parts (loader position, RNG states) are gathered to it first.
Everything stored is a tensor or plain Python data, so `load_checkpoint` uses torch's safe
`weights_only` loader.

    path = save_checkpoint("out/checkpoints", step, state, keep_last=3)
    path = latest_checkpoint("out/checkpoints")      # None when there is none
    state = load_checkpoint(path)
"""
from __future__ import annotations

import os
import random
import re

import numpy as np
import torch

from clipdata.pipeline.foundation.storage import atomic_write

FORMAT = "clipdata-checkpoint-1"
_NAME = re.compile(r"^step_(\d+)\.pt$")
_TEMP = re.compile(r"^\.step_\d+\.pt\.tmp-[0-9a-f]+$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def save_checkpoint(folder: str, step: int, state: dict, keep_last: int = 0) -> str:
    """Write `state` as the checkpoint of `step` atomically; keep only the newest `keep_last`
    checkpoints (0: keep all). Returns the checkpoint's path."""
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):  # left by a writer that was killed (the master is the only one)
        if _TEMP.match(name):
            os.remove(os.path.join(folder, name))
    path = os.path.join(folder, checkpoint_name(step))
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))
    if keep_last > 0:
        for old in list_checkpoints(folder)[:-keep_last]:
            os.remove(old)
    return path


def list_checkpoints(folder: str) -> list[str]:
    """Complete checkpoints in `folder`, oldest step first."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = sorted((int(m.group(1)), name) for name in names if (m := _NAME.match(name)))
    return [os.path.join(folder, name) for _, name in found]


def latest_checkpoint(folder: str) -> str | None:
    """The checkpoint with the highest step in `folder`, or None."""
    found = list_checkpoints(folder)
    return found[-1] if found else None


def resolve_checkpoint(path: str) -> str | None:
    """A checkpoint file as it is; for a run folder its latest checkpoint, in `checkpoints/` or in
    the folder itself; None when the folder holds none."""
    if not os.path.isdir(path):
        return path
    return latest_checkpoint(os.path.join(path, "checkpoints")) or latest_checkpoint(path)


class CheckpointError(Exception):
    """A checkpoint that cannot be used: `path` and `problem` (in words, no run-varying text)."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """The state a checkpoint holds; CheckpointError when the file is missing, truncated, not a
    file torch saved, or not a clipdata checkpoint."""
    if not os.path.isfile(path):
        raise CheckpointError(path, "no such checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds on a damaged file
        raise CheckpointError(path, f"not a readable checkpoint: truncated, damaged, or not a file "
                              f"torch saved ({type(err).__name__})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(path, f"not a clipdata checkpoint (format {found!r}, expected {FORMAT!r})")
    return state


def load_latest(folder: str, map_location="cpu") -> tuple[str | None, dict | None, list[CheckpointError]]:
    """(path, state, skipped): the newest checkpoint in `folder` that loads, and the newer ones
    that did not (newest first), so a run resumes from its last good checkpoint and says which
    it passed over. (None, None, skipped) when none loads."""
    skipped = []
    for path in reversed(list_checkpoints(folder)):
        try:
            return path, load_checkpoint(path, map_location), skipped
        except CheckpointError as err:
            skipped.append(err)
    return None, None, skipped


# ---------------------------------------------------------------------------------------------
# RNG states of one process, as plain data


def rng_state() -> dict:
    """Python's, numpy's and torch's (CPU and current CUDA device) generator states."""
    np_state = np.random.get_state(legacy=False)
    version, internal, gauss = random.getstate()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": np_state["state"]["key"].tolist(), "pos": int(np_state["state"]["pos"]),
                  "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": np.array(n["key"], dtype=np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
