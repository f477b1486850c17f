"""Stage 4, flash: put the firmware on the board, then find its port again.

One small strategy per `upload_method` of the board definition:
- `platformio` (Nano 33 BLE): `pio run -t upload` (1200-baud touch, bossac);
  the USB port re-enumerates, so it is found again by VID:PID and the serial
  number it had before.
- `stm32cubeprogrammer` (STM32N6): sign with STM32_SigningTool_CLI, program
  the external flash with STM32_Programmer_CLI and the board's external
  loader; or `--ram`: load the ELF to AXISRAM in development boot.
- `qemu`: start QEMU with the ELF; the port is a `socket://` URL.
- `native`: start the host firmware; the port is its pseudo-terminal.

Each `flash()` returns a `FlashResult` with the port URL, the commands run
(the CLI shows them with -v) and, for QEMU/native, the running process.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import pio, procs
from harness.boards import Board, load_board
from harness.build import workspace_dir
from harness.device.qemu import QemuM55
from harness.errors import ConfigError, DeviceError, FlashError, ToolError
from harness.paths import firmware_dir

NATIVE_PORT_RE = re.compile(r"(/dev/(?:pts/\d+|tty\S+))")


@dataclass
class FlashResult:
    board: str
    port: str | None
    commands: list[list[str]] = field(default_factory=list)
    process: object | None = None  # QemuM55 or subprocess.Popen, still running
    pid: int | None = None
    notes: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """End the emulator or host firmware this flash started (if any)."""
        if isinstance(self.process, subprocess.Popen):
            procs.stop(self.process)
        elif self.process is not None:
            self.process.stop()


def default_elf(board: Board) -> Path:
    name = "firmware" if board.get("upload_method") == "native" else "firmware.elf"
    return Path("build") / board.id / name


def _run(cmd: list[str], what: str, env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    except FileNotFoundError as exc:
        raise ToolError(f"{cmd[0]} is not installed", f"install it to {what}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise FlashError(f"{what} failed: {tail[:300]}", f"run it by hand: {' '.join(cmd)}")
    return proc


# --------------------------------------------------------------------------- QEMU / native


def flash_qemu(
    board: Board, elf: Path, port: int | None = None, log: Path | None = None, detach: bool = False
) -> FlashResult:
    dev = QemuM55(elf, port=port, log=log)
    dev.start(detach=detach)
    return FlashResult(board.id, dev.url, [dev.command], process=dev, pid=dev.proc.pid)


def flash_native(board: Board, program: Path, timeout: float = 10.0, detach: bool = False) -> FlashResult:
    """Start the host firmware; it prints its pseudo-terminal's path on stdout."""
    if not program.is_file() or not os.access(program, os.X_OK):
        raise ConfigError(
            f"native firmware {program} does not exist", "build it first: hil build --board native --model M.tflite"
        )
    with open(program, "rb") as f:
        if f.read(4) != b"\x7fELF":
            raise ConfigError(
                f"native firmware {program} is not an ELF program", "pass the firmware `hil build --board native` built"
            )

    cmd = [str(program)]
    try:
        proc = procs.popen(cmd, detach=detach, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=None)
    except OSError as exc:
        raise FlashError(f"cannot start {program}: {exc.strerror}", "rebuild it: hil build --board native") from exc
    try:
        return _native_port(board, program, proc, cmd, timeout)
    except BaseException:
        # No orphan firmware left behind, whatever went wrong (Ctrl-C too).
        procs.stop(proc)
        raise


def _native_port(board: Board, program: Path, proc: subprocess.Popen, cmd: list[str], timeout: float) -> FlashResult:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    buf = ""
    while time.monotonic() < deadline:
        try:
            # Raw, non-blocking: a text wrapper over a non-blocking pipe
            # fails when no bytes are there yet.
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            chunk = b""
        buf += chunk.decode("utf-8", "replace")
        m = NATIVE_PORT_RE.search(buf)
        if not m and proc.poll() is not None:
            raise DeviceError(
                f"the native firmware exited at start (code {proc.returncode})", f"run it by hand: {program}"
            )
        if m:
            return FlashResult(board.id, m.group(1), [cmd], process=proc, pid=proc.pid)
        time.sleep(0.02)
    raise DeviceError(
        "the native firmware did not print its pseudo-terminal", f"run {program} by hand and check its first line"
    )


# --------------------------------------------------------------------------- Nano 33 BLE


def _usb_ports(board: Board):
    from serial.tools import list_ports

    ids = set(board.usb_ids)
    return [p for p in list_ports.comports() if p.vid is not None and (p.vid, p.pid) in ids]


def find_usb_port(board: Board, serial_number: str | None = None, timeout: float = 15.0, running: bool = False) -> str:
    """Wait for the board's USB port (by VID:PID, and serial number if known).
    With `running`, only the application's VID:PID (the first in the board's
    list) counts: after an upload the bootloader's port may still be there."""
    deadline = time.monotonic() + timeout
    while True:
        ports = _usb_ports(board)
        if running and board.usb_ids:
            ports = [p for p in ports if (p.vid, p.pid) == board.usb_ids[0]]
        if serial_number:
            ports = [p for p in ports if p.serial_number == serial_number]
        if ports:
            return ports[0].device
        if time.monotonic() > deadline:
            ids = ", ".join(f"{v:04x}:{p:04x}" for v, p in board.usb_ids)
            raise DeviceError(
                f"no {board.name} port appeared ({ids}{', serial ' + serial_number if serial_number else ''})",
                "check the cable; double-tap reset enters the bootloader",
            )
        time.sleep(0.25)


def flash_platformio(board: Board, port: str | None = None, model: Path | None = None) -> FlashResult:
    serial_number = None
    if port is None:
        found = _usb_ports(board)
        if not found:
            raise DeviceError(f"no {board.name} connected", "plug it in or pass --port")
        port, serial_number = found[0].device, found[0].serial_number
    else:
        from serial.tools import list_ports

        serial_number = next((p.serial_number for p in list_ports.comports() if p.device == port), None)
    args = ["run", "-d", str(firmware_dir()), "-e", board.pio_env, "-t", "upload", "--upload-port", port]
    env_extra = {"PLATFORMIO_WORKSPACE_DIR": str(workspace_dir())}
    if model:
        env_extra["HIL_MODEL"] = str(model)
    proc = pio.run_pio(args, env_extra=env_extra)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
        raise FlashError(
            f"upload to {port} failed: {tail[0][:300]}",
            "double-tap the reset button and retry; check `hil build` ran first",
        )
    # The board resets into the new firmware and enumerates again, maybe as
    # another /dev/ttyACM*: find it by the application's VID:PID + serial.
    new_port = find_usb_port(board, serial_number, running=True)
    return FlashResult(board.id, new_port, [pio.pio_command() + args])


# --------------------------------------------------------------------------- STM32N6


def st_tool(name: str) -> str:
    exe = shutil.which(name)
    if exe:
        return exe
    for root in filter(
        None,
        [
            os.environ.get("STM32_PROGRAMMER_DIR"),
            os.path.expanduser("~/STMicroelectronics/STM32Cube/STM32CubeProgrammer/bin"),
            "/opt/st/STM32CubeProgrammer/bin",
        ],
    ):
        cand = Path(root) / name
        if cand.is_file():
            return str(cand)
    raise ToolError(
        f"{name} is not installed (ST's STM32CubeProgrammer)",
        "install STM32CubeProgrammer from st.com and put its bin/ on PATH (docs/build.md)",
    )


def external_loader(board: Board, programmer: str) -> str:
    name = board.get("external_loader")
    if not name:
        raise ConfigError(f"board {board.id} names no external_loader", "add it to its boards/ file")
    cand = Path(programmer).resolve().parent / "ExternalLoader" / name
    if not cand.is_file():
        raise ToolError(
            f"external loader {name} not found in {cand.parent}",
            "update STM32CubeProgrammer (2.18 or later ships the STM32N6 loaders)",
        )
    return str(cand)


def stm32n6_commands(
    board: Board, binary: Path, elf: Path, ram: bool, programmer: str, signer: str | None, loader: str | None
) -> list[list[str]]:
    connect = ["-c", "port=SWD", "mode=HOTPLUG", "AP=1"]
    if ram:
        # Development boot (BOOT1 switch): load the ELF to AXISRAM and start it.
        return [[programmer, *connect, "-d", str(elf), "-s"]]
    signed = binary.with_name(binary.stem + "-trusted.bin")
    flash_base = board.get("flash_base", "0x70000000")
    return [
        [signer, "-bin", str(binary), "-nk", "-of", "0x80000000", "-t", "fsbl", "-hv", "2.3", "-o", str(signed), "-s"],
        [programmer, *connect, "-el", loader, "-hardRst", "-w", str(signed), flash_base],
    ]


def flash_stm32n6(
    board: Board, elf: Path, port: str | None = None, ram: bool = False, dry_run: bool = False
) -> FlashResult:
    binary = elf.with_suffix(".bin")
    if not elf.is_file() or (not ram and not binary.is_file()):
        raise ConfigError(
            f"firmware {elf if ram else binary} does not exist",
            f"build it first: hil build --board {board.id} --model M.tflite",
        )
    programmer = st_tool("STM32_Programmer_CLI") if not dry_run else "STM32_Programmer_CLI"
    signer = loader = None
    if not ram:
        signer = st_tool("STM32_SigningTool_CLI") if not dry_run else "STM32_SigningTool_CLI"
        loader = external_loader(board, programmer) if not dry_run else board.get("external_loader")
    commands = stm32n6_commands(board, binary, elf, ram, programmer, signer, loader)
    result = FlashResult(board.id, port, commands)
    if dry_run:
        return result
    for cmd in commands:
        _run(cmd, "signing" if cmd[0] == signer else "programming the STM32N6")
    if port is None:
        try:
            result.port = find_usb_port(board, timeout=5.0)
        except DeviceError:
            result.notes.append("ST-LINK VCP not found; pass --port to hil validate")
    if not ram:
        result.notes.append("set the boot switches to flash boot (BOOT1=0) and reset the board")
    return result


# --------------------------------------------------------------------------- entry


def flash(
    board_id: str,
    *,
    port: str | None = None,
    elf: str | os.PathLike | None = None,
    tcp_port: int | None = None,
    ram: bool = False,
    detach: bool = False,
    log: str | os.PathLike | None = None,
    dry_run: bool = False,
    model: str | os.PathLike | None = None,
) -> FlashResult:
    board = load_board(board_id)
    method = board.upload_method
    elf_path = Path(elf) if elf else default_elf(board)
    if method == "qemu":
        return flash_qemu(board, elf_path, port=tcp_port, log=Path(log) if log else None, detach=detach)
    if method == "native":
        return flash_native(board, elf_path, detach=detach)
    if method == "platformio":
        return flash_platformio(board, port=port, model=Path(model) if model else None)
    if method == "stm32cubeprogrammer":
        return flash_stm32n6(board, elf_path, port=port, ram=ram, dry_run=dry_run)
    raise ConfigError(
        f"board {board_id} cannot be flashed (upload_method '{method}')", "the simulated board runs with `hil device`"
    )
