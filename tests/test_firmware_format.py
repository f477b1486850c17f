"""The firmware's heap-free formatter (firmware/lib/hil_runner/src/hil_format.cc)
against the C library's snprintf, built with the host compiler and
sanitizers: it replaces newlib-nano's vsnprintf (which links _malloc_r) in
TFLM's DebugVsnprintf seam and the runner's logs."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from helpers.firmware_build import FIRMWARE, SANITIZE

RUNNER_SRC = FIRMWARE / "lib" / "hil_runner" / "src"


def test_format_matches_the_c_library(tmp_path):
    if not shutil.which("g++"):
        pytest.skip("g++ is not installed: apt-get install g++")
    exe = tmp_path / "test_format"
    subprocess.run(
        [
            "g++",
            "-std=c++17",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-Wno-format",  # one case is an invalid conversion on purpose ("%q")
            *SANITIZE,
            f"-I{RUNNER_SRC}",
            str(FIRMWARE / "test" / "test_format.cpp"),
            str(RUNNER_SRC / "hil_format.cc"),
            "-o",
            str(exe),
        ],
        check=True,
        capture_output=True,
    )
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "0 failures" in proc.stdout, proc.stdout + proc.stderr
