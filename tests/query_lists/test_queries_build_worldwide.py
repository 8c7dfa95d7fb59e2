"""`clipdata queries build --lang`: a language's list by MetaCLIP 2's recipe from a generated dump in
real MediaWiki format with the wiki's own namespace names, pageviews and Open Multilingual Wordnet
files; the counts checked against a plain count of the same text; then curate with the manifest."""
import json
import math
import os
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from clipdata.pipeline import cli
from clipdata.pipeline.curate import job as curate
from clipdata.query_lists import entries, synthetic

DE_NAMESPACES = [(-2, "Medium"), (-1, "Spezial"), (0, ""), (1, "Diskussion"), (6, "Datei"), (14, "Kategorie")]
# 12 distinct words in the prose; the links to Datei: and Kategorie: must add none of theirs.
DE_PAGES = [
    dict(title="Hund", ns=0, page_id=1, redirect=False,
         text="Der Hund bellt laut. Der Hund schläft.[[Datei:Hund.jpg|mini|Ein Foto]]\n[[Kategorie:Tiere]]"),
    dict(title="Katze", ns=0, page_id=2, redirect=False, text="Die Katze schläft. Der [[Hund]] bellt nie laut."),
    dict(title="Fuchs", ns=0, page_id=3, redirect=False, text="Ein roter Fuchs jagt eine kleine Maus."),
    dict(title="Weiterleitung", ns=0, page_id=4, redirect=True, text="#WEITERLEITUNG [[Hund]]"),
    dict(title="Diskussion:Hund", ns=1, page_id=5, redirect=False, text="Hund Hund Hund Hund"),
]
DE_PROSE = ["Der Hund bellt laut", "Der Hund schläft", "Die Katze schläft", "Der Hund bellt nie laut",
            "Ein roter Fuchs jagt eine kleine Maus"]

ZH_PAGES = [
    dict(title="猫", ns=0, page_id=1, redirect=False, text="猫在桌子上。小猫喜欢桌子。"),
    dict(title="狗", ns=0, page_id=2, redirect=False, text="狗在公园里。[[分类:动物]]"),
]
ZH_NAMESPACES = [(0, ""), (6, "File"), (14, "分类")]


def write_sources(tmp_path):
    de = str(tmp_path / "dewiki-pages-articles-multistream.xml.bz2")
    de_index = synthetic.write_dump(de, DE_PAGES, multistream=True, pages_per_stream=2, dbname="dewiki",
                                    namespaces=DE_NAMESPACES, lang="de")
    zh = str(tmp_path / "zhwiki-pages-articles.xml.bz2")
    synthetic.write_dump(zh, ZH_PAGES, dbname="zhwiki", namespaces=ZH_NAMESPACES, lang="zh")
    synthetic.write_pageviews(str(tmp_path / "pageviews-20240101-000000.gz"), [
        ("de", "Hund", 900), ("de", "Katze", 300), ("de", "Fuchs", 100), ("de", "Maus", 60),
        ("de", "Diskussion:Hund", 5000), ("en", "Dog", 10_000), ("zh", "猫", 500)])
    omw = tmp_path / "omw"
    (omw / "deu").mkdir(parents=True)   # no OMW file maps to de: said, not a crash
    (omw / "cmn").mkdir()
    (omw / "cmn" / "wn-data-cmn.tab").write_text("# cmn\n02121620-n\tcmn:lemma\t猫\n02084071-n\tcmn:lemma\t家_犬\n",
                                                  encoding="utf-8")
    return de, de_index, zh, str(omw)


def test_a_language_list_by_metaclip2s_recipe(tmp_path, capsys):
    de, de_index, zh, omw = write_sources(tmp_path)
    lists = str(tmp_path / "lists")
    views = str(tmp_path / "pageviews-*.gz")
    assert cli.main(["queries", "build", "--lang", "de", "--output", lists, "--wikipedia", de,
                     "--wikipedia-index", de_index, "--pageviews", views, "--wordnet", omw,
                     "--min-pmi", "3", "--min-line-views", "1"]) == 0
    out = capsys.readouterr().out
    assert "no Open Multilingual Wordnet file for this language" in out

    # the plain count of the same prose: Datei/Kategorie links, the redirect and the talk page add nothing
    words = Counter(w for line in DE_PROSE for w in line.split())
    assert len(words) == 15
    sidecar = json.load(open(os.path.join(lists, "de", "queries.json")))
    assert sidecar["caps"]["unigrams"] == {"distinct": 15, "cap": 1, "at_least_min_count": 15}
    assert "kategorie:" in sidecar["link_prefixes"] and "datei:" in sidecar["link_prefixes"]
    got = entries.load_entries(os.path.join(lists, "de", "queries.txt"))
    digits = [str(i) for i in range(100)]
    assert got[:100] == digits
    top_word = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]     # "Der" and "Hund": 3 each
    assert got[100] == top_word == "Der"
    # bigrams with PMI over 3 bits, N = 24 words: log2(n(ab) N / (n(a) n(b)))
    n = sum(words.values())
    pairs = Counter(p for line in DE_PROSE for p in zip(line.split(), line.split()[1:]))
    pmi = {f"{a} {b}": math.log2(c * n / (words[a] * words[b])) for (a, b), c in pairs.items()}
    expected_bigrams = [b for b, v in sorted(pmi.items(), key=lambda kv: (-kv[1], -pairs[tuple(kv[0].split())], kv[0]))
                        if v > 3]
    titles = ["Hund", "Katze", "Fuchs"]     # 76% of the 4 de titles with views: 3, by views
    assert got[101:] == [b for b in expected_bigrams if b != top_word] + titles

    manifest = json.load(open(os.path.join(lists, "manifest.json")))
    assert manifest == {"languages": {"de": "de/queries.txt"}}


def test_a_no_space_language_and_the_manifest_then_curate(tmp_path, capsys):
    de, de_index, zh, omw = write_sources(tmp_path)
    lists = str(tmp_path / "lists")
    assert cli.main(["queries", "build", "--lang", "zh", "--output", lists, "--wikipedia", zh,
                     "--pageviews", str(tmp_path / "pageviews-*.gz"), "--wordnet", omw, "--min-pmi", "2",
                     "--min-line-views", "1"]) == 0
    got = entries.load_entries(os.path.join(lists, "zh", "queries.txt"))
    # the plain count: every character a word, "。" a separator, the 分类 link not prose
    runs = [run for text in ("猫在桌子上。小猫喜欢桌子。", "狗在公园里。") for run in text.split("。") if run]
    chars = Counter(c for run in runs for c in run)
    n = sum(chars.values())
    pairs = Counter((a, b) for run in runs for a, b in zip(run, run[1:]))
    pmi = {a + b: math.log2(k * n / (chars[a] * chars[b])) for (a, b), k in pairs.items()}
    top_chars = sorted(chars, key=lambda c: (-chars[c], c))[: int(len(chars) * 0.1)]
    bigrams = [b for b in sorted(pmi, key=lambda b: (-pmi[b], -pairs[(b[0], b[1])], b)) if pmi[b] > 2]
    sidecar = json.load(open(os.path.join(lists, "zh", "queries.json")))
    assert sidecar["caps"]["unigrams"]["distinct"] == len(chars) == 12
    # WordNet first ("家_犬" -> "家 犬"), then the top 10% of the characters, then character
    # bigrams joined without a space (1 title with views: 76% of it is none)
    assert got[100:] == ["猫", "家 犬"] + top_chars + [b for b in bigrams if b not in ("猫",) + tuple(top_chars)]
    assert "桌子" in got and "桌 子" not in got
    assert "分" not in got and "类" not in got                # the 分类: link is dropped by the wiki's name
    (tmp_path / "en.txt").write_text("cat\n")
    manifest_path = os.path.join(lists, "manifest.json")
    # English joins the manifest first (as --lang en would add it)
    manifest = json.load(open(manifest_path))
    manifest["languages"] = {"en": "../en.txt", **manifest["languages"]}
    open(manifest_path, "w").write(json.dumps(manifest))

    pq.write_table(pa.table({"url": ["http://x/1.jpg", "http://x/2.jpg"],
                             "caption": ["一只猫在桌子上睡觉", "a cat sleeping on a table"]}), str(tmp_path / "pool.parquet"))
    assert cli.main(["curate", "--pool", str(tmp_path / "pool.parquet"), "--queries", manifest_path,
                     "--output", str(tmp_path / "curated"), "--matcher-cache", ""]) == 0
    rows = {r["caption"]: r["language"] for r in curate.read_curated(str(tmp_path / "curated")).to_pylist()}
    assert rows == {"一只猫在桌子上睡觉": "zh", "a cat sleeping on a table": "en"}


def test_a_dump_of_another_wiki_than_lang_is_refused(tmp_path, capsys):
    de, de_index, zh, omw = write_sources(tmp_path)
    assert cli.main(["queries", "build", "--lang", "fr", "--output", str(tmp_path / "l"), "--wikipedia", de,
                     "--sources", "digits,unigrams"]) == 2
    assert "is a dump of dewiki" in capsys.readouterr().err
    assert cli.main(["queries", "build", "--lang", "Deutsch", "--output", str(tmp_path / "l"), "--wikipedia", de]) == 2
