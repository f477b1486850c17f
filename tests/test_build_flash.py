"""hil build / hil flash: error paths without tools, the STM32N6 command
plan, and (with a TFLM tree) real offline builds validated in QEMU and on
the host."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import build as hb
from harness import flash as hf
from harness.boards import load_board
from harness.errors import BuildError, ConfigError, ToolError


def test_registry_failure_is_one_line_with_the_offline_fix():
    out = "Platform Manager: Installing platformio/nordicnrf52\nHTTPClientError: Could not resolve host\n"
    err = hb._classify_failure(load_board("nano33ble"), out)
    assert isinstance(err, BuildError) and "registry is unreachable" in err.message
    assert "qemu_m55" in err.hint and "\n" not in str(err)


def test_compile_error_is_reported_by_its_first_line():
    out = "Compiling x.o\nsrc/main.cpp:3:1: error: 'foo' was not declared\n*** Error 1\n"
    err = hb._classify_failure(load_board("qemu_m55"), out)
    assert "src/main.cpp:3:1: error" in err.message


def test_missing_tflm_tree_says_how_to_set_it(monkeypatch):
    monkeypatch.delenv("HIL_TFLM_DIR", raising=False)
    monkeypatch.delenv("HIL_TFLM_M55_DIR", raising=False)
    with pytest.raises(ConfigError) as ei:
        hb.find_tflm_tree(load_board("qemu_m55"))
    assert "HIL_TFLM_DIR" in ei.value.hint


def test_a_folder_that_is_not_a_tflm_tree_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a TensorFlow Lite Micro tree"):
        hb.find_tflm_tree(load_board("native"), tmp_path)


def test_cmsis_nn_tree_is_refused_for_the_host(tmp_path):
    micro = tmp_path / "tensorflow" / "lite" / "micro"
    (micro / "kernels" / "cmsis_nn").mkdir(parents=True)
    (micro / "micro_interpreter.h").write_text("")
    with pytest.raises(ConfigError, match="CMSIS-NN"):
        hb.find_tflm_tree(load_board("native"), tmp_path)
    assert hb.find_tflm_tree(load_board("qemu_m55"), tmp_path) == tmp_path.resolve()


def test_board_without_firmware_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no firmware"):
        hb.build("sim", tmp_path / "m.tflite")


def test_missing_cross_compiler_is_a_tool_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ToolError, match="arm-none-eabi-g"):
        hb.check_toolchain(load_board("qemu_m55"))


def test_stm32n6_flash_plan_signs_then_programs_external_flash(tmp_path):
    elf = tmp_path / "firmware.elf"
    elf.write_bytes(b"\x7fELF")
    elf.with_suffix(".bin").write_bytes(b"\0" * 16)
    res = hf.flash("nucleo_n657x0_q", elf=elf, dry_run=True)
    sign, program = res.commands
    assert sign[0] == "STM32_SigningTool_CLI" and "-t" in sign and sign[sign.index("-t") + 1] == "fsbl"
    assert program[0] == "STM32_Programmer_CLI" and program[-1] == "0x70000000"
    assert program[program.index("-el") + 1] == "MX25UM51245G_STM32N6570-NUCLEO.stldr"
    assert program[program.index("-w") + 1] == sign[sign.index("-o") + 1]
    ram = hf.flash("stm32n6570_dk", elf=elf, ram=True, dry_run=True)
    assert ram.commands == [["STM32_Programmer_CLI", "-c", "port=SWD", "mode=HOTPLUG", "AP=1", "-d", str(elf), "-s"]]


def test_stm32n6_without_st_tools_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    elf = tmp_path / "firmware.elf"
    elf.write_bytes(b"\x7fELF")
    elf.with_suffix(".bin").write_bytes(b"\0")
    with pytest.raises(ToolError, match="STM32_Programmer_CLI is not installed"):
        hf.flash("stm32n6570_dk", elf=elf)


def test_flash_without_firmware_says_build_first(tmp_path):
    with pytest.raises(ConfigError, match="hil build --board qemu_m55"):
        hf.flash("qemu_m55", elf=tmp_path / "nope.elf")
    with pytest.raises(ConfigError, match="hil build --board native"):
        hf.flash("native", elf=tmp_path / "nope")


def test_cli_build_error_exits_2(capsys, monkeypatch, tmp_path):
    from harness.cli import main

    monkeypatch.delenv("HIL_TFLM_DIR", raising=False)
    monkeypatch.delenv("HIL_TFLM_M55_DIR", raising=False)
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    assert main(["build", "--board", "qemu_m55", "--model", str(model)]) == 2
    assert "TensorFlow Lite Micro tree" in capsys.readouterr().err


def test_perturbing_an_operator_the_model_lacks_is_refused_before_building(gesture_model, capsys):
    from harness.cli import main

    assert main(["build", "--board", "native", "--model", str(gesture_model.tflite), "--perturb-op", "99"]) == 2
    err = capsys.readouterr().err
    assert "operator 99 is not one of the model's" in err and "TEST BUILD" in err and "Traceback" not in err


# --------------------------------------------------------------------------- with a TFLM tree


def _tree(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        pytest.skip(f"set {var}=/path/to/tflm_tree (create_tflm_tree.py output, see docs/build.md) to run real builds")
    return Path(value)


OTHER = {"gesture_model": "audio_model", "audio_model": "gesture_model"}


@pytest.mark.tflm
@pytest.mark.parametrize("board,var", [("qemu_m55", "HIL_TFLM_M55_DIR"), ("native", "HIL_TFLM_DIR")])
@pytest.mark.parametrize("example", ["gesture_model", "audio_model"])
def test_built_firmware_validates_bit_exact(request, tmp_path_factory, board, var, example):
    tree = _tree(var)
    model, data = request.getfixturevalue(example)[:2]
    out = tmp_path_factory.mktemp(f"fw_{board}")
    res = hb.build(board, model, tflm_dir=tree, out=out)
    assert res.model_in_readonly_section
    assert res.heap == "none" and res.allocator_symbols == []  # and the build checked it
    dev = hf.flash(board, elf=res.elf)
    try:
        proc = subprocess.run(
            ["hil", "validate", "--port", dev.port, "--model", str(model), "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # The same firmware asked to validate the other example: the
        # handshake refuses it (exit 2, one line naming the difference).
        other_model, other_data = request.getfixturevalue(OTHER[example])[:2]
        proc = subprocess.run(
            ["hil", "validate", "--port", dev.port, "--model", str(other_model), "--data", str(other_data)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "holds another model" in proc.stderr and "sha256" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        dev.stop()


# --------------------------------------------------------------------------- Nano 33 BLE upload


class _Port:
    def __init__(self, device, vid, pid, serial_number):
        self.device, self.vid, self.pid, self.serial_number = device, vid, pid, serial_number


def _fake_usb(monkeypatch, sequence):
    """list_ports.comports() answers with the next list of `sequence` each call
    (the last one repeats): a board re-enumerating during an upload."""
    from serial.tools import list_ports

    calls = iter(sequence)
    last = [sequence[-1]]

    def comports():
        try:
            last[0] = next(calls)
        except StopIteration:
            pass
        return last[0]

    monkeypatch.setattr(list_ports, "comports", comports)


def test_nano_upload_finds_the_board_again_by_vid_pid_and_serial(monkeypatch):
    from harness import pio, ports

    app, boot = (0x2341, 0x805A), (0x2341, 0x005A)
    other = _Port("/dev/ttyACM0", *app, "OTHERBOARD")  # a second Nano on the rig
    _fake_usb(
        monkeypatch,
        [
            [other, _Port("/dev/ttyACM1", *app, "ABC123")],  # before: the serial of --port
            [other, _Port("/dev/ttyACM2", *boot, "ABC123")],  # still in the bootloader
            [other, _Port("/dev/ttyACM3", *app, "ABC123")],  # running again, new path
        ],
    )
    ran = []
    monkeypatch.setattr(
        pio, "run_pio", lambda args, **kw: ran.append(args) or subprocess.CompletedProcess(args, 0, "uploaded", "")
    )
    monkeypatch.setattr(ports.time, "sleep", lambda s: None)
    res = hf.flash("nano33ble", port="/dev/ttyACM1")
    assert ran[0][-4:] == ["-t", "upload", "--upload-port", "/dev/ttyACM1"] and "nano33ble" in ran[0]
    assert res.port == "/dev/ttyACM3"


def test_nano_upload_failure_and_missing_board_are_one_line_errors(monkeypatch):
    from harness import pio
    from harness.errors import DeviceError, FlashError

    _fake_usb(monkeypatch, [[]])
    with pytest.raises(DeviceError, match="no Arduino Nano 33 BLE"):
        hf.flash("nano33ble")
    _fake_usb(monkeypatch, [[_Port("/dev/ttyACM0", 0x2341, 0x805A, "S1")]])
    monkeypatch.setattr(
        pio,
        "run_pio",
        lambda args, **kw: subprocess.CompletedProcess(args, 1, "", "Uploading...\nNo device found on ttyACM0"),
    )
    with pytest.raises(FlashError) as exc:
        hf.flash("nano33ble")
    assert "No device found" in str(exc.value) and exc.value.exit_code == 2 and "\n" not in str(exc.value)


def test_unreachable_registry_fails_before_platformio_runs(monkeypatch, tmp_path):
    """No minute of PlatformIO retries: a quick look for the registry first."""
    import socket

    from harness import pio

    def no_network(*a, **kw):
        raise socket.gaierror(-2, "Name or service not known")

    for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(pio, "platform_installed", lambda name: False)
    monkeypatch.setattr(pio, "run_pio", lambda *a, **kw: pytest.fail("PlatformIO ran"))
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0" * 8)
    with pytest.raises(BuildError, match="registry is unreachable") as exc:
        hb.build("nano33ble", model)
    assert exc.value.exit_code == 2 and "offline board" in exc.value.hint
    # behind a proxy the direct look proves nothing: PlatformIO is let try
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert pio.registry_reachable() is True


# --------------------------------------------------------------------------- no heap

_WITH_MALLOC = "#include <stdlib.h>\nint main(void) { char *p = malloc(16); p[0] = 1; free(p); return p[0]; }\n"
_WITHOUT = "static char buf[16];\nint main(void) { buf[0] = 1; return buf[0]; }\n"


def _cross_elf(tmp_path: Path, name: str, source: str) -> Path:
    if not shutil.which("arm-none-eabi-gcc"):
        pytest.skip("arm-none-eabi-gcc is not installed: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi")
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    elf = tmp_path / f"{name}.elf"
    cmd = ["arm-none-eabi-gcc", "-mcpu=cortex-m55", "-mthumb", "-O2", "--specs=nano.specs", "--specs=nosys.specs"]
    subprocess.run([*cmd, str(src), "-o", str(elf)], check=True, capture_output=True)
    return elf


def test_allocator_check_finds_malloc_and_only_malloc(tmp_path):
    found = hb.allocator_symbols(_cross_elf(tmp_path, "heap", _WITH_MALLOC))
    assert {"malloc", "free", "_malloc_r", "_sbrk"} <= set(found)
    assert hb.allocator_symbols(_cross_elf(tmp_path, "noheap", _WITHOUT)) == []


def test_allocator_check_sees_a_host_programs_imports(tmp_path):
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed: apt-get install gcc")
    src = tmp_path / "h.c"
    src.write_text(_WITH_MALLOC)
    subprocess.run(["gcc", "-O1", str(src), "-o", str(tmp_path / "h")], check=True)
    assert "malloc" in hb.allocator_symbols(tmp_path / "h")


def _result(tmp_path, **kw) -> hb.BuildResult:
    base = dict(
        board="qemu_m55",
        env="qemu_m55",
        elf=tmp_path / "firmware.elf",
        model=tmp_path / "m.tflite",
        model_sha256="0" * 64,
        model_symbol="g_model_data",
        model_size=16,
        model_section=".hil_model",
        model_address=0x11000000,
        model_in_readonly_section=True,
        arena_bytes=1024,
        arena_symbol_bytes=1024,
        flash_used=100,
        flash_limit=1000,
        ram_used=100,
        ram_limit=1000,
    )
    return hb.BuildResult(**{**base, **kw})


def test_a_firmware_that_links_an_allocator_fails_the_build(tmp_path):
    info = {"model_section": ".hil_model", "model_readonly": True}
    hb._check_image(_result(tmp_path), info)  # no allocator: fine
    assert _result(tmp_path).heap == "none"
    with pytest.raises(BuildError, match="links a heap allocator \\(_malloc_r, malloc\\)") as exc:
        hb._check_image(_result(tmp_path, allocator_symbols=["_malloc_r", "malloc"]), info)
    assert exc.value.exit_code == 2 and "trace-symbol" in exc.value.hint


@pytest.mark.tflm
@pytest.mark.parametrize("board", ["nucleo_n657x0_q", "stm32n6570_dk"])
def test_stm32n6_firmware_links_without_a_heap(request, tmp_path_factory, board):
    tree = _tree("HIL_TFLM_M55_DIR")
    if not os.environ.get("HIL_STM32CUBE_N6_DIR"):
        pytest.skip("set HIL_STM32CUBE_N6_DIR=/path/to/STM32CubeN6 (with submodules, see docs/build.md) to build it")
    model = request.getfixturevalue("gesture_model")[0]
    res = hb.build(board, model, tflm_dir=tree, out=tmp_path_factory.mktemp(board))
    assert res.heap == "none" and res.model_in_readonly_section
    assert hb.allocator_symbols(res.elf) == []
    assert (res.elf.parent / "firmware.bin").is_file()
