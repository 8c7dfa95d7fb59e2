import subprocess
import sys
from pathlib import Path

import pytest

from clipdata.pipeline import cli

CLIPDATA = str(Path(sys.executable).parent / "clipdata")


STAGES = ("queries", "curate", "download", "build", "dedup", "train", "demo")


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
