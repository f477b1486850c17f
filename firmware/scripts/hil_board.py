"""PlatformIO pre-build script: the board's defines, from its JSON.

`boards/<custom_hil_board>.json` is the one description of a board; this
adds what the firmware needs of it (HIL_BOARD_ID, HIL_CPU_HZ, HIL_BAUD,
HIL_MAX_FRAME, HIL_RX_WINDOW, HIL_CAPTURE_BYTES, HIL_ARDUINO for Arduino
boards) through `harness.boards.firmware_defines`, so no define repeats a
board's data. `hil build`'s firmware options arrive as the variables of
`harness.boards.FirmwareOptions` (HIL_CAPTURE_BYTES, HIL_PERTURB_OP).
"""

import os
import sys

Import("env")  # noqa: F821 (SCons injects it)


def board_defines(board_id):
    """(name, value) pairs for SCons' CPPDEFINES; string values escaped for
    the shell SCons runs the compiler through."""
    try:
        from harness.boards import FirmwareOptions, firmware_defines, load_board
        from harness.errors import HilError
    except ImportError as exc:
        sys.stderr.write("Error: tinyhil is not importable by PlatformIO's Python (%s): pip install tinyhil\n" % exc)
        env.Exit(2)
    try:
        board = load_board(board_id)
        options = FirmwareOptions.from_env(os.environ)
    except HilError as exc:
        sys.stderr.write("Error: custom_hil_board = %s: %s\n" % (board_id, exc))
        env.Exit(2)
    defines = firmware_defines(board, options)
    return [name if value is None else (name, value.replace('"', '\\"')) for name, value in defines]


env.Append(CPPDEFINES=board_defines(env.GetProjectOption("custom_hil_board", env.subst("$PIOENV"))))
