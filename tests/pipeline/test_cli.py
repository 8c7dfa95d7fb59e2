import subprocess
import sys
from pathlib import Path

import pytest

from clipdata.pipeline import cli

CLIPDATA = str(Path(sys.executable).parent / "clipdata")


STAGES = ("queries", "curate", "download", "build", "dedup", "train", "demo")


def test_the_command_line_is_built_without_torch_or_beam():
    # every command builds the whole parser (`clipdata download` too): the heavy libraries are
    # imported by the handler that needs them, not by the flags (the trainer's flags come from
    # TrainConfig, which lives apart from the trainer for this)
    code = ("import sys; from clipdata.pipeline import cli; parser = cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'apache_beam', 'faiss', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_console_script_lists_every_stage_as_a_subcommand():
    out = subprocess.run([CLIPDATA, "--help"], capture_output=True, text=True, check=True).stdout
    # argparse lists the subcommands one per line, indented, each followed by its help
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("    ") and line.split()}
    assert set(STAGES) <= listed, listed
    for stage in STAGES:   # and each one is a parser of its own: its --help exits 0
        with pytest.raises(SystemExit) as exit_info:
            cli.main([stage, "--help"])
        assert exit_info.value.code == 0, stage


def test_unknown_flags_are_refused_where_no_beam_job_runs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["inspect", "000000000", "--bogus"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_queries_build_errors_are_clear(tmp_path, capsys):
    code = cli.main(["queries", "build", "--output", str(tmp_path / "q"), "--sources", "digits,unigrams"])
    assert code == 2
    assert "source 'unigrams' needs --wikipedia DUMP" in capsys.readouterr().err


def _pool(tmp_path, urls):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = str(tmp_path / "pool.parquet")
    pq.write_table(pa.table({"url": urls, "caption": [f"a red dog {i}" for i in range(len(urls))]}), path)
    return path


@pytest.mark.parametrize("command", [["curate", "--pool", "POOL", "--queries", "QUERIES"],
                                     ["download", "--input", "POOL"],
                                     ["dedup", "--shards", "POOL", "--test-set", "t=POOL"],
                                     ["queries", "build", "--sources", "digits"]])
def test_an_output_that_is_a_file_is_a_usage_error_before_any_work(tmp_path, capsys, command):
    pool = _pool(tmp_path, ["http://example.com/a.jpg"])
    (tmp_path / "queries.txt").write_text("red dog\n")
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    argv = [{"POOL": pool, "QUERIES": str(tmp_path / "queries.txt"), "t=POOL": f"t={pool}"}.get(a, a) for a in command]
    assert cli.main([*argv, "--output", str(taken)]) == 2
    err = capsys.readouterr().err
    assert f"--output {taken} is a file; give a folder" in err and "Traceback" not in err
    assert taken.read_text() == "not a folder"


def test_an_empty_query_list_is_an_error_not_zero_of_zero(tmp_path, capsys):
    pool = _pool(tmp_path, ["http://example.com/a.jpg"])
    (tmp_path / "empty.txt").write_text("")
    assert cli.main(["curate", "--pool", pool, "--queries", str(tmp_path / "empty.txt"),
                     "--output", str(tmp_path / "out")]) == 2
    assert "has no entries" in capsys.readouterr().err


def test_a_download_where_no_row_gives_an_image_fails(tmp_path, capsys):
    pool = _pool(tmp_path, ["not a url", "ftp://example.com/x.jpg", "", "http://"])
    assert cli.main(["download", "--input", pool, "--output", str(tmp_path / "shards")]) == 1
    captured = capsys.readouterr()
    assert "0 of 4 rows downloaded" in captured.out
    assert "none of the 4 rows gave an image" in captured.err


def test_inspect_names_the_run_folder_that_has_no_shards(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert cli.main(["inspect", "000000000", "--run", str(tmp_path / "run")]) == 2
    assert f"--run {tmp_path / 'run'} has no shards/ folder" in capsys.readouterr().err


def test_curate_says_when_no_pool_file_or_only_some_could_be_read(tmp_path, capsys):
    good = _pool(tmp_path, ["http://example.com/a.jpg"])
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    (tmp_path / "queries.txt").write_text("red dog\n")
    queries = str(tmp_path / "queries.txt")
    assert cli.main(["curate", "--pool", str(broken), "--queries", queries, "--output", str(tmp_path / "a")]) == 1
    captured = capsys.readouterr()
    assert "no pool file could be read" in captured.err and "unreadable: " in captured.out
    assert cli.main(["curate", "--pool", str(broken), "--pool", good, "--queries", queries,
                     "--output", str(tmp_path / "b")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("  1 pool file of the input could not be read")


@pytest.mark.parametrize("command", [["curate", "--pool", "POOL", "--queries", "QUERIES"], ["download", "--input", "POOL"]])
def test_a_wrong_column_name_is_said_once_before_the_job(tmp_path, capsys, command):
    pool = _pool(tmp_path, ["http://example.com/a.jpg"])
    (tmp_path / "queries.txt").write_text("red dog\n")
    argv = [{"POOL": pool, "QUERIES": str(tmp_path / "queries.txt")}.get(a, a) for a in command]
    assert cli.main([*argv, "--url-col", "URL", "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "has no URL column 'URL'; its columns are url, caption" in err
    assert err.count("--url-col") == 1 and "while running" not in err   # said once, before Beam runs
