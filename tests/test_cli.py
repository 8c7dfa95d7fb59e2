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


@pytest.mark.parametrize("command,issue", [("dedup", 5), ("train", 6)])
def test_stages_not_built_yet_say_so_and_fail(command, issue, capsys):
    assert cli.main([command]) == 2
    err = capsys.readouterr().err
    assert f"not built yet (tracked in issue #{issue})" in err


def test_unknown_flags_are_refused_where_no_beam_job_runs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--bogus"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_queries_build_errors_are_clear(tmp_path, capsys):
    code = cli.main(["queries", "build", "--output", str(tmp_path / "q"), "--sources", "digits,unigrams"])
    assert code == 2
    assert "source 'unigrams' needs --wikipedia DUMP" in capsys.readouterr().err
