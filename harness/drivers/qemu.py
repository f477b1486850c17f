"""QemuDriver: the Cortex-M55 firmware in qemu-system-arm (mps3-an547); its
port is the UART's TCP socket (`socket://127.0.0.1:PORT`)."""

from __future__ import annotations

from harness.device.qemu import QemuM55
from harness.drivers.base import Driver, FlashOptions, FlashResult, register


@register("qemu")
class QemuDriver(Driver):
    def flash(self, opts: FlashOptions) -> FlashResult:
        elf = self.firmware(opts)
        self.require_firmware(elf)
        dev = QemuM55(elf, port=opts.tcp_port, log=opts.log)
        dev.start(detach=opts.detach)
        return FlashResult(self.board.id, dev.url, [dev.command], process=dev, pid=dev.proc.pid)
