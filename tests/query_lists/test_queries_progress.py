"""What `clipdata queries build` shows while it runs: the workers' notes summed by the driver."""
import io

from clipdata.query_lists import progress


def test_the_watcher_sums_the_notes_of_every_work_item(tmp_path, monkeypatch):
    folder = str(tmp_path)
    watcher = progress.BuildWatcher(folder, dump_bytes=4_000_000, view_files=3, stream=io.StringIO())
    first = progress.work_note(folder, "dump", "/data/enwiki.xml.bz2", 0)
    second = progress.work_note(folder, "dump", "/data/enwiki.xml.bz2", 2_000_000)
    first.update(bytes=1_000_000, articles=10)          # written: the first update of a note
    first.update(bytes=1_500_000, articles=15)          # not written: within NOTE_EVERY of the last
    second.done(bytes=2_000_000, articles=30)           # the end of a range is always written
    progress.work_note(folder, "views", "/data/pageviews-1.gz").done(lines=5000)
    progress.work_note(folder, "views", "/data/pageviews-2.gz").update(lines=4096)   # still reading
    text = watcher.text()
    assert text.startswith("queries: Wikipedia 3.0 MB of 4.0 MB read (")
    assert "40 articles counted, pageviews 1/3 files (9,096 lines); ETA " in text


def test_notes_of_different_ranges_and_files_do_not_collide():
    names = {progress.note_name("dump", "/a.bz2", 0), progress.note_name("dump", "/a.bz2", 100),
             progress.note_name("dump", "/b.bz2", 0), progress.note_name("views", "/a.bz2", 0)}
    assert len(names) == 4


def test_without_a_dump_the_eta_follows_the_pageview_files(tmp_path):
    folder = str(tmp_path)
    watcher = progress.BuildWatcher(folder, dump_bytes=0, view_files=2, stream=io.StringIO())
    progress.work_note(folder, "views", "/data/pageviews-1.gz").done(lines=10)
    text = watcher.text()
    assert text.startswith("queries: pageviews 1/2 files (10 lines); ETA ")
    assert "Wikipedia" not in text
