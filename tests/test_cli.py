"""The command line as a user meets it: help, board listing, exit codes."""

import subprocess
import sys

from harness.boards import all_boards


def hil(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_help_lists_every_stage_and_the_exit_codes():
    p = hil("--help")
    assert p.returncode == 0
    for cmd in ("demo", "convert", "codegen", "build", "flash", "device", "validate", "ports", "boards"):
        assert f"    {cmd} " in p.stdout, cmd
    assert "exit codes" in p.stdout


def test_boards_lists_every_board_with_whole_ids_on_a_narrow_terminal():
    import os

    p = hil("boards", env={**os.environ, "COLUMNS": "80"})
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    for b in all_boards():
        assert any(line.split()[:1] == [b.id] for line in lines), b.id
        assert b.name in p.stdout


def test_unknown_board_is_one_line_exit_2(tmp_path):
    p = hil("flash", "--board", "no_such_board")
    assert p.returncode == 2
    assert "no_such_board" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
