import subprocess
import sys
from pathlib import Path

import pytest

from clipdata.pipeline import cli

CLIPDATA = str(Path(sys.executable).parent / "clipdata")


def test_console_script_lists_every_stage():
    out = subprocess.run([CLIPDATA, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("queries", "curate", "download", "build", "dedup", "train", "demo"):
        assert command in out


def test_not_built_stages_say_so_and_fail(capsys):
    from clipdata.pipeline.cli import add_not_built
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_not_built(sub, "someday", "a stage for later", 99)
    args, extra = parser.parse_known_args(["someday"])
    with pytest.raises(cli.UsageError, match=r"not built yet \(tracked in issue #99\)"):
        args.handler(args, extra)


def test_unknown_flags_are_refused_where_no_beam_job_runs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["inspect", "000000000", "--bogus"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_queries_build_errors_are_clear(tmp_path, capsys):
    code = cli.main(["queries", "build", "--output", str(tmp_path / "q"), "--sources", "digits,unigrams"])
    assert code == 2
    assert "source 'unigrams' needs --wikipedia DUMP" in capsys.readouterr().err
