"""STM32N6: the NPU channel rule, the STM32CubeN6 tree, where a model goes,
the programmer's plan for a model in external flash, and (with the trees)
both envs built against ST's HAL with a model in each placement."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from harness import build as hb
from harness import npu, stm32cube
from harness.boards import load_board
from harness.drivers.base import FlashOptions
from harness.drivers.stm_programmer import StmProgrammerDriver
from harness.errors import ConfigError
from harness.testing.models import tiny_models

N6_BOARDS = ["nucleo_n657x0_q", "stm32n6570_dk"]


def test_npu_warns_per_layer_whose_channels_are_not_a_multiple_of_8():
    data = tiny_models()["int8_io"].read_bytes()  # Dense 300 -> 16 -> 5
    issues = npu.channel_issues(data)
    assert {(i.op, i.tensor, i.channels) for i in issues} == {
        ("FULLY_CONNECTED", "input", 300),
        ("FULLY_CONNECTED", "output", 5),
    }
    warnings = npu.npu_warnings(data, load_board("stm32n6570_dk"))
    assert len(warnings) == 2 and all("multiple of 8" in w and "software" in w for w in warnings)
    assert npu.npu_warnings(data, load_board("qemu_m55")) == []  # no NPU there


def test_codegen_for_an_stm32n6_board_carries_the_npu_warnings(tmp_path):
    from harness import codegen

    res = codegen.generate(tiny_models()["int8_io"], tmp_path / "gen", board="nucleo_n657x0_q")
    assert sum("STM32N6 NPU" in w for w in res.warnings) == 2
    res = codegen.generate(tiny_models()["int8_io"], tmp_path / "gen2", board="qemu_m55")
    assert not any("NPU" in w for w in res.warnings)


def test_a_folder_that_is_not_an_stm32cube_tree_says_how_to_get_one(tmp_path):
    with pytest.raises(ConfigError, match="not an STM32CubeN6 tree") as exc:
        stm32cube.check_tree(tmp_path, "nucleo")
    assert stm32cube.ENV_VAR in exc.value.hint
    with pytest.raises(ConfigError, match="no STM32CubeN6 tree"):
        stm32cube.check_tree(None, "dk")
    (tmp_path / stm32cube.MARKER).parent.mkdir(parents=True)
    (tmp_path / stm32cube.MARKER).write_text("")
    with pytest.raises(ConfigError, match="lacks") as exc:
        stm32cube.check_tree(tmp_path, "dk")
    assert "submodule" in exc.value.hint


def test_model_placement_follows_the_board_json(tmp_path):
    board = load_board("nucleo_n657x0_q")
    limit = board.get("image_model_max_bytes")
    small, big = tmp_path / "small.tflite", tmp_path / "big.tflite"
    small.write_bytes(b"\0" * limit)
    big.write_bytes(b"\0" * (limit + 1))
    assert hb.model_placement(board, small) == "image"
    assert hb.model_placement(board, big) == "external flash"
    assert hb.model_placement(load_board("qemu_m55"), big) == "image"


def test_clock_in_the_json_is_the_one_the_firmware_sets():
    # board_stm32n6.cc builds only for these two (#error otherwise).
    assert load_board("nucleo_n657x0_q").cpu_hz == 600_000_000  # ST's Nucleo template
    assert load_board("stm32n6570_dk").cpu_hz == 800_000_000  # ST's DK template, overdrive


def test_flash_plan_writes_an_external_model_with_the_loader(tmp_path):
    elf = tmp_path / "firmware.elf"
    for name in ("firmware.elf", "firmware.bin", "firmware-extflash.bin"):
        (tmp_path / name).write_bytes(b"\0")
    board = load_board("stm32n6570_dk")
    drv = StmProgrammerDriver(board)
    res = drv.flash(FlashOptions(elf=elf, dry_run=True))
    flat = [" ".join(c) for c in res.commands]
    model = [c for c in flat if "firmware-extflash.bin" in c]
    assert len(model) == 1 and "-el MX66UW1G45G_STM32N6570-DK.stldr" in model[0]
    assert model[0].endswith(board.get("model_flash_base"))
    assert flat.index(model[0]) < len(flat) - 1  # before the image and its reset
    ram = [" ".join(c) for c in drv.flash(FlashOptions(elf=elf, ram=True, dry_run=True)).commands]
    assert "firmware-extflash.bin" in ram[0] and "firmware.bin 0x34180400" in ram[1]
    (tmp_path / "firmware-extflash.bin").unlink()
    ram = [" ".join(c) for c in drv.flash(FlashOptions(elf=elf, ram=True, dry_run=True)).commands]
    assert len(ram) == 1 and "-d " + str(elf) in ram[0]


# --------------------------------------------------------------------------- real builds


def _trees():
    need = {
        "HIL_TFLM_M55_DIR": "a CMSIS-NN Cortex-M55 tree from TFLM's create_tflm_tree.py",
        stm32cube.ENV_VAR: "an STM32CubeN6 tree with its submodules (see docs/build.md)",
    }
    missing = [f"{k}=/path/to/{v}" for k, v in need.items() if not os.environ.get(k)]
    if missing:
        pytest.skip("set " + "; ".join(missing) + " to build the STM32N6 firmware")
    if not shutil.which("arm-none-eabi-gcc"):
        pytest.skip("arm-none-eabi-gcc is not installed: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi")
    return os.environ["HIL_TFLM_M55_DIR"]


@pytest.fixture(scope="module")
def big_model(tmp_path_factory):
    """~600 KB of int8 weights: more than the 511 KB image."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    tf.keras.utils.set_random_seed(5)
    inp = tf.keras.Input((1024,), batch_size=1)
    out = tf.keras.layers.Dense(600)(inp)
    rng = np.random.default_rng(0)
    conv = tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, out))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rng.normal(size=(1, 1024)).astype(np.float32)] for _ in range(8))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path = tmp_path_factory.mktemp("big") / "big.tflite"
    path.write_bytes(conv.convert())
    assert path.stat().st_size > 511 * 1024
    return path


@pytest.mark.tflm
@pytest.mark.parametrize("board", N6_BOARDS)
def test_stm32n6_links_against_stm32cube_with_the_model_in_the_image(tmp_path, board):
    tree = _trees()
    res = hb.build(board, tiny_models()["int8_io"], tflm_dir=tree, out=tmp_path)
    assert res.model_placement == "image" and res.model_section == ".hil_model"
    assert 0x34180400 <= res.model_address < 0x34180400 + 511 * 1024
    link_map = (tmp_path / "firmware.map").read_text()
    # ST's drivers are in the link: the clock set-up and the UART init.
    for fn in ("HAL_RCC_ClockConfig", "HAL_RCC_OscConfig", "HAL_UART_Init", "SystemInit"):
        assert re.search(rf"\.text\.{fn}\s", link_map), fn
    assert not (tmp_path / "firmware-extflash.bin").exists()
    # The image the boot ROM loads: vectors first at 0x34180400, the stack in AXISRAM1; its first word
    # is the initial stack pointer, the second the reset handler (Thumb bit set).
    nm = subprocess.run(["arm-none-eabi-nm", str(res.elf)], capture_output=True, text=True, check=True).stdout
    syms = {ln.split()[2]: int(ln.split()[0], 16) for ln in nm.splitlines() if len(ln.split()) == 3}
    assert syms["g_hil_vectors"] == 0x34180400
    assert 0x34000000 <= syms["__stack_top"] <= 0x34100000
    words = res.elf.with_suffix(".bin").read_bytes()[:8]
    assert int.from_bytes(words[:4], "little") == syms["__stack_top"]
    assert int.from_bytes(words[4:8], "little") == syms["Reset_Handler"] | 1


@pytest.mark.tflm
@pytest.mark.parametrize("board", N6_BOARDS)
def test_stm32n6_puts_a_model_larger_than_the_image_in_external_flash(tmp_path, board, big_model):
    tree = _trees()
    res = hb.build(board, big_model, tflm_dir=tree, out=tmp_path)
    assert res.model_placement == "external flash" and res.model_section == ".hil_model_ext"
    assert res.model_address >= 0x70100000 and res.model_size > 511 * 1024
    assert res.flash_used <= res.flash_limit  # the image holds code only
    link_map = (tmp_path / "firmware.map").read_text()
    m = re.search(r"^\.hil_model_ext\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)", link_map, re.M)
    assert m and int(m.group(1), 16) == 0x70100000 and int(m.group(2), 16) >= res.model_size
    assert re.search(r"\.text\.BSP_XSPI_NOR_EnableMemoryMappedMode\s", link_map)
    ext = tmp_path / "firmware-extflash.bin"
    assert ext.stat().st_size >= res.model_size
    assert (tmp_path / "firmware.bin").stat().st_size < 511 * 1024  # no gap up to 0x70100000
