"""Image embeddings from a trained checkpoint: what `clipdata dedup --embeddings` searches with.

    embedder = ImageEmbedder.load("run/")          # a run folder (its latest checkpoint) or a .pt
    vectors = embedder.embed_images([pil_image, ...])   # (n, embed_dim) float32, L2-normalised

Images go through the evaluation preprocessing (transparency matted on white, shorter side
resized to the model's image size, centre square), so an image embeds the same here as in
zero-shot evaluation.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from clipdata.trainer import checkpoint, data, model as clip_model


class ImageEmbedder:
    def __init__(self, model: clip_model.CLIP, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.image_size = model.config["vision_cfg"]["image_size"]

    @classmethod
    def load(cls, path: str, device: str = "cpu") -> "ImageEmbedder":
        found = checkpoint.resolve_checkpoint(path)
        if found is None or not os.path.isfile(found):
            raise FileNotFoundError(f"{path}: no clipdata checkpoint there (a .pt file, or a run folder "
                                    "with checkpoints/ as `clipdata train` writes it)")
        return cls(clip_model.model_from_checkpoint(checkpoint.load_checkpoint(found)), device)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """uint8 [3, S, S]: the eval view of one image."""
        return data.square_crop(data.matte_on_white(image), self.image_size, None)

    @torch.no_grad()
    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.model.config["embed_dim"]), np.float32)
        pixels = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        features = self.model.encode_image(data.normalize(pixels), normalize=True)
        return features.float().cpu().numpy()
