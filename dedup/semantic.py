"""The optional semantic stage of `clipdata dedup` (`--embeddings CHECKPOINT`): image embeddings of
a trained model (trainer/embed.py) in a FAISS inner-product index; pairs with cosine >=
--semantic-threshold become candidates, screened and verified like the others.
"""
from __future__ import annotations

import numpy as np


class SemanticUnavailable(Exception):
    """--embeddings was asked for but no model loader exists yet."""

# ---------------------------------------------------------------------------------------------
# The semantic stage (optional): embeddings of a trained model in a FAISS inner-product index


def normalise(embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12))


def semantic_pairs(test_embeddings: np.ndarray, train_embeddings: np.ndarray, threshold: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(test_idx, train_idx, cosine) of every pair with cosine similarity >= threshold.

    The test side goes in an IndexFlatIP over L2-normalised embeddings (inner product = cosine);
    the training embeddings are the queries, as with the hashes: the small side indexed, the big
    side streamed. FAISS's range search keeps scores strictly above its radius, so the radius is
    nudged just below the threshold and the result filtered to >= threshold.
    """
    import faiss

    test = normalise(test_embeddings)
    train = normalise(train_embeddings)
    if not len(test) or not len(train):
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    if test.shape[1] != train.shape[1]:
        raise ValueError(f"embedding widths differ: test {test.shape[1]}, train {train.shape[1]}")
    index = faiss.IndexFlatIP(test.shape[1])
    index.add(test)
    limits, scores, labels = index.range_search(train, float(np.nextafter(np.float32(threshold), np.float32(-1))))
    train_idx = np.repeat(np.arange(len(train)), np.diff(limits).astype(np.int64))
    keep = scores >= np.float32(threshold)
    return labels[keep].astype(np.int64), train_idx[keep].astype(np.int64), scores[keep]


def load_embedder(checkpoint: str):
    """A function list[PIL image] -> (n, d) L2-normalised embeddings, from a `clipdata train`
    checkpoint file or run folder (its latest checkpoint). Raises SemanticUnavailable with the
    reason when there is none or it does not load."""
    try:
        from clipdata.trainer.embed import ImageEmbedder

        embedder = ImageEmbedder.load(checkpoint)
    except ImportError as err:  # torch missing from a slimmed-down install
        raise SemanticUnavailable(f"--embeddings needs the trainer's dependencies ({err})") from err
    except Exception as err:  # noqa: BLE001 - torch.load raises several kinds on a bad file
        raise SemanticUnavailable(f"--embeddings {checkpoint}: not a loadable clipdata checkpoint "
                                  f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
    return embedder.embed_images


def embed_in_batches(embedder, images: list, batch: int = 64) -> np.ndarray:
    parts = [embedder(images[i:i + batch]) for i in range(0, len(images), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
