"""Model architectures as data: one JSON file per architecture (open_clip's layout).

    {"embed_dim": 512,
     "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
     "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}

`vision_cfg.layers` is an int for a ViT and a list of four stage depths for a modified ResNet
(`"layers": [3, 4, 6, 3], "width": 64` is RN50). Adding a model means adding a file here, or
passing the path of a JSON file anywhere a config name is accepted.

    list_configs()             # ['RN101', 'RN50', 'RN50x4', 'ViT-B-16', ..., 'tiny-rn', 'tiny-vit']
    load_config("ViT-B-32")    # a fresh dict
    load_config("my/model.json")
"""
from __future__ import annotations

import json
import os

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


def list_configs() -> list[str]:
    """Names of the architectures in the registry (this folder's *.json files)."""
    return sorted(name[: -len(".json")] for name in os.listdir(CONFIG_DIR) if name.endswith(".json"))


def load_config(name_or_path: str) -> dict:
    """A registry name ("ViT-B-32") or the path of a JSON file -> the config dict (a fresh copy)."""
    if os.path.isfile(name_or_path):
        path = name_or_path
    else:
        path = os.path.join(CONFIG_DIR, f"{name_or_path}.json")
        if not os.path.isfile(path):
            raise ValueError(
                f"unknown model config {name_or_path!r}: not a file, and not one of {list_configs()}"
            )
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in config:
            raise ValueError(f"model config {path} has no {key!r}")
    return config
