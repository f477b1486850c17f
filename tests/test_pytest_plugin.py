"""The pytest plugin (harness.pytest_plugin), run with pytester against
simulated boards: pass, drift, unreachable, no board, the marker, JUnit
properties, pytest-xdist over three boards, labgrid's --lg-env beside it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.pytest_plugin import HOWTO, entry_point_installed
from harness.testing.lab import free_port, lab_yaml, write_data
from harness.testing.models import tiny_models

pytestmark = pytest.mark.timeout(300)
# Once tinyhil is installed with its entry point pytest loads the plugin itself; -p would load it twice.
LOAD = [] if entry_point_installed() else ["-p", "harness.pytest_plugin"]
# In-process runs leave labgrid's plugin out: it starts a process-wide step logger once per process
# (the labgrid test runs in a subprocess).
PLUGIN = [*LOAD, "-p", "no:labgrid", "-W", "ignore::pytest.PytestAssertRewriteWarning"]
N_BOARDS = 3
PER_BOARD = 2  # tests per board in the xdist run


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("plugin-models")
    fl = tiny_models()["float_io"]
    return {
        "model": fl,
        "data": write_data(fl, d / "float_io.npz", n=4),
        "tampered": write_data(fl, d / "tampered.npz", n=4, tamper=True),
        "other": tiny_models()["int8_io"],
    }


@pytest.fixture(scope="module")
def shelf(models):
    """Three simulated boards holding float_io on pseudo-terminals, for the whole module."""
    from harness.device.sim import start_sim

    sims = [start_sim(models["model"], listen="pty", baud=0, latency_ms=0, arena_size=8192) for _ in range(N_BOARDS)]
    yield sims
    for s in sims:
        s.close()


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for k in ("HIL_LAB", "HIL_PORT", "HIL_BOARD", "LG_ENV"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HIL_LOCK_DIR", str(tmp_path / "locks"))


@pytest.fixture
def lab(pytester, shelf, tmp_path, clean_env):
    inst = {
        f"sim-{i}": {"board": "sim", "port": s.url, "tags": ["shelf"] + (["odd"] if i % 2 else [])}
        for i, s in enumerate(shelf)
    }
    return lab_yaml(tmp_path / "lab.yaml", inst, lock_dir=tmp_path / "locks")


def test_file(pytester, models, body: str) -> None:
    pytester.makepyfile(
        f"import os, json, pytest\nMODEL = {str(models['model'])!r}\nDATA = {str(models['data'])!r}\n"
        f"TAMPERED = {str(models['tampered'])!r}\nOTHER = {str(models['other'])!r}\n\n" + body
    )


test_file.__test__ = False  # a helper, not a test


# --------------------------------------------------------------------------- outcomes


def test_one_test_runs_on_every_board_and_passes(pytester, models, lab):
    test_file(
        pytester,
        models,
        "def test_model(hil_validate, hil_board):\n"
        "    r = hil_validate(MODEL, DATA, max_lsb=0)\n"
        "    assert r.passed\n"
        "    assert r.board == 'sim' and r.instance == hil_board.name and r.samples_done == 4\n"
        "    assert r.verdict.startswith('the device matches the TFLM kernels') and r.max_lsb == 0\n"
        "    assert r.reports['html'].is_file() and json.loads(r.reports['json'].read_text())['status'] == 'pass'\n",
    )
    r = pytester.runpytest(*PLUGIN, "--hil-lab", str(lab), "-v")
    r.assert_outcomes(passed=N_BOARDS)
    for i in range(N_BOARDS):
        r.stdout.fnmatch_lines([f"*test_model[[]sim-{i}[]] PASSED*"])
    r.stdout.fnmatch_lines(["tinyhil boards: sim-0, sim-1, sim-2"])


def test_drift_fails_with_the_one_line_verdict(pytester, models, lab):
    test_file(
        pytester,
        models,
        "def test_model(hil_validate):\n    assert hil_validate(MODEL, TAMPERED).passed\n",
    )
    r = pytester.runpytest(*PLUGIN, "--hil-lab", str(lab), "--hil-select", "sim-1")
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(
        ["*where False = DRIFT sim-1 [[]sim[]] float_io: cosine_min * < 0.99; max_lsb * > 1 (4/4 samples)*"]
    )
    assert "'gates'" not in r.stdout.str() and "{'" not in r.stdout.str()  # the verdict, not a dict dump


def test_an_unreachable_board_is_an_error_not_a_failure(pytester, models, tmp_path, clean_env):
    dead = lab_yaml(tmp_path / "dead.yaml", {"gone": {"board": "sim", "port": f"socket://127.0.0.1:{free_port()}"}})
    test_file(pytester, models, "def test_model(hil_validate):\n    assert hil_validate(MODEL, DATA).passed\n")
    r = pytester.runpytest(*PLUGIN, "--hil-lab", str(dead), "--junitxml", str(tmp_path / "j.xml"))
    r.assert_outcomes(errors=1)
    r.stdout.fnmatch_lines(["*ERROR at setup of test_model[[]gone[]]*", "board gone: *127.0.0.1*"])
    assert "Traceback" not in r.stdout.str()
    case = ET.parse(tmp_path / "j.xml").getroot().find(".//testcase")
    assert case.find("error") is not None and case.find("failure") is None


def test_a_flash_that_cannot_happen_in_the_test_body_is_an_error(pytester, models, lab):
    # a simulated board is never flashed: it must already hold the model
    test_file(pytester, models, "def test_model(hil_flash):\n    hil_flash(OTHER)\n")
    r = pytester.runpytest(*PLUGIN, "--hil-lab", str(lab), "--hil-select", "sim-0")
    r.assert_outcomes(errors=1)
    r.stdout.fnmatch_lines(["board sim-0: it holds the model *, not int8_io.tflite *and a sim board is not flashed*"])


def test_no_board_configured_skips_with_the_instruction(pytester, models, clean_env):
    test_file(pytester, models, "def test_model(hil_board):\n    pass\n\ndef test_plain():\n    pass\n")
    r = pytester.runpytest(*PLUGIN, "-rs")
    r.assert_outcomes(passed=1, skipped=1)
    r.stdout.fnmatch_lines(["*" + HOWTO[:60] + "*"])
    assert "tinyhil boards" not in r.stdout.str()


def test_the_marker_selects_boards_per_test(pytester, models, lab):
    test_file(
        pytester,
        models,
        "@pytest.mark.hil(tags=['odd'])\ndef test_odd(hil_board):\n    assert hil_board.name == 'sim-1'\n\n"
        "@pytest.mark.hil(instance='sim-[02]', board='s*')\ndef test_even(hil_board):\n    pass\n\n"
        "@pytest.mark.hil(board='nucleo_*')\ndef test_nucleo(hil_board):\n    pass\n",
    )
    r = pytester.runpytest(*PLUGIN, "--hil-lab", str(lab), "-v", "-rs")
    r.assert_outcomes(passed=3, skipped=1)
    r.stdout.fnmatch_lines(["*test_even[[]sim-2[]] PASSED*", "*no configured board matches hil(board='nucleo_*')*"])


def test_hil_session_and_one_port_without_a_lab(pytester, models, shelf, clean_env):
    test_file(
        pytester,
        models,
        "def test_ping(hil_session, hil_board):\n"
        "    assert hil_session.ping(b'tinyhil') == b'tinyhil'\n"
        "    assert hil_session.info.board == hil_board.board == 'sim'\n",
    )
    r = pytester.runpytest(*PLUGIN, "--hil-port", shelf[0].url, "-v")  # the board id comes from the handshake
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(["*test_ping[[]port[]] PASSED*"])


def test_bad_options_are_one_line_usage_errors(pytester, models, tmp_path, clean_env):
    test_file(pytester, models, "def test_model(hil_board):\n    pass\n")
    r = pytester.runpytest(*PLUGIN, "--hil-port", "loop://", "--hil-board", "nosuch")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*unknown board*nosuch*"])
    (tmp_path / "bad.yaml").write_text("instances:\n  a: {board: sim}\n")
    r = pytester.runpytest(*PLUGIN, "--hil-lab", str(tmp_path / "bad.yaml"))
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines([f"*{tmp_path / 'bad.yaml'}:2: instances.a*"])


# --------------------------------------------------------------------------- JUnit


def test_junit_carries_board_firmware_model_verdict_and_report(pytester, models, lab, tmp_path):
    test_file(pytester, models, "def test_model(hil_validate):\n    assert hil_validate(MODEL, DATA).passed\n")
    xml = tmp_path / "hil.xml"
    r = pytester.runpytest(
        *PLUGIN,
        "--hil-lab",
        str(lab),
        "--hil-select",
        "sim-2",
        "--junitxml",
        str(xml),
        "--hil-out",
        str(tmp_path / "reports"),
    )
    r.assert_outcomes(passed=1)
    case = ET.parse(xml).getroot().find(".//testcase")
    assert case.get("name") == "test_model[sim-2]"
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    from harness.model import inspect_model

    assert props["instance"] == "sim-2" and props["board"] == "sim"
    assert props["firmware"].startswith("tinyhil-sim")
    assert props["model_sha256"] == inspect_model(models["model"]).sha256
    assert props["verdict"].startswith("the device matches the TFLM kernels") and props["status"] == "pass"
    html = Path(props["report_html"])
    assert html.is_file() and html.is_relative_to(tmp_path / "reports" / "sim-2")


# --------------------------------------------------------------------------- xdist


def test_xdist_spreads_tests_over_three_boards_one_worker_each_at_a_time(pytester, models, lab, tmp_path):
    pytest.importorskip("xdist", reason="pip install pytest-xdist (the dev extra)")
    log = tmp_path / "events.log"
    test_file(
        pytester,
        models,
        "from harness.lab.lock import lock_path, read_holder\n"
        f"LOG = {str(log)!r}\nLOCKS = {str(tmp_path / 'locks')!r}\n\n"
        "def note(what, board):\n"
        "    with open(LOG, 'a') as f:  # one short O_APPEND write: the file keeps the global order\n"
        "        f.write(f\"{what} {board.name} {os.environ.get('PYTEST_XDIST_WORKER', '-')}\\n\")\n\n"
        f"@pytest.mark.parametrize('k', range({PER_BOARD}))\n"
        "def test_model(hil_validate, hil_board, k):\n"
        "    note('enter', hil_board)\n"
        "    holder = read_holder(lock_path(hil_board.instance.lock_key, __import__('pathlib').Path(LOCKS)))\n"
        "    assert holder['pid'] == os.getpid()\n"
        "    assert hil_validate(MODEL, DATA, samples=2).passed\n"
        "    note('exit', hil_board)\n",
    )
    r = pytester.runpytest_subprocess(
        *PLUGIN, "--hil-lab", str(lab), "-n", "3", "--hil-wait", "120", "-p", "no:cacheprovider"
    )
    r.assert_outcomes(passed=PER_BOARD * N_BOARDS)
    events = [line.split() for line in log.read_text().splitlines()]
    assert len(events) == 2 * PER_BOARD * N_BOARDS
    holder: dict[str, str | None] = {}
    for what, board, worker in events:  # per board: enter, exit, enter, exit ... by the same worker
        if what == "enter":
            assert holder.get(board) is None, f"{worker} entered {board} while {holder[board]} held it"
            holder[board] = worker
        else:
            assert holder[board] == worker
            holder[board] = None
    assert {b for _, b, _ in events} == {f"sim-{i}" for i in range(N_BOARDS)}
    assert len({w for _, _, w in events}) > 1  # more than one worker did the work


# --------------------------------------------------------------------------- inert, registered


def test_the_plugin_is_inert_without_options(pytester):
    pytester.makepyfile(
        "import sys\n"
        "def test_nothing_heavy_loaded():\n"
        "    heavy = {'tensorflow', 'harness.validate', 'harness.lab.run', 'harness.pytest_plugin.rig'}\n"
        "    assert not heavy & set(sys.modules), heavy & set(sys.modules)\n"
    )
    r = pytester.runpytest_subprocess(*LOAD, "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1)
    assert "tinyhil" not in r.stdout.str()
    help_ = pytester.runpytest(*PLUGIN, "--help")
    help_.stdout.fnmatch_lines(["*--hil-lab=LAB*", "*--hil-port=URL*", "*--hil-wait=SECONDS*"])


def test_the_pytest11_entry_point_names_the_plugin():
    import importlib

    import tomllib

    root = Path(__file__).resolve().parents[1]
    eps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"]["pytest11"]
    assert eps == {"tinyhil": "harness.pytest_plugin"}
    mod = importlib.import_module(eps["tinyhil"])
    assert callable(mod.pytest_addoption) and callable(mod.hil_board)
    assert "pytest-xdist" in " ".join(
        tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    )


# --------------------------------------------------------------------------- labgrid


def test_a_labgrid_target_with_the_tinyhil_driver_is_a_hil_board(pytester, models, shelf, tmp_path, clean_env):
    pytest.importorskip("labgrid", reason="labgrid is not installed: pip install 'tinyhil[labgrid]'")
    env = tmp_path / "env.yaml"
    env.write_text(
        "imports: [harness.lab.labgrid_driver]\n"
        "targets:\n"
        f"  main:\n    resources:\n      RawSerialPort: {{port: {shelf[1].url}, speed: 115200}}\n"
        "    drivers:\n      TinyhilDriver: {board: sim}\n      TinyhilStrategy: {}\n"
        f"  console:\n    resources:\n      RawSerialPort: {{port: {shelf[2].url}}}\n"
        "    drivers:\n      SerialDriver: {}\n"
    )
    test_file(
        pytester,
        models,
        "def test_model(hil_validate, hil_board, target):\n"
        "    assert target.name == 'main' and hil_board.url == target.get_driver('TinyhilDriver').url()\n"
        "    assert hil_validate(MODEL, DATA, max_lsb=0).passed\n",
    )
    r = pytester.runpytest_subprocess(*LOAD, "--lg-env", str(env), "-v", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1)  # the console target holds no TinyhilDriver: no test for it
    r.stdout.fnmatch_lines(["*test_model[[]main[]] PASSED*"])
