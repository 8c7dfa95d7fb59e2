"""CLIP's text preprocessing and byte-level BPE, on the `tokenizers` library (Rust, fast batches).

As CLIP's simple_tokenizer: text is cleaned (ftfy.fix_text, html.unescape twice, whitespace runs to
one space, lowercase), split by CLIP's regex into words, contractions, single digits and runs of
punctuation, then each word's UTF-8 bytes (as GPT-2's printable byte alphabet) are merged by BPE,
the last symbol of a word carrying the end-of-word suffix `</w>`. The vocabulary is laid out as
CLIP's: the 256 byte symbols, the same 256 with `</w>`, one token per merge in merge order, then
`<|startoftext|>` and `<|endoftext|>`; so the eot id is always vocab_size - 1 and CLIP's own merges
file gives CLIP's ids (49408 tokens). Every byte has a token: no text is ever unknown.

    tokenizer = Tokenizer.train(captions, vocab_size=49152)   # learned from the shards' captions
    tokenizer.save("run/tokenizer.json")                       # one JSON file, beside the checkpoints
    tokenizer = Tokenizer.load("run/tokenizer.json")
    tokenizer = Tokenizer.from_clip_bpe("bpe_simple_vocab_16e6.txt.gz")   # OpenAI's merges
    tokens = tokenizer(["a photo of a dog."])   # LongTensor [1, 77]: sot, ids..., eot, 0, 0, ...

Special-token strings inside a caption are ordinary text here (they split into punctuation and a
word): web captions cannot inject a start or end of text. Decoding puts a space after every word,
as CLIP's does, so `decode(encode(x))` is the cleaned text up to spaces before punctuation
("a dog." decodes as "a dog .").
"""
from __future__ import annotations

import functools
import gzip
import html
import json
import re
from collections.abc import Iterable

import ftfy
import torch
from tokenizers import Regex, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
SUFFIX = "</w>"
# CLIP's split: contractions, letter runs, single digits, runs of other non-space characters
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
CLIP_MAX_MERGES = 49152 - 256 - 2  # CLIP keeps the first 48894 merges of its file
FORMAT = "clipdata-clip-bpe"


@functools.lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's / CLIP's map from the 256 bytes to printable characters (printable bytes map to
    themselves; the rest to code points from 256 up). Its order is the order of the byte tokens."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clean(text: str) -> str:
    """CLIP's cleaning: fix mojibake, unescape HTML entities (twice: captions are often escaped
    twice), collapse whitespace, lowercase."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


def _pre_tokenizer():
    # keep the regex's matches (drop the whitespace between them), then bytes -> byte symbols
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


class Tokenizer:
    def __init__(self, merges: list[tuple[str, str]], context_length: int = 77):
        """From BPE merges in priority order (pairs of symbols, as in CLIP's merges file)."""
        self.merges = [tuple(m) for m in merges]
        self.context_length = context_length
        byte_symbols = list(bytes_to_unicode().values())
        vocab = byte_symbols + [s + SUFFIX for s in byte_symbols]
        vocab += ["".join(m) for m in self.merges] + [SOT, EOT]
        # as CLIP's encoder: a token repeated by a later merge takes the later id
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.vocab_size = len(vocab)
        self.sot_id, self.eot_id = self.encoder[SOT], self.encoder[EOT]
        self.byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
        self._hf = HFTokenizer(models.BPE(vocab=self.encoder, merges=self.merges, end_of_word_suffix=SUFFIX))
        self._hf.pre_tokenizer = _pre_tokenizer()

    # --- building ---------------------------------------------------------------------------------

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 49152, min_frequency: int = 2,
              context_length: int = 77) -> Tokenizer:
        """Learn merges from captions. vocab_size counts every id (512 byte tokens, the merges and
        the 2 special tokens); a corpus with fewer pairs seen min_frequency times gives fewer merges."""
        n_merges = vocab_size - 512 - 2
        if n_merges < 0:
            raise ValueError(f"vocab_size {vocab_size} is below the 514 byte and special tokens")
        hf = HFTokenizer(models.BPE(end_of_word_suffix=SUFFIX))
        hf.pre_tokenizer = _pre_tokenizer()
        # The trainer's own vocabulary holds only the suffixed byte symbols it saw, so asking it for
        # vocab_size tokens gives at least n_merges merges; the prefix is a valid BPE on its own.
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), end_of_word_suffix=SUFFIX)
        hf.train_from_iterator((clean(t) for t in texts), trainer=trainer)
        merges = json.loads(hf.to_str())["model"]["merges"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
        return cls(merges[:n_merges], context_length)

    @classmethod
    def from_clip_bpe(cls, merges_path: str, context_length: int = 77,
                      max_merges: int = CLIP_MAX_MERGES) -> Tokenizer:
        """CLIP's published merges (`bpe_simple_vocab_16e6.txt.gz`, gzipped or not): a version header
        line, then one merge per line, "a b". With the real file this is CLIP's 49408-token vocab."""
        opener = gzip.open if merges_path.endswith(".gz") else open
        with opener(merges_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1: max_merges + 1] if line.strip()]
        bad = [m for m in merges if len(m) != 2]
        if bad:
            raise ValueError(f"{merges_path}: merge lines must be two symbols separated by a space, got {bad[0]}")
        return cls(merges, context_length)

    def save(self, path: str) -> None:
        """One JSON file: the merges (the vocabulary follows from them) and the context length."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, "version": 1, "context_length": self.context_length,
                       "merges": [" ".join(m) for m in self.merges]}, f, ensure_ascii=False)

    @classmethod
    def load(cls, path: str) -> Tokenizer:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        if state.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} tokenizer file")
        return cls([tuple(m.split(" ")) for m in state["merges"]], state["context_length"])

    # --- using --------------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of the cleaned text, without the special tokens."""
        return self._hf.encode(clean(text), add_special_tokens=False).ids


    def tokens(self, text: str) -> list[str]:
        """The BPE pieces of the cleaned text, as strings of byte symbols ("hello</w>")."""
        return [self.decoder[i] for i in self.encode(text)]

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        """-> LongTensor [N, context_length]: sot, ids, eot, then zeros. A text too long keeps its
        first context_length - 2 ids, so eot is always there (last position when truncated)."""
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        if length < 2:
            raise ValueError(f"context_length {length} leaves no room for the start and end tokens")
        result = torch.zeros(len(texts), length, dtype=torch.long)
        for row, ids in enumerate(map(self.encode, texts)):
            ids = [self.sot_id] + ids[: length - 2] + [self.eot_id]
            result[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return result

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text. Stops at the first eot (what follows is padding) and drops sot."""
        ids = [int(i) for i in ids]
        if self.eot_id in ids:
            ids = ids[: ids.index(self.eot_id)]
        text = "".join(self.decoder.get(i, "") for i in ids if i != self.sot_id)
        text = bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace")
        return text.replace(SUFFIX, " ").strip()

    def __len__(self) -> int:
        return self.vocab_size
