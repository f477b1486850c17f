"""PlatformIOUploadDriver: `pio run -t upload` (the Nano 33 BLE: 1200-baud
touch, bossac). The USB port re-enumerates, so it is found again by the
application's VID:PID and the serial number it had before."""

from __future__ import annotations

from harness import pio
from harness.drivers.base import Driver, FlashOptions, FlashResult, register
from harness.errors import DeviceError, FlashError
from harness.paths import firmware_dir, workspace_dir
from harness.ports import find_usb_port, usb_ports_of


@register("platformio")
class PlatformIOUploadDriver(Driver):
    def flash(self, opts: FlashOptions) -> FlashResult:
        port, serial_number = self._port_before(opts.port)
        args = ["run", "-d", str(firmware_dir()), "-e", self.board.pio_env, "-t", "upload", "--upload-port", port]
        env_extra = {"PLATFORMIO_WORKSPACE_DIR": str(workspace_dir())}
        if opts.model:
            env_extra["HIL_MODEL"] = str(opts.model)
        proc = pio.run_pio(args, env_extra=env_extra)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
            raise FlashError(
                f"upload to {port} failed: {tail[0][:300]}",
                "double-tap the reset button and retry; check `hil build` ran first",
            )
        # The board resets into the new firmware and enumerates again, maybe as
        # another /dev/ttyACM*: find it by the application's VID:PID + serial.
        new_port = find_usb_port(self.board, serial_number, running=True)
        return FlashResult(self.board.id, new_port, [pio.pio_command() + args])

    def _port_before(self, port: str | None) -> tuple[str, str | None]:
        """The upload port and its USB serial number (to find it again)."""
        if port is None:
            found = usb_ports_of(self.board)
            if not found:
                raise DeviceError(f"no {self.board.name} connected", "plug it in or pass --port")
            return found[0].device, found[0].serial_number
        from serial.tools import list_ports

        return port, next((p.serial_number for p in list_ports.comports() if p.device == port), None)
