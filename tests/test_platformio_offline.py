"""Offline PlatformIO: the tool-scons package, the hil-offline platform and
real builds of tiny programs through it (host, QEMU Cortex-M55, STM32N6),
with the QEMU one booted: UART out and in, FPU after CPACR, semihosting exit."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from harness import pio
from harness.paths import boards_dir, firmware_dir

FW = firmware_dir()
needs_pio = pytest.mark.skipif(shutil.which("pio") is None, reason="PlatformIO not installed: pip install platformio")
needs_arm = pytest.mark.skipif(
    shutil.which("arm-none-eabi-g++") is None, reason="arm-none-eabi-g++ missing: apt-get install gcc-arm-none-eabi"
)
needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None, reason="qemu-system-arm missing: apt-get install qemu-system-arm"
)

HELLO_CM = r"""
#include <cstring>
#include "hil_board.h"
int main() {
  hil::board::Init();
  // Wait for the host's first byte: QEMU drops what the UART sends before a
  // client is connected to its socket.
  uint8_t go = 0;
  const uint32_t w0 = hil::board::MicrosNow();
  while (hil::board::Read(&go, 1) == 0 && hil::board::MicrosNow() - w0 < 20000000u) {
  }
  volatile float x = 1.5f;
  const int v = static_cast<int>(x * x * 100.0f);  // FPU: faults unless CPACR is set
  char msg[64] = "hello ";
  std::strcat(msg, hil::board::BoardId());
  const size_t n = std::strlen(msg);
  msg[n] = ' '; msg[n + 1] = '0' + v / 100 % 10; msg[n + 2] = '0' + v / 10 % 10;
  msg[n + 3] = '0' + v % 10; msg[n + 4] = '\n';
  hil::board::Write(reinterpret_cast<const uint8_t*>(msg), n + 5);
  uint8_t buf[16];
  size_t got = 0;
  const uint32_t t0 = hil::board::MicrosNow();
  while (got < 4 && hil::board::MicrosNow() - t0 < 20000000u) got += hil::board::Read(buf + got, 4 - got);
  hil::board::Write(buf, got);
  hil::board::Halt(got == 4 ? 7 : 9);
}
"""

HELLO_HOST = r"""
#include <cstdio>
int main() { std::printf("hello host\n"); return 3; }
"""


@pytest.fixture(scope="session")
def pio_cache(tmp_path_factory):
    """An isolated harness cache (PlatformIO core dir) for the whole session."""
    cache = tmp_path_factory.mktemp("hilcache")
    mp = pytest.MonkeyPatch()
    mp.setenv("HIL_CACHE_DIR", str(cache))
    yield cache
    mp.undo()


@pytest.fixture(scope="session")
def hello_project(tmp_path_factory, pio_cache):
    """A tiny PlatformIO project using the repo's platform, board manifests and board glue."""
    if shutil.which("pio") is None:
        pytest.skip("PlatformIO not installed: pip install platformio")
    pio.ensure_offline_platformio()
    proj = tmp_path_factory.mktemp("hello")
    (proj / "src").mkdir()
    shutil.copytree(FW / "src" / "boards", proj / "src" / "boards")
    (proj / "src" / "hello.cc").write_text(HELLO_CM)
    (proj / "host").mkdir()
    (proj / "host" / "hello_host.cc").write_text(HELLO_HOST)
    platform = f"symlink://{FW / 'platforms' / 'hil-offline'}"
    inc = f"-I{FW / 'include'}"
    (proj / "platformio.ini").write_text(f"""
[platformio]
boards_dir = {boards_dir() / "pio"}

[env]
platform = {platform}
custom_hil_tflm = no

[env:native]
build_src_filter = -<*>
build_flags = -I{proj / "host"}
extra_scripts = pre:add_host.py

[env:qemu_m55]
board = hil_mps3_an547
custom_hil_board = qemu_m55
extra_scripts = pre:{FW / "scripts" / "hil_board.py"}
board_build.ldscript = {FW / "src/boards/qemu_m55/qemu_m55.ld"}
build_flags = {inc}
build_src_filter = +<*> -<boards/> +<boards/cortex_m/> +<boards/qemu_m55/>

[env:nucleo_n657x0_q]
board = hil_nucleo_n657x0_q
custom_hil_board = nucleo_n657x0_q
extra_scripts = pre:{FW / "scripts" / "hil_board.py"}
board_build.ldscript = {FW / "src/boards/stm32n6/stm32n6.ld"}
build_flags = {inc}
build_src_filter = +<*> -<boards/> +<boards/cortex_m/> +<boards/stm32n6/>
""")
    # The host program lives outside src/ so the Cortex-M sources stay out of it.
    (proj / "add_host.py").write_text(
        'Import("env")\nimport os\n'
        'env.BuildSources(os.path.join("$BUILD_DIR", "host"), os.path.join("$PROJECT_DIR", "host"))\n'
    )
    return proj


def _pio_run(proj: Path, env: str) -> subprocess.CompletedProcess:
    proc = pio.run_pio(["run", "-d", str(proj), "-e", env], timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


# --------------------------------------------------------------------------- config


def test_platformio_ini_parses_and_has_every_board_env():
    from platformio.project.config import ProjectConfig

    cfg = ProjectConfig(str(FW / "platformio.ini"))
    envs = set(cfg.envs())
    assert {"native", "qemu_m55", "nucleo_n657x0_q", "stm32n6570_dk", "nano33ble"} <= envs
    for board_file in boards_dir().glob("*.json"):
        board = json.loads(board_file.read_text())
        if board.get("pio_env"):
            assert board["pio_env"] in envs, board_file.name
            if board.get("pio_board"):
                assert cfg.get(f"env:{board['pio_env']}", "board") == board["pio_board"]
                assert (boards_dir() / "pio" / f"{board['pio_board']}.json").is_file()
    assert cfg.get("env:qemu_m55", "platform").startswith("symlink://")
    # The Nano takes TFLM from the local tree, nothing from the library registry.
    assert "lib_deps" not in cfg.options("env:nano33ble")
    assert "pre:scripts/hil_tflm_lib.py" in cfg.get("env:nano33ble", "extra_scripts")


def test_offline_platform_manifest():
    plat = FW / "platforms" / "hil-offline"
    manifest = json.loads((plat / "platform.json").read_text())
    assert manifest["name"] == "hil-offline" and manifest["packages"] == {}
    assert "HilofflinePlatform" in (plat / "platform.py").read_text()


# --------------------------------------------------------------------------- tool-scons


@needs_pio
def test_ensure_offline_platformio_installs_tool_scons_as_platformio_owned(pio_cache):
    core = pio.ensure_offline_platformio()
    record = json.loads((core / "packages" / "tool-scons" / ".piopm").read_text())
    assert record["version"] == pio.SCONS_PACKAGE_VERSION
    assert record["spec"]["owner"] == "platformio" and record["spec"]["name"] == "tool-scons"
    # PlatformIO itself now resolves its core package to ours.
    code = (
        "from platformio.package.manager.core import get_core_package_dir as g;"
        "print(g('tool-scons', auto_install=False))"
    )
    out = subprocess.run(["python", "-c", code], env=pio.pio_env(), capture_output=True, text=True)
    assert Path(out.stdout.strip()) == core / "packages" / "tool-scons"
    # Idempotent: a second call does not reinstall.
    mtime = (core / "packages" / "tool-scons" / ".piopm").stat().st_mtime_ns
    pio.ensure_offline_platformio(run=lambda *a, **k: pytest.fail("reinstalled"))
    assert (core / "packages" / "tool-scons" / ".piopm").stat().st_mtime_ns == mtime


def test_pio_env_is_isolated_and_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HIL_CACHE_DIR", str(tmp_path))
    env = pio.pio_env({"PATH": "/usr/bin"})
    assert env["PLATFORMIO_CORE_DIR"] == str(tmp_path / "platformio")
    assert env["PLATFORMIO_SETTING_ENABLE_TELEMETRY"] == "no"
    assert env["PLATFORMIO_BUILD_CACHE_DIR"] == str(tmp_path / "pio-build-cache")


# --------------------------------------------------------------------------- builds


@needs_pio
def test_native_program_builds_offline_and_runs(hello_project):
    _pio_run(hello_project, "native")
    prog = hello_project / ".pio" / "build" / "native" / "program"
    out = subprocess.run([str(prog)], capture_output=True, text=True)
    assert (out.returncode, out.stdout) == (3, "hello host\n")


# The STM32N6 image layout (vectors first at 0x34180400) is checked on the real build, on ST's HAL:
# tests/test_stm32n6.py.


@needs_pio
@needs_arm
@needs_qemu
def test_qemu_m55_program_boots_talks_and_exits(hello_project):
    from harness.device.qemu import QemuM55

    _pio_run(hello_project, "qemu_m55")
    elf = hello_project / ".pio" / "build" / "qemu_m55" / "program.elf"
    with QemuM55(elf) as dev:
        assert dev.url.startswith("socket://127.0.0.1:")
        with socket.create_connection((dev.host, dev.port), timeout=10) as s:
            s.settimeout(10)
            s.sendall(b"!")  # go: the greeting comes once we are listening
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(64)
                assert chunk, f"QEMU closed the link after {data!r}"
                data += chunk
            assert data == b"hello qemu_m55 225\n"
            s.sendall(b"ping")
            echo = b""
            while len(echo) < 4:
                chunk = s.recv(64)
                assert chunk, f"QEMU closed the link after {echo!r}"
                echo += chunk
            assert echo == b"ping"
        assert dev.wait(timeout=20) == 7  # semihosting SYS_EXIT_EXTENDED carried the code


@needs_pio
@needs_arm
def test_builder_reports_a_missing_tflm_tree(hello_project, tmp_path):
    ini = (hello_project / "platformio.ini").read_text()
    proj = tmp_path / "needs_tflm"
    shutil.copytree(hello_project, proj, ignore=shutil.ignore_patterns(".pio"))
    (proj / "platformio.ini").write_text(ini.replace("custom_hil_tflm = no", "custom_hil_tflm = yes"))
    proc = pio.run_pio(["run", "-d", str(proj), "-e", "qemu_m55"], env_extra={"HIL_TFLM_DIR": ""})
    assert proc.returncode != 0
    assert "set HIL_TFLM_DIR" in proc.stdout + proc.stderr
