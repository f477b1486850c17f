"""NativeDriver: the firmware as a host program; its port is the
pseudo-terminal it prints on its first line (`HIL_PORT /dev/pts/N`)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from harness import procs
from harness.drivers.base import Driver, FlashOptions, FlashResult, register
from harness.errors import ConfigError, DeviceError, FlashError

NATIVE_PORT_RE = re.compile(r"(/dev/(?:pts/\d+|tty\S+))")


@register("native")
class NativeDriver(Driver):
    firmware_name = "firmware"
    start_timeout = 10.0

    def flash(self, opts: FlashOptions) -> FlashResult:
        program = self.firmware(opts)
        self.require_firmware(program, executable=True)
        with open(program, "rb") as f:
            if f.read(4) != b"\x7fELF":
                raise ConfigError(
                    f"native firmware {program} is not an ELF program",
                    "pass the firmware `hil build --board native` built",
                )
        cmd = [str(program)]
        try:
            # Its own process group, stopped with tinyhil (SIGTERM, SIGHUP, Ctrl-C, even SIGKILL): harness/procs.py.
            proc = procs.popen(cmd, detach=opts.detach, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=None)
        except OSError as exc:
            raise FlashError(f"cannot start {program}: {exc.strerror}", "rebuild it: hil build --board native") from exc
        try:
            port = self._read_port(program, proc)
        except BaseException:
            # No orphan firmware left behind, whatever went wrong (Ctrl-C too).
            procs.stop(proc)
            raise
        return FlashResult(self.board.id, port, [cmd], process=proc, pid=proc.pid)

    def _read_port(self, program: Path, proc: subprocess.Popen) -> str:
        deadline = time.monotonic() + self.start_timeout
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
            if m:
                return m.group(1)
            if proc.poll() is not None:
                raise DeviceError(
                    f"the native firmware exited at start (code {proc.returncode})", f"run it by hand: {program}"
                )
            time.sleep(0.02)
        raise DeviceError(
            "the native firmware did not print its pseudo-terminal", f"run {program} by hand and check its first line"
        )
