"""tinyhil inside a labgrid environment: a driver bound to a serial port
resource (`SerialPort`, `RawSerialPort`, `USBSerialPort` or an exported
`NetworkSerialPort`) and a strategy that powers the board into "ready".

    # env.yaml
    imports: [harness.lab.labgrid_driver]
    targets:
      main:
        resources:
          RemotePlace: {name: nano-1}
        drivers:
          TinyhilDriver: {board: nano33ble}
          TinyhilStrategy: {}

    strategy = target.get_driver("TinyhilStrategy"); strategy.transition("ready")
    report = target.get_driver("TinyhilDriver").validate("m.tflite", "m_validation_data.npz")
    assert report.exit_code == 0

docs/lab.md shows it in a labgrid pytest suite.
"""

from __future__ import annotations

import enum

import attr
from labgrid.driver.common import Driver
from labgrid.factory import target_factory
from labgrid.protocol import PowerProtocol
from labgrid.step import step
from labgrid.strategy import Strategy, StrategyError

from harness.lab.labgrid import serial_url


@target_factory.reg_driver
@attr.s(eq=False)
class TinyhilDriver(Driver):
    """Validates (and flashes) the board on the bound serial port."""

    bindings = {"port": {"SerialPort", "NetworkSerialPort"}}
    board = attr.ib(default="sim", validator=attr.validators.instance_of(str))
    baud = attr.ib(default=None, validator=attr.validators.optional(attr.validators.instance_of(int)))

    def url(self) -> str:
        p = self.port
        if p.__class__.__name__ == "NetworkSerialPort":
            return serial_url(p.host, p.port, getattr(p, "protocol", "rfc2217"))
        return p.port

    def _baud(self) -> int:
        from harness.boards import load_board

        return self.baud or getattr(self.port, "speed", None) or load_board(self.board).baud

    @Driver.check_active
    @step(title="tinyhil handshake")
    def handshake(self):
        from harness.lab.check import handshake

        return handshake(self.url(), self._baud(), 1.0, 3)

    @Driver.check_active
    @step(title="tinyhil validate", args=["model", "data"])
    def validate(self, model, data, **kwargs):
        """`harness.validate.validate` on this board: a ValidationReport."""
        from harness.validate import validate

        kwargs.setdefault("baud", self._baud())
        kwargs.setdefault("board", self.board)
        return validate(self.url(), model, data, **kwargs)

    @Driver.check_active
    @step(title="tinyhil flash")
    def flash(self, **kwargs):
        """`harness.flash.flash` for this board, on this port: a FlashResult."""
        from harness.flash import flash

        kwargs.setdefault("port", self.url())
        return flash(self.board, **kwargs)


Status = enum.Enum("Status", "unknown off ready")


@target_factory.reg_driver
@attr.s(eq=False)
class TinyhilStrategy(Strategy):
    """off: power off (when a PowerProtocol driver is bound); ready: power
    cycled when it can be, and the tinyhil driver active."""

    bindings = {"tinyhil": "TinyhilDriver", "power": {PowerProtocol, None}}
    status = attr.ib(default=Status.unknown)

    @step(args=["status"])
    def transition(self, status, *, step):
        if not isinstance(status, Status):
            status = Status[status]
        if status == Status.unknown:
            raise StrategyError(f"cannot transition to {status}")
        if status == self.status:
            step.skip("nothing to do")
            return
        if status == Status.off:
            self.target.deactivate(self.tinyhil)
            if self.power is not None:
                self.target.activate(self.power)
                self.power.off()
        elif status == Status.ready:
            if self.power is not None:
                self.target.activate(self.power)
                self.power.cycle()
            self.target.activate(self.tinyhil)
        self.status = status
