"""The emulated Cortex-M55: the real firmware in QEMU's mps3-an547.

`QemuM55` starts `qemu-system-arm -M mps3-an547` with the ELF, puts the
firmware's UART0 on a local TCP socket and gives its `socket://` URL, which
pyserial (and so `hil validate`) opens like any port. Semihosting is on, so
the firmware's Halt(code) ends QEMU with that exit code.

    with QemuM55("build/qemu_m55/firmware.elf") as dev:
        validate(port=dev.url, ...)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from harness import procs
from harness.errors import ConfigError, DeviceError, ToolError

MACHINE = "mps3-an547"


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def qemu_binary() -> str:
    exe = os.environ.get("HIL_QEMU") or shutil.which("qemu-system-arm")
    if not exe:
        raise ToolError("qemu-system-arm is not installed", "install it, e.g. `sudo apt-get install qemu-system-arm`")
    return exe


def qemu_command(elf: Path, port: int, host: str = "127.0.0.1", exe: str | None = None) -> list[str]:
    return [
        exe or qemu_binary(),
        "-M",
        MACHINE,
        "-nographic",
        "-monitor",
        "none",
        "-semihosting-config",
        "enable=on,target=native",
        "-serial",
        f"tcp:{host}:{port},server=on,wait=off,nodelay=on",
        "-kernel",
        str(elf),
    ]


class QemuM55:
    """QEMU running one firmware; a context manager that always cleans up."""

    def __init__(
        self,
        elf: str | os.PathLike,
        port: int | None = None,
        host: str = "127.0.0.1",
        log: str | os.PathLike | None = None,
        start_timeout: float = 10.0,
    ):
        self.elf = Path(elf)
        if not self.elf.is_file():
            raise ConfigError(
                f"firmware {self.elf} does not exist", "build it first: hil build --board qemu_m55 --model M.tflite"
            )
        with open(self.elf, "rb") as f:
            if f.read(4) != b"\x7fELF":
                raise ConfigError(
                    f"firmware {self.elf} is not an ELF file",
                    "pass the firmware.elf `hil build --board qemu_m55` built",
                )
        self.host = host
        self.port = port or free_tcp_port(host)
        self.log = Path(log) if log else None
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self._log_fh = None

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    @property
    def command(self) -> list[str]:
        return qemu_command(self.elf, self.port, self.host)

    def start(self, detach: bool = False) -> QemuM55:
        cmd = self.command
        out = subprocess.DEVNULL
        if self.log:
            self._log_fh = open(self.log, "ab")
            out = self._log_fh

        self.proc = procs.popen(cmd, detach=detach, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        deadline = time.monotonic() + self.start_timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    code = self.proc.returncode
                    self.proc = None
                    raise DeviceError(
                        f"QEMU exited at start (code {code})", f"run it by hand to see why: {' '.join(cmd)}"
                    )
                if self._listening():
                    return self
                time.sleep(0.05)
        except BaseException:
            self.stop()  # no orphan QEMU (Ctrl-C while it starts)
            raise
        self.stop()
        raise DeviceError(
            f"QEMU did not open {self.url} within {self.start_timeout:.0f} s", "is the port in use? pass another --port"
        )

    def _listening(self) -> bool:
        # /proc/net/tcp avoids connecting (a probe connection would take the
        # single client slot of QEMU's socket for a moment).
        try:
            rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
        except OSError:
            rows = None
        if rows is None:
            with socket.socket() as s:
                s.settimeout(0.2)
                return s.connect_ex((self.host, self.port)) == 0
        want = f":{self.port:04X}"
        return any(r.split()[1].endswith(want) and r.split()[3] == "0A" for r in rows)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        code = None
        if self.proc is not None:
            code = procs.stop(self.proc)
            self.proc = None
        if self._log_fh:
            self._log_fh.close()
            self._log_fh = None
        return code

    def __enter__(self) -> QemuM55:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
