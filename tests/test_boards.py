"""boards/<id>.json is the one description of a board: every copy PlatformIO
needs (its board manifests, platformio.ini's envs, the firmware's defines)
must agree with it, and the firmware's own sources must not repeat it."""

from __future__ import annotations

import configparser
import json
import re

import pytest

from harness.boards import (
    FirmwareOptions,
    all_boards,
    define_flags,
    firmware_defines,
    load_board,
    pio_manifest,
    pio_manifest_text,
    write_pio_manifests,
)
from harness.errors import ConfigError
from harness.paths import boards_dir, firmware_dir


def _ini() -> configparser.ConfigParser:
    ini = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    ini.read(firmware_dir() / "platformio.ini")
    return ini


@pytest.mark.parametrize("board", [b for b in all_boards() if pio_manifest(b)], ids=lambda b: b.id)
def test_committed_pio_manifest_is_the_one_derived_from_the_board(board):
    path = boards_dir() / "pio" / f"{board.get('pio_board')}.json"
    assert path.is_file(), f"{path} missing: run `hil boards --write_pio`"
    assert json.loads(path.read_text()) == pio_manifest(board), (
        f"{path} disagrees with boards/{board.id}.json: run `hil boards --write_pio`"
    )


def test_no_stray_pio_manifest():
    wanted = {f"{b.get('pio_board')}.json" for b in all_boards() if pio_manifest(b)}
    assert {p.name for p in (boards_dir() / "pio").glob("*.json")} == wanted


def test_write_pio_manifests_derives_the_clock_free_manifest(tmp_path):
    data = json.loads((boards_dir() / "qemu_m55.json").read_text())
    data["flash_bytes"] = 1234
    (tmp_path / "qemu_m55.json").write_text(json.dumps(data))
    (written,) = write_pio_manifests(tmp_path)
    manifest = json.loads(written.read_text())
    assert manifest["upload"]["maximum_size"] == 1234
    assert manifest["build"]["cpu"] == "cortex-m55" and "f_cpu" not in manifest["build"]
    assert written.read_text() == pio_manifest_text(load_board("qemu_m55", tmp_path))


@pytest.mark.parametrize("board", [b for b in all_boards() if b.pio_env], ids=lambda b: b.id)
def test_platformio_env_agrees_with_the_board(board):
    ini = _ini()
    section = f"env:{board.pio_env}"
    assert ini.has_section(section), f"platformio.ini has no [{section}] for boards/{board.id}.json"
    env = ini[section]
    assert env.get("custom_hil_board") == board.id
    if board.get("pio_board"):
        assert env.get("board") == board.get("pio_board")
    platform = env.get("platform") or ini[env.get("extends", "env")].get("platform", "")
    if board.get("platform") != "hil-offline":
        assert board.get("platform") in platform and env.get("framework") == board.get("framework")
    # No HIL_* define may be repeated here: they come from the board's JSON.
    for key in ("build_flags", "build_unflags"):
        assert "HIL_" not in env.get(key, ""), f"[{section}] {key} repeats a board define"


def test_every_env_has_a_board():
    envs = {s[len("env:") :] for s in _ini().sections() if s.startswith("env:")}
    assert envs == {b.pio_env for b in all_boards() if b.pio_env}


def test_firmware_defines_come_from_the_board_data():
    qemu = dict(firmware_defines(load_board("qemu_m55")))
    assert qemu["HIL_BOARD_ID"] == '"qemu_m55"'
    assert qemu["HIL_CPU_HZ"] == "32000000u" and qemu["HIL_BAUD"] == "921600u"
    assert qemu["HIL_MAX_FRAME"] == "4096" and qemu["HIL_RX_WINDOW"] == "8"
    n6 = dict(firmware_defines(load_board("nucleo_n657x0_q")))
    assert n6["HIL_CPU_HZ"] == "600000000u"  # the clock set (ST's Nucleo template), not the 800 MHz max
    assert ("HIL_ARDUINO", None) in firmware_defines(load_board("nano33ble"))
    assert '-DHIL_BOARD_ID="native"' in define_flags(load_board("native"))
    assert qemu["HIL_CAPTURE_BYTES"] == "8192" and "HIL_PERTURB_OP" not in qemu  # the board's capture_bytes


def test_firmware_options_reach_the_defines_through_the_environment():
    board = load_board("qemu_m55")
    opts = FirmwareOptions(capture_bytes=0, perturb_op=3, perturb_lsb=-2)
    env = opts.to_env()
    assert env == {"HIL_CAPTURE_BYTES": "0", "HIL_PERTURB_OP": "3", "HIL_PERTURB_LSB": "-2"}
    assert FirmwareOptions.from_env(env) == opts  # what hil_board.py reads back
    d = dict(firmware_defines(board, FirmwareOptions.from_env(env)))
    assert d["HIL_CAPTURE_BYTES"] == "0" and d["HIL_PERTURB_OP"] == "3" and d["HIL_PERTURB_LSB"] == "-2"
    # `hil build` without options sets every variable empty: a stale
    # HIL_PERTURB_OP in the user's shell cannot turn the fault on.
    clean = {"HIL_PERTURB_OP": "5", **FirmwareOptions().to_env()}
    assert "HIL_PERTURB_OP" not in dict(firmware_defines(board, FirmwareOptions.from_env(clean)))
    with pytest.raises(ConfigError, match="HIL_CAPTURE_BYTES='lots' is not a whole number"):
        FirmwareOptions.from_env({"HIL_CAPTURE_BYTES": "lots"})


def test_board_sources_repeat_no_board_fact():
    """Clock, baud and id are not written in the firmware: a board source
    that falls back to its own number would hide a wrong define."""
    src = firmware_dir() / "src" / "boards"
    for path in [*src.rglob("*.cc"), *src.rglob("*.cpp")]:
        text = path.read_text()
        assert not re.search(r"#define\s+HIL_(CPU_HZ|BAUD|BOARD_ID|MAX_FRAME|RX_WINDOW)\b", text), path
        assert not re.search(r'BoardId\(\)\s*\{\s*return\s*"', text), path


def test_every_extra_script_exists():
    """PlatformIO takes one script a line; a missing one fails every build."""
    for name, section in _ini().items():
        for line in section.get("extra_scripts", "").splitlines():
            for entry in filter(None, (e.strip() for e in line.split(","))):
                path = entry.split(":", 1)[1] if entry.startswith(("pre:", "post:")) else entry
                assert (firmware_dir() / path).is_file(), f"[{name}] extra_scripts: {entry} does not exist"
