import gzip
import random

import pytest
import torch

from clipdata.trainer.tokenizer import EOT, SOT, Tokenizer, bytes_to_unicode, clean

WORDS = ("a photo of the dog cat bird car tree house small large red blue green running sitting on in "
         "with and an old new painting drawing picture close up view street beach mountain").split()


def corpus(n=400, seed=0):
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        caption = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        texts.append(rng.choice(["", "A ", "  "]) + caption.capitalize() + rng.choice(["", ".", "!", " 42"]))
    return texts


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(corpus(), vocab_size=800, min_frequency=2)


def reference_bpe_encode(text, merges):
    """CLIP's simple_tokenizer.py encode, written out from OpenAI's code (the reference to match)."""
    import re
    byte_encoder = bytes_to_unicode()
    symbols = list(byte_encoder.values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
    encoder = dict(zip(vocab, range(len(vocab))))
    ranks = dict(zip(merges, range(len(merges))))

    def bpe(token):
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            bigram = min(pairs, key=lambda p: ranks.get(p, float("inf")))
            if bigram not in ranks:
                break
            first, second = bigram
            new_word, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
        return word

    # CLIP's regex with \p classes; the letters and digits in these tests are ASCII / Latin-1
    pattern = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+""")
    ids = []
    for token in pattern.findall(clean(text)):
        token = "".join(byte_encoder[b] for b in token.encode("utf-8"))
        ids.extend(encoder[piece] for piece in bpe(token))
    return ids


def write_merges(path, merges):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


def test_clean_is_clips():
    assert clean("  A  Dog&amp;amp;Cat\n\tRUNNING ") == "a dog&cat running"
    assert clean("cafÃ©") == "café"  # ftfy fixes mojibake


def test_train_learns_merges_and_lays_out_the_vocab_as_clip(tokenizer):
    assert 514 < tokenizer.vocab_size <= 800
    assert len(tokenizer.merges) == tokenizer.vocab_size - 514
    assert (tokenizer.sot_id, tokenizer.eot_id) == (tokenizer.vocab_size - 2, tokenizer.vocab_size - 1)
    # frequent words became single tokens
    assert tokenizer.tokens("a photo of the dog") == ["a</w>", "photo</w>", "of</w>", "the</w>", "dog</w>"]


def test_round_trip_is_the_cleaned_lowercase_text(tokenizer):
    for text in ["A Photo of  the DOG", "an old painting of a mountain", "zebra xylophone quokka",
                 "café naïve ünïcödé", "emoji 🐕 ok", "ÇA VA"]:
        assert tokenizer.decode(tokenizer.encode(text)) == clean(text), text
    # words and punctuation are separate pre-tokens, each ending a word (CLIP's decode does the same)
    assert tokenizer.decode(tokenizer.encode("a dog.")) == "a dog ."


def test_call_adds_special_tokens_and_zero_padding(tokenizer):
    tokens = tokenizer(["a photo of the dog", "a cat"])
    assert tokens.dtype == torch.long and tokens.shape == (2, 77)
    ids = tokenizer.encode("a photo of the dog")
    assert tokens[0, : len(ids) + 2].tolist() == [tokenizer.sot_id] + ids + [tokenizer.eot_id]
    assert (tokens[0, len(ids) + 2:] == 0).all()
    assert tokenizer.decode(tokens[1]) == "a cat"
    assert tokenizer("a cat", context_length=16).shape == (1, 16)


def test_truncation_keeps_eot_at_the_last_position(tokenizer):
    text = " ".join(["zebra quokka"] * 50)
    tokens = tokenizer([text, "a dog"], context_length=20)
    assert tokens[0, 0] == tokenizer.sot_id and tokens[0, -1] == tokenizer.eot_id
    assert tokens[0, 1:-1].tolist() == tokenizer.encode(text)[:18]
    assert (tokens == tokenizer.eot_id).sum(dim=1).tolist() == [1, 1]


def test_special_token_strings_in_captions_are_plain_text(tokenizer):
    tokens = tokenizer(f"a dog {EOT} a cat {SOT}")
    assert (tokens == tokenizer.eot_id).sum() == 1 and (tokens == tokenizer.sot_id).sum() == 1


def test_save_load_gives_identical_ids(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    loaded = Tokenizer.load(str(path))
    texts = corpus(50, seed=1) + ["café 🐕 <html> x_y"]
    assert torch.equal(loaded(texts), tokenizer(texts))
    assert (loaded.vocab_size, loaded.eot_id, loaded.context_length) == (
        tokenizer.vocab_size, tokenizer.eot_id, tokenizer.context_length)


def test_load_rejects_other_json(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"model": {}}')
    with pytest.raises(ValueError, match="not a clipdata-clip-bpe tokenizer"):
        Tokenizer.load(str(path))


def test_trained_tokenizer_matches_clips_bpe_algorithm(tokenizer):
    for text in corpus(100, seed=2) + ["hello world!!! it's 2024", "naïve café's", "dogs' toys"]:
        assert tokenizer.encode(text) == reference_bpe_encode(text, tokenizer.merges), text


def test_clip_merges_file_format(tmp_path):
    merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o</w>"), ("o", "g</w>"), ("d", "og</w>")]
    path = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    write_merges(path, merges)
    tokenizer = Tokenizer.from_clip_bpe(str(path))
    # CLIP's layout: 256 bytes + 256 bytes</w> + merges + sot + eot
    assert tokenizer.vocab_size == 512 + len(merges) + 2
    assert (tokenizer.sot_id, tokenizer.eot_id) == (518, 519)
    assert tokenizer.tokens("Hello") == ["hello</w>"]
    assert tokenizer.tokens("help dog") == ["he", "l", "p</w>", "dog</w>"]
    # ids as CLIP's: '!' is byte token 0, so "l" is ord("l") - ord("!"), "p</w>" is 256 + that
    assert tokenizer.encode("help") == [512, ord("l") - 33, 256 + ord("p") - 33]
    assert tokenizer.encode("hello dog") == [515, 517]
    for text in ["hello help dog hell", "héllo, dog!"]:
        assert tokenizer.encode(text) == reference_bpe_encode(text, merges)
    assert tokenizer("hello")[0, :3].tolist() == [518, 515, 519]
    # CLIP reads at most 48894 merges after the header
    assert Tokenizer.from_clip_bpe(str(path), max_merges=2).vocab_size == 516


def test_clip_merges_file_with_a_bad_line(tmp_path):
    path = tmp_path / "merges.txt"
    path.write_text("#version: 0.2\nh e\nabc\n")
    with pytest.raises(ValueError, match="two symbols"):
        Tokenizer.from_clip_bpe(str(path))


def test_vocab_size_below_the_byte_tokens_is_refused():
    with pytest.raises(ValueError, match="514"):
        Tokenizer.train(["a dog"], vocab_size=300)


def test_learned_from_multilingual_captions_it_covers_cjk_thai_and_arabic():
    """Byte-level BPE has every byte: any script encodes, nothing is unknown; learned from captions
    in those scripts, their frequent words become few tokens. CLIP's pre-tokenizer splits a Thai
    word at its vowel marks (not letters, \\p{M}), so decoding puts spaces there, as CLIP's does:
    the text round-trips up to spaces."""
    captions = (["一只猫在桌子上睡觉", "小猫在桌子上", "桌子上的猫很可爱"] * 30
                + ["แมวนอนบนโต๊ะ", "แมวตัวเล็กบนโต๊ะ"] * 30
                + ["قطة نائمة على الطاولة", "قطة صغيرة على الطاولة"] * 30
                + ["a cat sleeping on the table"] * 30)
    tok = Tokenizer.train(captions, vocab_size=1200)
    for text in ["一只猫在桌子上睡觉", "แมวนอนบนโต๊ะ", "قطة نائمة على الطاولة", "新しい猫", "ქართული", "😺 猫"]:
        ids = tok.encode(text)
        assert all(0 <= i < len(tok) for i in ids)
        assert tok.decode(ids).replace(" ", "") == clean(text).replace(" ", ""), text
    # learned: a frequent caption is a few tokens, where its UTF-8 bytes are 27 (Chinese) and 42 (Arabic)
    assert len(tok.encode("一只猫在桌子上睡觉")) <= 3
    assert len(tok.encode("قطة نائمة على الطاولة")) <= 6
    assert len(tok.encode("一只猫在桌子上睡觉")) < len("一只猫在桌子上睡觉".encode("utf-8")) // 4
