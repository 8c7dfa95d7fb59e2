"""The contamination report of `clipdata dedup`: one HTML page for people, JSON for machines.

Written into `--output DIR`:

    report.html     self-contained (inline CSS, matplotlib charts and thumbnails as data URLs, no
                    script, nothing fetched): first what to take away (per test set, how many of its
                    images have a copy in the training data; training keys blocklisted), then per
                    test set its size, unreadable images, overlap count and share,
                    a bar chart of overlap per test set, the histogram of each test image's
                    nearest training-hash distance, every matched pair as test image beside its
                    training twin (thumbnails for the first THUMBS_PER_SET), the candidates the
                    pixel check rejected, unreadable shards; and All / Clean / Overlap accuracy
                    with CLIP's binomial test when predictions were given
    report.json     the same numbers, every matched pair and the first LIST_CAP rejected
                    candidates per test set (no thumbnails)
    pairs.csv       every candidate pair, verdict first (duplicate / rejected), with what
                    decided it (`stage`: screen on the stored thumbnail, pixels, hash) and why
                    in words (`reason`)
    blocklist.txt   the training keys of the matched pairs: sorted, one per line

Every string from a shard or a test set (captions and URLs are web text) is HTML-escaped, and URLs
are shown as text, never as links.
"""
from __future__ import annotations

import csv
import datetime
import html
import io
import json

from apache_beam.io.filesystems import FileSystems

from clipdata.dedup import significance
from clipdata.dedup.search import CROP_ALIKE, WINDOW_NEAR, window_similar
from clipdata.pipeline.foundation.storage import atomic_write
from clipdata.pipeline.foundation import plots
from clipdata.pipeline.foundation.words import count, percent

THUMBS_PER_SET = 200
STAGE_WORDS = {"screen": "the stored thumbnail", "pixels": "the pixels", "hash": "the hash alone",
               "error": "nothing (an error)"}
LIST_CAP = 1000          # unreadable images / rejected pairs listed per test set in report.json
HTML_LIST_CAP = 200      # rows of a table in the HTML page
PAIR_FIELDS = ("verdict", "test_set", "test_id", "label", "key", "shard", "url", "caption", "distance",
               "view", "similarity", "stage", "reason", "score", "method", "detail")


# ---------------------------------------------------------------------------------------------
# The numbers


def build_report(result, predictions: dict[str, dict[str, bool]] | None = None) -> dict:
    """report.json's content from an overlap.OverlapResult; predictions: test set -> {id: correct}."""
    predictions = predictions or {}
    config = result.config
    labels = {(h.test_set.name, image.id): image.label for h in result.hashed for image in h.test_set.images}
    pairs = [_public(p, labels) for p in result.pairs]
    test_sets = []
    first = 0   # global number of the test set's first image (search.flatten numbers them in order)
    for h in result.hashed:
        ts = h.test_set
        matches = [p for p in pairs if p["test_set"] == ts.name and p["verdict"] == "duplicate"]
        rejected = [p for p in pairs if p["test_set"] == ts.name and p["verdict"] == "rejected"]
        overlap_ids = sorted({p["test_id"] for p in matches})
        histogram, none = [0] * 65, 0
        for i, views in enumerate(h.views):
            if not views:
                continue  # unreadable: no distance
            d = int(result.nearest[first + i])
            if d > 64:
                none += 1
            else:
                histogram[d] += 1
        first += len(h.views)
        entry = {
            "name": ts.name,
            "path": ts.path,
            "format": ts.format,
            "size": ts.size,
            "readable": h.readable,
            "unreadable": len(ts.unreadable),
            "unreadable_images": ts.unreadable[:LIST_CAP],
            "file_errors": ts.file_errors,
            "overlap": len(overlap_ids),
            "overlap_percent": round(100 * len(overlap_ids) / ts.size, 3) if ts.size else 0.0,
            "matched_pairs": len(matches),
            "rejected_pairs": len(rejected),
            "rejected_listed": min(len(rejected), LIST_CAP),
            "nearest_distance_histogram": histogram,
            "nearest_distance_none": none,
            "overlap_ids": overlap_ids,
            "matches": matches,
            "rejected": rejected[:LIST_CAP],
        }
        if ts.name in predictions:
            split = significance.split_accuracy(predictions[ts.name], overlap_ids,
                                                test_ids=[image.id for image in ts.images])
            entry["accuracy"] = split.to_dict()
        test_sets.append(entry)
    blocklist = sorted({p["key"] for p in pairs if p["verdict"] == "duplicate"})
    counters = result.counters
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "options": {
            "shards": list(config.shards), "radius": result.radius, "views": result.views,
            "verify": config.verify, "index": config.index, "embeddings": config.embeddings,
            "semantic_threshold": config.semantic_threshold if config.embeddings else None,
            "descriptor": config.descriptor, "similar": result.similar,
            "per_image": config.per_image if config.descriptor else None,
            # a match on a crop window: this cosine, or pHashes within window_near bits (search.py)
            "window_similar": round(window_similar(result.similar), 4) if result.similar is not None else None,
            "window_near": WINDOW_NEAR if result.similar is not None else None,
            "crop_alike": CROP_ALIKE if result.similar is not None else None,
        },
        "training": {
            "shards": result.shards,
            "shards_with_errors": len({e["shard"] for e in result.shard_errors}),
            "train_hashes": counters.get("train_hashes", 0),
            "train_hashed_from_tar": counters.get("train_hashed_from_tar", 0),
            "train_images_unreadable": counters.get("train_images_unreadable", 0),
            "candidates": counters.get("candidates", 0),
            # the copy descriptor: training images it described, its window matches the pHash left out
            "train_described": counters.get("train_described", 0),
            "descriptor_matches_hash_far": counters.get("descriptor_matches_hash_far", 0),
            "descriptor_matches_window_weak": counters.get("descriptor_matches_window_weak", 0),
            "candidates_beyond_cap": counters.get("candidates_beyond_cap", 0),
            # what decided the candidates: the stored thumbnails (no tar opened) or the pixels
            "screened_out": counters.get("pairs_screened_out", 0),
            "checked_on_pixels": counters.get("pairs_checked_on_pixels", 0),
            "thumbnails_from_tar": counters.get("thumbnails_from_tar", 0),
        },
        "shard_errors": result.shard_errors,
        "test_sets": test_sets,
        "blocklist": {"file": "blocklist.txt", "keys": len(blocklist)},
        "seconds": round(result.seconds, 2),
        "caveats": list(significance.CAVEATS) if predictions else [],
        "_blocklist": blocklist,
        "_pairs": pairs,
    }


def _public(pair: dict, labels: dict) -> dict:
    out = {name: pair.get(name) for name in PAIR_FIELDS if name not in ("verdict", "label")}
    out["verdict"] = "duplicate" if pair.get("verified") else "rejected"
    out["label"] = labels.get((pair["test_set"], pair["test_id"]))
    if pair.get("cosine") is not None:
        out["cosine"] = pair["cosine"]
    return {name: out.get(name) for name in (*PAIR_FIELDS, "cosine") if name in out}


# ---------------------------------------------------------------------------------------------
# Writing


def write_report(result, output: str, predictions: dict[str, dict[str, bool]] | None = None) -> dict:
    """Write report.html, report.json, pairs.csv and blocklist.txt; returns report.json's content."""
    report = build_report(result, predictions)
    blocklist = report.pop("_blocklist")
    pairs = report.pop("_pairs")
    thumbs = {(p["test_set"], p["test_id"], p["shard"], p["key"]): (p.get("test_thumb"), p.get("train_thumb"))
              for p in result.pairs}
    if not FileSystems.exists(output):
        FileSystems.mkdirs(output)
    _write(FileSystems.join(output, "report.json"), json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    _write(FileSystems.join(output, "pairs.csv"), pairs_csv(pairs))
    _write(FileSystems.join(output, "blocklist.txt"), "".join(k + "\n" for k in blocklist))
    _write(FileSystems.join(output, "report.html"), render_html(report, thumbs))
    return report


def _write(path: str, text: str) -> None:
    atomic_write(path, text.encode("utf-8"))


def pairs_csv(pairs: list[dict]) -> str:
    """Every candidate pair (build_report's public form), matched ones first."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=PAIR_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for pair in sorted(pairs, key=lambda p: p["verdict"] != "duplicate"):
        writer.writerow({k: "" if pair.get(k) is None else pair[k] for k in PAIR_FIELDS})
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# HTML


def e(value) -> str:
    """Escape anything for HTML text and attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;padding:0 24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.pair img{width:96px;height:auto;border:1px solid #ccc;background:#fff}
.small{color:#666;font-size:12px}.cap{min-width:120px;max-width:300px;overflow-wrap:break-word}.check{min-width:200px}.id{max-width:170px;overflow-wrap:anywhere}
.url{max-width:160px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;font-size:12px;color:#555}
img.plot{display:block;max-width:100%;height:auto;margin:8px 0}
.takeaway{background:#fdf0ec;border:1px solid #e8c1b3;border-radius:6px;padding:8px 16px;margin:12px 0}
.takeaway ul{margin:4px 0;padding-left:20px}
.scroll{overflow-x:auto}.note{background:#fff8e1;border:1px solid #f0d890;padding:6px 10px}.err{color:#a00}
"""


def render_html(report: dict, thumbs: dict) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>clipdata dedup: contamination report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Contamination report</h1>",
        _takeaway_html(report),
        _options_html(report),
        _summary_html(report),
        _overlap_chart(report["test_sets"]),
    ]
    if any("accuracy" in ts for ts in report["test_sets"]):
        parts.append(_accuracy_html(report))
    for ts in report["test_sets"]:
        parts.append(_test_set_html(ts, report["options"]["radius"], thumbs, report["options"].get("similar")))
    parts.append(_shard_errors_html(report["shard_errors"]))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _descriptor_words(o: dict, t: dict) -> str:
    if not o.get("descriptor") or o.get("similar") is None:
        return ""
    window = (f"{t.get('descriptor_matches_window_weak', 0):,} more on a crop window under cosine "
              f"{o['window_similar']:.2f} with pHashes more than {o['window_near']} bits apart; "
              if o.get("window_similar") is not None else "")   # a report made before the window rule
    crop_rule = o.get("crop_alike") is not None   # not in a report made before the crop rule
    crop = f" under cosine {o['crop_alike']:.2f}" if crop_rule else ""
    kinds = ", those found on the descriptor alone last" if crop_rule else ""
    return (f" and the copy descriptor at cosine &ge; {o['similar']:.2f} ({t.get('train_described', 0):,} training "
            f"images described; {t.get('descriptor_matches_hash_far', 0):,} matches on a crop window{crop} left out: "
            f"their pHashes differ by more than the radius; "
            f"{window}at most {o.get('per_image')} candidates per training image{kinds}, {t.get('candidates_beyond_cap', 0):,} "
            f"less alike ones left out)")


def _options_html(report: dict) -> str:
    o, t = report["options"], report["training"]
    verify = (f"{t.get('screened_out', 0):,} rejected on the thumbnails the download stored, "
              f"{t.get('checked_on_pixels', 0):,} checked on the training image's pixels") if o["verify"] else \
        "hash only (--no-verify): every candidate within the radius counts as a duplicate"
    semantic = f"; embeddings {e(o['embeddings'])} at cosine &ge; {e(o['semantic_threshold'])}" if o["embeddings"] else ""
    return (
        f'<p class="small">created {e(report["created"])} &middot; shards {e(" ".join(o["shards"]))}</p>'
        f"<p>{count(t['shards'], 'training shard')}, {count(t['train_hashes'], 'training image')} "
        f"({t['train_hashed_from_tar']:,} hashed from the tars), {t['train_images_unreadable']:,} unreadable; "
        f"{count(t['shards_with_errors'], 'shard')} with errors. Search: pHash of {_views_words(o['views'])} "
        f"within {o['radius']} bits ({e(o['index'])} index){_descriptor_words(o, t)}, "
        f"{t['candidates']:,} candidates; {e(verify)}"
        f"{semantic}.</p>"
    )


def _views_words(views: list[str]) -> str:
    """The test-side views searched, short: the first few by name (report.json lists them all)."""
    shown = ", ".join(views[:4])
    more = f" and {len(views) - 4} more crops and borders (report.json lists them)" if len(views) > 4 else ""
    return e(f"{count(len(views), 'view')} of each test image ({shown}{more})")


def _summary_html(report: dict) -> str:
    rows = ["<table><tr><th>test set</th><th>images</th><th>unreadable</th><th>overlap</th>"
            "<th>overlap %</th><th>matched pairs</th><th>rejected candidates</th></tr>"]
    for ts in report["test_sets"]:
        rows.append(
            f'<tr><td><a href="#set-{e(ts["name"])}">{e(ts["name"])}</a></td><td class="n">{ts["size"]:,}</td>'
            f'<td class="n">{ts["unreadable"]:,}</td><td class="n">{ts["overlap"]:,}</td>'
            f'<td class="n">{percent(ts["overlap"] / ts["size"]) if ts["size"] else "n/a"}</td><td class="n">{ts["matched_pairs"]:,}</td>'
            f'<td class="n">{ts["rejected_pairs"]:,}</td></tr>')
    rows.append("</table>")
    rows.append(f'<p class="small">blocklist.txt: {report["blocklist"]["keys"]:,} training keys to drop '
                "(<code>clipdata dedup apply-blocklist</code>).</p>")
    return "\n".join(rows)


def _takeaway_html(report: dict) -> str:
    """The first lines a reader sees: per test set, how many of its images are in the training data."""
    lines = []
    for ts in report["test_sets"]:
        share = percent(ts["overlap"] / ts["size"]) if ts["size"] else "n/a"
        lines.append(f"{ts['name']}: {ts['overlap']:,} of {count(ts['size'], 'test image')} ({share}) "
                     f"{'has' if ts['overlap'] == 1 else 'have'} a near-duplicate in the training data")
    keys = report["blocklist"]["keys"]
    lines.append(f"{count(keys, 'training image')} to remove: blocklist.txt "
                 "(clipdata dedup apply-blocklist writes shards without them)")
    return ('<div class="takeaway"><b>What to take away</b><ul>'
            + "".join(f"<li>{e(line)}</li>" for line in lines) + "</ul></div>")


def _overlap_chart(test_sets: list[dict]) -> str:
    """Horizontal bars: the share of each test set with a copy in the training data."""
    if not test_sets:
        return ""
    shares = [100 * ts["overlap"] / ts["size"] if ts["size"] else 0.0 for ts in test_sets]
    names = [ts["name"] for ts in test_sets]
    chart = plots.horizontal_bars(
        "Test images with a near-duplicate in the training data", names, [("overlap", shares, plots.RED)],
        xlabel="share of the test set (%)", integer=False,
        value_text=lambda v: percent(v / 100))
    return "<h2>Overlap per test set</h2>" + chart


def _histogram_chart(ts: dict, radius: int) -> str:
    """How many test images have their nearest training hash at each distance (the search looks
    within the radius only: no image has a bar beyond it)."""
    return plots.histogram(
        f"{ts['name']}: nearest training pHash per test image", ts["nearest_distance_histogram"],
        xlabel="Hamming distance to the nearest training pHash (bits, of 64)", ylabel="test images",
        cutoff=radius, cutoff_label=f"search radius ({radius} bits)")


def _pair_rows(pairs: list[dict], thumbs: dict, with_thumbs: int) -> list[str]:
    rows = ['<div class="scroll"><table><tr><th>test image</th><th>training image</th><th>test id / label</th>'
            "<th>training key / shard</th><th>caption</th><th>url</th><th>distance</th>"
            "<th>check</th></tr>"]
    for i, p in enumerate(pairs[:HTML_LIST_CAP]):
        test_thumb, train_thumb = thumbs.get((p["test_set"], p["test_id"], p["shard"], p["key"]), (None, None))
        cells = []
        for side, thumb in (("test", test_thumb), ("training", train_thumb)):
            ok = i < with_thumbs and isinstance(thumb, str) and thumb.startswith("data:image/jpeg;base64,")
            cells.append(f'<td class="pair"><img alt="{side} image" src="{e(thumb)}"></td>' if ok else "<td>&ndash;</td>")
        distance = e(p["view"]) if p["distance"] is None else f"{p['distance']} bits ({e(p['view'])})"
        if p.get("similarity") is not None:
            distance += f"<br><span class=small>descriptor cosine {p['similarity']:.2f}</span>"
        # The score and the measures behind the words stay in the tooltip (and in pairs.csv).
        tip = "; ".join(x for x in ("" if p.get("score") is None else f"score {p['score']}", p.get("detail") or "") if x)
        rows.append(
            f"<tr>{cells[0]}{cells[1]}<td class=id>{e(p['test_id'])}<br><span class=small>{e(p.get('label'))}</span></td>"
            f"<td>{e(p['key'])}<br><span class=small>{e(p['shard'])}</span></td>"
            f'<td class="cap">{e(p.get("caption"))}</td><td><div class="url" title="{e(p.get("url"))}">{e(p.get("url"))}</div></td>'
            f'<td>{distance}</td><td class="check">{e(p.get("reason"))}<br><span class=small title="{e(tip)}">'
            f"decided by {e(STAGE_WORDS.get(p.get('stage'), p.get('stage')))}</span></td></tr>")
    rows.append("</table></div>")
    if len(pairs) > HTML_LIST_CAP:
        rows.append(f'<p class="note">{len(pairs) - HTML_LIST_CAP:,} more pairs are not shown here; '
                    "pairs.csv holds them all.</p>")
    return rows


def _test_set_html(ts: dict, radius: int, thumbs: dict, similar: float | None = None) -> str:
    # with the copy descriptor the pHash is checked on the pairs it proposes only, not scanned
    among = "" if similar is None else (f" among the training images the copy descriptor found alike "
                                        f"(cosine &ge; {similar:.2f})")
    out = [f'<h2 id="set-{e(ts["name"])}">{e(ts["name"])}</h2>',
           f'<p>{e(ts["path"])} ({e(ts["format"])}): {count(ts["size"], "image")}, {ts["unreadable"]:,} unreadable; '
           f'<b>{ts["overlap"]:,} ({percent(ts["overlap"] / ts["size"]) if ts["size"] else "n/a"})</b> have a near duplicate in the training '
           f'data ({count(ts["matched_pairs"], "pair")}).</p>',
           "<h3>Nearest training hash per test image</h3>",
           f'<p class="small">Hamming distance from each readable test image (its closest view) to the nearest '
           f'training pHash within the search radius ({radius} bits){among}; '
           f'{ts["nearest_distance_none"]:,} images have none that close.</p>',
           _histogram_chart(ts, radius) if any(ts["nearest_distance_histogram"]) else
           '<p class="note">No test image of this set has a training image that close: nothing to chart.</p>',
           f"<h3>Matched pairs ({ts['matched_pairs']:,})</h3>"]
    if ts["matches"]:
        out += _pair_rows(ts["matches"], thumbs, THUMBS_PER_SET)
        if len(ts["matches"]) > THUMBS_PER_SET:
            out.append(f'<p class="note">Thumbnails are shown for the first {THUMBS_PER_SET} pairs only.</p>')
    else:
        out.append("<p>None.</p>")
    out.append(f"<h3>Candidates rejected ({ts['rejected_pairs']:,})</h3>")
    if ts["rejected_pairs"] > ts["rejected_listed"]:
        out.append(f'<p class="note">report.json lists the first {ts["rejected_listed"]:,} of them; '
                   "pairs.csv holds every one.</p>")
    if ts["rejected"]:
        out += _pair_rows(ts["rejected"], thumbs, THUMBS_PER_SET)
    else:
        out.append("<p>None.</p>")
    if ts["unreadable_images"] or ts["file_errors"]:
        out.append(f"<h3>Unreadable ({count(ts['unreadable'], 'image')}, {count(len(ts['file_errors']), 'file')})</h3><ul>")
        for f in ts["file_errors"]:
            out.append(f'<li class="err">{e(f["file"])}: {e(f["error"])}</li>')
        for u in ts["unreadable_images"][:HTML_LIST_CAP]:
            out.append(f'<li class="err">{e(u["id"])}: {e(u["error"])}</li>')
        out.append("</ul>")
    return "\n".join(out)


def _accuracy_html(report: dict) -> str:
    def pct(x):
        return "n/a" if x is None else percent(x)

    rows = ["<h2>Accuracy: All / Clean / Overlap</h2>",
            "<table><tr><th>test set</th><th>All</th><th>Clean</th><th>Overlap</th><th>n overlap</th>"
            "<th>All &minus; Clean</th><th>p (binomial, one-sided)</th><th>missing / unknown ids</th></tr>"]
    for ts in report["test_sets"]:
        a = ts.get("accuracy")
        if not a:
            continue
        delta = "n/a" if a["delta"] is None else f"{100 * a['delta']:+.2f} pts"
        p = "n/a" if a["p_value"] is None else f"{a['p_value']:.3g}"
        rows.append(f"<tr><td>{e(ts['name'])}</td><td class=n>{pct(a['accuracy_all'])}</td>"
                    f"<td class=n>{pct(a['accuracy_clean'])}</td><td class=n>{pct(a['accuracy_overlap'])}</td>"
                    f"<td class=n>{a['n_overlap']:,}</td><td class=n>{delta}</td><td class=n>{p}</td>"
                    f"<td class=n>{a['missing_count']:,} / {a['unknown_count']:,}</td></tr>")
    rows.append("</table>")
    rows.append("<p class=small>p: the probability of at least the observed number of correct Overlap examples "
                "if each were correct with the Clean accuracy (CLIP §5).</p><ul class=small>")
    rows += [f"<li>{e(c)}</li>" for c in report["caveats"]]
    rows.append("</ul>")
    return "\n".join(rows)


def _shard_errors_html(errors: list[dict]) -> str:
    if not errors:
        return "<h2>Shard errors</h2><p>None: every shard was read.</p>"
    out = [f"<h2>Shard errors ({count(len({x['shard'] for x in errors}), 'shard')})</h2><table>"
           "<tr><th>shard</th><th>stage</th><th>error</th></tr>"]
    for x in errors[:HTML_LIST_CAP]:
        out.append(f"<tr><td>{e(x['shard'])}</td><td>{e(x['stage'])}</td>"
                   f"<td class=err>{'<br>'.join(e(m) for m in x['errors'])}</td></tr>")
    out.append("</table>")
    if len(errors) > HTML_LIST_CAP:
        out.append(f'<p class="note">{len(errors) - HTML_LIST_CAP:,} more in report.json.</p>')
    return "\n".join(out)


def summary_table(report: dict, output: str) -> str:
    """The lines `clipdata dedup` prints at the end."""
    lines = [f"{'test set':<20}{'images':>10}{'unreadable':>12}{'overlap':>10}{'%':>9}"]
    for ts in report["test_sets"]:
        line = (f"{ts['name']:<20}{ts['size']:>10,}{ts['unreadable']:>12,}{ts['overlap']:>10,}"
                f"{percent(ts['overlap'] / ts['size']) if ts['size'] else 'n/a':>9}")
        if "accuracy" in ts:
            line += "  " + significance.describe(significance.SplitAccuracy(
                **{k: v for k, v in ts["accuracy"].items() if k not in ("missing_count", "unknown_count")}))
        lines.append(line)
    t = report["training"]
    lines.append(f"{count(t['shards'], 'shard')}, {count(t['train_hashes'], 'training image')}, "
                 f"{count(t['candidates'], 'candidate')}; {count(t['shards_with_errors'], 'shard')} with errors")
    if report["options"]["verify"]:
        duplicates = sum(ts["matched_pairs"] for ts in report["test_sets"])
        made = f" (thumbnails of {t['thumbnails_from_tar']:,} made from the tars)" if t["thumbnails_from_tar"] else ""
        lines.append(f"candidates decided: {t['screened_out']:,} rejected on the stored thumbnails{made}, "
                     f"{t['checked_on_pixels']:,} checked on the pixels, {count(duplicates, 'duplicate pair')}")
    lines.append(f"report: {FileSystems.join(output, 'report.html')} (and report.json, pairs.csv, "
                 f"blocklist.txt: {report['blocklist']['keys']:,} keys)")
    return "\n".join(lines)
