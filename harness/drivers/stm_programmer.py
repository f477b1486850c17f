"""StmProgrammerDriver: ST's STM32CubeProgrammer for the STM32N6 boards.

Flash boot: sign the image with STM32_SigningTool_CLI, then program the
external flash with STM32_Programmer_CLI and the board's external loader.
`ram`: load the ELF to AXISRAM in development boot. A model in external
flash (firmware-extflash.bin beside the ELF, `hil build` writes it) is
written at the board's model_flash_base with the same loader first. The port is the
ST-LINK's virtual COM port (it stays enumerated).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from harness.drivers.base import Driver, FlashOptions, FlashResult, register, run_tool
from harness.errors import ConfigError, DeviceError, ToolError
from harness.ports import find_usb_port

PROGRAMMER = "STM32_Programmer_CLI"
SIGNER = "STM32_SigningTool_CLI"


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


@register("stm32cubeprogrammer")
class StmProgrammerDriver(Driver):
    def external_loader(self, programmer: str) -> str:
        name = self.board.get("external_loader")
        if not name:
            raise ConfigError(f"board {self.board.id} names no external_loader", "add it to its boards/ file")
        cand = Path(programmer).resolve().parent / "ExternalLoader" / name
        if not cand.is_file():
            raise ToolError(
                f"external loader {name} not found in {cand.parent}",
                "update STM32CubeProgrammer (2.18 or later ships the STM32N6 loaders)",
            )
        return str(cand)

    def commands(
        self, binary: Path, elf: Path, ram: bool, programmer: str, signer: str | None, loader: str | None
    ) -> list[list[str]]:
        connect = ["-c", "port=SWD", "mode=HOTPLUG", "AP=1"]
        # A model linked into the external NOR flash (.hil_model_ext) comes as
        # its own file, written at model_flash_base through the external loader.
        model_bin = elf.with_name("firmware-extflash.bin")
        model = []
        if model_bin.is_file():
            model = [[programmer, *connect, "-el", loader, "-w", str(model_bin), self.board.get("model_flash_base")]]
        if ram:
            # Development boot (BOOT1 switch): load the image part of the ELF
            # to AXISRAM and start it; the model goes to flash first.
            return (
                [*model, [programmer, *connect, "-d", str(binary), "0x34180400", "-s", "0x34180400"]]
                if model
                else [[programmer, *connect, "-d", str(elf), "-s"]]
            )
        signed = binary.with_name(binary.stem + "-trusted.bin")
        flash_base = self.board.get("flash_base", "0x70000000")
        sign = [signer, "-bin", str(binary), "-nk", "-of", "0x80000000", "-t", "fsbl", "-hv", "2.3"]
        return [
            [*sign, "-o", str(signed), "-s"],
            *model,
            [programmer, *connect, "-el", loader, "-hardRst", "-w", str(signed), flash_base],
        ]

    def flash(self, opts: FlashOptions) -> FlashResult:
        elf = self.firmware(opts)
        binary = elf.with_suffix(".bin")
        self.require_firmware(elf if opts.ram else binary)
        self.require_firmware(elf)
        # A dry run shows the plan on a machine without ST's tools.
        programmer = PROGRAMMER if opts.dry_run else st_tool(PROGRAMMER)
        signer = loader = None
        if not opts.ram or elf.with_name("firmware-extflash.bin").is_file():
            signer = SIGNER if opts.dry_run else st_tool(SIGNER)
            loader = self.board.get("external_loader") if opts.dry_run else self.external_loader(programmer)
        commands = self.commands(binary, elf, opts.ram, programmer, signer, loader)
        result = FlashResult(self.board.id, opts.port, commands)
        if opts.dry_run:
            return result
        for cmd in commands:
            run_tool(cmd, "signing" if cmd[0] == signer else "programming the STM32N6")
        if opts.port is None:
            try:
                result.port = find_usb_port(self.board, timeout=5.0)
            except DeviceError:
                result.notes.append("ST-LINK VCP not found; pass --port to hil validate")
        if not opts.ram:
            result.notes.append("set the boot switches to flash boot (BOOT1=0) and reset the board")
        return result
