"""`clipdata curate` with a worldwide list (a manifest, one list per language, MetaCLIP 2): each
caption identified, matched against its own language's list, balanced with its language's t."""
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipdata.pipeline import cli
from clipdata.pipeline.curate import job as curate
from clipdata.pipeline.foundation import balance

LISTS = {
    "en": ["dog", "red", "cat"],
    "de": ["Hund", "rot", "Katze"],
    "zh": ["猫", "狗", "红色"],
    "th": ["แมว", "สุนัข"],
}

# (caption, expected language, expected entries: language-local ids)
CAPTIONS = [
    ("a red dog is sleeping on the sofa in the sun", "en", [0, 1]),
    ("der rote Hund schläft auf dem Sofa in der Sonne", "de", [0]),        # "rot" is a word only in "rot"
    ("eine Katze und ein Hund spielen im Garten zusammen", "de", [0, 2]),
    ("一只红色的猫在桌子上睡觉", "zh", [0, 2]),
    ("两只狗在公园里玩耍", "zh", [1]),
    ("แมวตัวนี้นอนหลับบนโต๊ะ", "th", [0]),
    ("un chien rouge dort sur le canapé au soleil", "other", []),           # French: no list
    ("le chat dort", "other", []),
    ("12345 !!!", "other", []),                                              # nothing to identify
]


def write_world(tmp_path, captions=CAPTIONS, lists=LISTS):
    folder = tmp_path / "lists"
    os.makedirs(folder)
    for language, entries in lists.items():
        (folder / f"{language}.txt").write_text("\n".join(entries) + "\n", encoding="utf-8")
    (folder / "manifest.json").write_text(json.dumps({"languages": {lang: f"{lang}.txt" for lang in lists}}))
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"url": [f"http://x.example/{i}.jpg" for i in range(len(captions))],
                             "caption": [c for c, _, _ in captions]}), pool)
    return str(folder / "manifest.json"), str(pool)


def test_each_caption_matches_its_own_languages_list(tmp_path):
    manifest, pool = write_world(tmp_path)
    output = str(tmp_path / "out")
    assert cli.main(["curate", "--pool", pool, "--queries", manifest, "--output", output, "--matcher-cache", ""]) == 0
    curated = curate.read_curated(output).to_pylist()
    starts = dict(zip(LISTS, np.cumsum([0] + [len(v) for v in LISTS.values()])))
    expected = {c: (lang, [int(starts[lang]) + i for i in ids]) for c, lang, ids in CAPTIONS if ids}
    assert {r["caption"]: (r["language"], r["entry_ids"]) for r in curated} == expected

    stats = json.load(open(os.path.join(output, "curate_stats.json")))
    languages = stats["languages"]
    assert {k: v["captions"] for k, v in languages.items()} == {"en": 1, "de": 2, "zh": 2, "th": 1, "other": 3}
    assert {k: v["captions_matched"] for k, v in languages.items()} == {"en": 1, "de": 2, "zh": 2, "th": 1, "other": 0}
    assert {k: v["pairs_kept"] for k, v in languages.items()} == {"en": 1, "de": 2, "zh": 2, "th": 1, "other": 0}
    assert languages["en"]["t"] == 20_000
    assert stats["rows_read"] == len(CAPTIONS) and stats["dropped"]["no-match"] == 3

    counts = pq.read_table(os.path.join(output, "entry_counts.parquet")).to_pylist()
    assert [r["language"] for r in counts] == [lang for lang, v in LISTS.items() for _ in v]
    assert [r["entry"] for r in counts] == [e for v in LISTS.values() for e in v]


def test_each_language_is_balanced_with_the_t_leaving_englishs_tail_share(tmp_path):
    # English: "dog" in 400 captions, "cat" in 20; German: "Hund" in 200, "Katze" in 40
    en = [f"a photo of my dog number {i} playing outside in the park" for i in range(400)] + \
         [f"a photo of my cat number {i} sleeping inside on the sofa" for i in range(20)]
    de = [f"ein Foto von meinem Hund Nummer {i} beim Spielen im Park draußen" for i in range(200)] + \
         [f"ein Foto von meiner Katze Nummer {i} beim Schlafen auf dem Sofa" for i in range(40)]
    captions = [(c, "en", None) for c in en] + [(c, "de", None) for c in de]
    manifest, pool = write_world(tmp_path, captions, {"en": ["dog", "cat"], "de": ["Hund", "Katze"]})
    output = str(tmp_path / "out")
    assert cli.main(["curate", "--pool", pool, "--queries", manifest, "--output", output, "--matcher-cache", "",
                     "--max-per-entry", "100"]) == 0
    stats = json.load(open(os.path.join(output, "curate_stats.json")))
    # English at t=100 leaves "cat"'s 20 of 420 matches whole: share 0.048; German's running shares,
    # ascending: 40/240 = 0.167 at Katze, 1.0 at Hund: the nearest is Katze's 40
    assert balance.tail_share(np.array([400, 20]), 100) == 20 / 420
    assert stats["languages"]["en"]["t"] == 100 and stats["languages"]["de"]["t"] == 40
    counts = {r["entry"]: r for r in pq.read_table(os.path.join(output, "entry_counts.parquet")).to_pylist()}
    assert counts["cat"]["kept"] == 20 and counts["Katze"]["kept"] == 40          # tails kept whole
    assert 70 <= counts["dog"]["kept"] <= 130                                       # ~100 of 400
    assert 25 <= counts["Hund"]["kept"] <= 55                                       # ~40 of 200


def test_a_bad_manifest_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text(json.dumps({"languages": {"de": "missing.txt"}}))
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"url": ["http://x/1.jpg"], "caption": ["Hund"]}), pool)
    code = cli.main(["curate", "--pool", str(pool), "--queries", str(tmp_path / "manifest.json"),
                     "--output", str(tmp_path / "out"), "--matcher-cache", ""])
    assert code == 2
    assert "missing.txt, does not exist" in capsys.readouterr().err


def test_a_language_map_to_a_language_without_a_list_names_the_ones_there_are(tmp_path, capsys):
    manifest, pool = write_world(tmp_path)
    code = cli.main(["curate", "--pool", pool, "--queries", manifest, "--output", str(tmp_path / "out"),
                     "--matcher-cache", "", "--language-map", "wuu=xx"])
    assert code == 2
    assert "xx, which the manifest has no list for; its languages: en, de, zh, th" in capsys.readouterr().err


def test_the_same_curated_bytes_on_one_and_on_two_worker_processes(tmp_path):
    """Language identification, per-language matching and per-language t in Beam's worker
    processes give the files one process gives."""
    captions = [(c, lang, ids) for c, lang, ids in CAPTIONS] * 40   # many pieces, many partitions
    manifest, _ = write_world(tmp_path, CAPTIONS)
    pool = tmp_path / "big.parquet"
    pq.write_table(pa.table({"url": [f"http://x.example/{i}.jpg" for i in range(len(captions))],
                             "caption": [c for c, _, _ in captions]}), pool, row_group_size=40)
    outputs = []
    for workers in ("1", "2"):
        output = tmp_path / f"out{workers}"
        assert cli.main(["curate", "--pool", str(pool), "--queries", manifest, "--output", str(output),
                         "--matcher-cache", "", "--max-per-entry", "30", "--direct_num_workers", workers,
                         "--direct_running_mode", "multi_processing"]) == 0
        outputs.append(output)
    for name in sorted(os.listdir(outputs[0] / "curated")):
        assert (outputs[0] / "curated" / name).read_bytes() == (outputs[1] / "curated" / name).read_bytes(), name
    one, two = (json.load(open(o / "curate_stats.json")) for o in outputs)
    assert one["languages"] == two["languages"] and one["languages"]["de"]["pairs_kept"] > 0
    assert one["rows_read"] == len(captions) and one["dropped"]["balanced-out"] > 0   # t 30 < 40 copies
