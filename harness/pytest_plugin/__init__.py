"""tinyhil's pytest plugin: one test function, run on every board of a lab.

    def test_kws(hil_validate):
        result = hil_validate("kws.tflite", "kws_validation_data.npz", max_lsb=0)
        assert result.passed            # fails with the one-line verdict

    pytest --hil-lab lab.yaml [--hil-select 'tag:nightly'] [-n 4] --junitxml=hil.xml

Registered through the `pytest11` entry point `tinyhil`; it does nothing —
imports nothing heavy, prints nothing — until a board is configured
(--hil-lab, --hil-port, or a labgrid --lg-env whose target holds a
TinyhilDriver). docs/pytest.md has the reference; the work itself is the lab
layer's (harness.lab), called from harness.pytest_plugin.rig.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HOWTO = (
    "no tinyhil board configured: pass --hil-lab LAB.yaml [--hil-select PATTERN|tag:T], "
    "or --hil-port URL --hil-board ID (or set HIL_LAB / HIL_PORT, HIL_BOARD), "
    "or --lg-env ENV.yaml with a target holding a TinyhilDriver (docs/pytest.md)"
)
MARKER = (
    "hil(board=GLOB, instance=GLOB, tags=[...]): run this test only on the tinyhil boards whose board id "
    "and instance name match the globs and that have every tag"
)
MARKER_KEYS = {"board", "instance", "tags"}


class HilBoardError(Exception):
    """A board could not be reached, flashed or validated: the test is an
    ERROR (could not run), never a FAIL. One line: what, then what to do."""

    def __init__(self, message: str, hint: str | None = None, result=None):
        super().__init__(f"{message} — {hint}" if hint else message)
        self.message, self.hint, self.result = message, hint, result

    @classmethod
    def of(cls, who: str, exc: BaseException) -> HilBoardError:
        from harness.errors import HilError

        if isinstance(exc, HilError):
            return cls(f"{who}: {exc.message}", exc.hint)
        return cls(f"{who}: {type(exc).__name__}: {exc}", "check the board and its port; run again with -v")


_SETTINGS = pytest.StashKey[dict]()
_RIG = pytest.StashKey[object]()


def pytest_addoption(parser):
    g = parser.getgroup("tinyhil", "tinyhil boards (hardware-in-the-loop; docs/pytest.md)")
    g.addoption("--hil-lab", metavar="LAB", help="lab file: the tests run on its instances (default $HIL_LAB)")
    g.addoption(
        "--hil-select",
        action="append",
        metavar="PATTERN",
        help="only these instances of the lab: a name glob or tag:T (repeatable)",
    )
    g.addoption("--hil-port", metavar="URL", help="one board at this pyserial URL (default $HIL_PORT)")
    g.addoption("--hil-board", metavar="ID", help="the board id of --hil-port (default $HIL_BOARD; else its handshake)")
    g.addoption("--hil-out", metavar="DIR", help="write each validation's JSON/HTML/JUnit reports under DIR")
    g.addoption("--hil-wait", type=float, default=0.0, metavar="SECONDS", help="wait up to SECONDS for a busy board")


def _settings(config) -> dict:
    """Where the boards come from: {"lab": path} | {"port": url, "board": id} | {} (labgrid or none)."""
    o = config.option
    if o.hil_lab and o.hil_port:
        raise pytest.UsageError("--hil-lab and --hil-port are two ways to name boards: give one")
    lab = o.hil_lab or (None if o.hil_port else os.environ.get("HIL_LAB"))
    port = o.hil_port or (None if o.hil_lab else os.environ.get("HIL_PORT"))
    if lab and port:
        raise pytest.UsageError("HIL_LAB and HIL_PORT are both set: pass --hil-lab or --hil-port")
    if o.hil_board and not port:
        raise pytest.UsageError("--hil-board names the board of --hil-port URL: pass both (a lab file names its own)")
    if o.hil_select and not lab:
        raise pytest.UsageError("--hil-select picks instances of a lab file: pass --hil-lab LAB too")
    if o.hil_wait < 0:
        raise pytest.UsageError(f"--hil-wait {o.hil_wait:g} must be 0 or more seconds")
    if lab:
        return {"lab": lab, "select": o.hil_select}
    if port:
        return {"port": port, "board": o.hil_board or os.environ.get("HIL_BOARD") or None}
    return {}


def pytest_configure(config):
    config.addinivalue_line("markers", MARKER)
    s = config.stash[_SETTINGS] = _settings(config)
    if s:  # a bad lab file or board id stops the run at once, in one line
        from harness.errors import HilError

        try:
            _rig(config)
        except HilError as exc:
            raise pytest.UsageError(str(exc)) from None


def _rig(config):
    """The session's `Rig`, made on first use; None when no board is configured."""
    if _RIG in config.stash:
        return config.stash[_RIG]
    s = config.stash.get(_SETTINGS, None)
    if s is None:
        return None
    rig = None
    if s.get("lab") or s.get("port"):
        from harness.pytest_plugin.rig import Rig, lab_targets, port_target

        if s.get("lab"):
            lab, targets = lab_targets(s["lab"], s.get("select"))
            rig = Rig(lab=lab, targets=targets, wait=config.option.hil_wait)
        else:
            rig = Rig(targets=[port_target(s["port"], s.get("board"))], wait=config.option.hil_wait)
    else:
        env = _labgrid_env(config)
        if env is not None:
            from harness.pytest_plugin.rig import Rig, labgrid_targets

            targets = labgrid_targets(env)
            rig = Rig(targets=targets, lg_env=env, wait=config.option.hil_wait) if targets else None
    if rig is not None:
        config.add_cleanup(rig.close)
    config.stash[_RIG] = rig
    return rig


def _labgrid_env(config):
    """labgrid's environment (`--lg-env` / LG_ENV), when its plugin made one."""
    if not (getattr(config.option, "lg_env", None) or os.environ.get("LG_ENV")):
        return None
    try:
        from labgrid.pytestplugin.hooks import LABGRID_ENV_KEY
    except ImportError:
        return None
    return config.stash.get(LABGRID_ENV_KEY, None)


def pytest_report_header(config):
    rig = config.stash.get(_RIG, None)
    if rig is not None:
        names = ", ".join(t.name for t in rig.targets)
        return f"tinyhil boards: {names}"
    return None


def _marker_filter(definition):
    board = instance = None
    tags: list[str] = []
    for m in definition.iter_markers("hil"):
        unknown = set(m.kwargs) - MARKER_KEYS
        if m.args or unknown:
            raise pytest.UsageError(f"{definition.nodeid}: {MARKER}")
        board = m.kwargs.get("board", board)
        instance = m.kwargs.get("instance", instance)
        t = m.kwargs.get("tags", ())
        tags += [t] if isinstance(t, str) else list(t)
    return board, instance, tags


def pytest_generate_tests(metafunc):
    """One test per selected board: `hil_board` parametrized over them (ids are the instance names)."""
    if "hil_board" not in metafunc.fixturenames:
        return
    rig = _rig(metafunc.config)
    if rig is None:
        return  # hil_board skips with the instruction
    board, instance, tags = _marker_filter(metafunc.definition)
    chosen = [t for t in rig.targets if t.matches(board, instance, tags)]
    xdist = metafunc.config.pluginmanager.hasplugin("xdist")
    params = [
        # --dist loadgroup keeps one board's tests on one worker; the locks make any other split safe
        pytest.param(t, id=t.name, marks=[pytest.mark.xdist_group(f"hil-{t.name}")] if xdist else [])
        for t in chosen
    ]
    if not params:
        want = ", ".join(
            f"{k}={v!r}" for k, v in (("board", board), ("instance", instance), ("tags", tags or None)) if v
        )
        reason = f"no configured board matches hil({want}); boards: {', '.join(t.name for t in rig.targets)}"
        params = [pytest.param(None, id="no-board", marks=pytest.mark.skip(reason=reason))]
    metafunc.parametrize("hil_board", params, indirect=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    exc = call.excinfo.value if call.excinfo is not None else None
    if isinstance(exc, HilBoardError):
        rep = outcome.get_result()
        rep.longrepr = str(exc)
        # Could not run is an ERROR (pytest's word for a failure outside the test's own
        # call), also when the test body asked for the flash or the validation.
        if rep.when == "call":
            rep.when = "setup"


# --------------------------------------------------------------------------- fixtures


def _record(node, **props) -> None:
    """Properties of the test case in the JUnit XML (once each)."""
    have = set(node.user_properties)
    for k, v in props.items():
        if v is not None and (k, str(v)) not in have:
            node.user_properties.append((k, str(v)))


@pytest.fixture
def hil_board(request):
    """One board of the lab, locked for this test (the test runs once per selected board)."""
    rig = _rig(request.config)
    if rig is None:
        pytest.skip(HOWTO)
    target = getattr(request, "param", None)
    if target is None:
        pytest.skip("hil_board is parametrized over the boards: name it in the test's arguments")
    with rig.hold(target, wait=request.config.option.hil_wait) as board:
        _record(
            request.node,
            instance=board.name,
            board=board.board,
            port=board.url,
            firmware=board.firmware,
            model_sha256=board.model_sha256,
        )
        yield board


@pytest.fixture
def hil_flash(hil_board, request):
    """`hil_flash(model)`: the board, holding `model` (built and flashed at
    most once a session per board and model; a simulated board is checked)."""
    rig = hil_board.rig

    def flash(model):
        b = rig.ensure(hil_board, model)
        _record(request.node, firmware=b.firmware, model_sha256=b.model_sha256)
        return b

    return flash


@pytest.fixture
def hil_validate(hil_board, hil_flash, request, tmp_path_factory):
    """`hil_validate(model, data, *, samples=None, reference="tflm", timeout=2.0,
    retries=5, min_cosine=…, max_lsb=…, min_top1=…)`: a `HilResult`."""
    from harness.pytest_plugin.rig import safe_name, validate_on
    from harness.results import Status

    base = Path(request.config.option.hil_out) if request.config.option.hil_out else None
    base = base or tmp_path_factory.getbasetemp() / "hil-reports"
    used: set[Path] = set()

    def run(model, data, **kw):
        hil_flash(model)
        out = base / safe_name(hil_board.name) / safe_name(request.node.name) / safe_name(Path(model).stem)
        k, first = 2, out
        while out in used:
            out, k = first.with_name(f"{first.name}-{k}"), k + 1
        used.add(out)
        result = validate_on(hil_board, model, data, out, **kw)
        _record(
            request.node,
            firmware=result.firmware,
            model_sha256=result.model_sha256,
            status=str(result.status),
            verdict=result.verdict,
            summary=result.summary,
            report_html=result.reports["html"].resolve(),
        )
        if result.status not in (Status.PASS, Status.FAIL):
            raise HilBoardError(result.summary, result=result)
        return result

    return run


@pytest.fixture
def hil_session(hil_board):
    """The protocol session on the board (handshake done): ping, infer, latency."""
    from harness.errors import HilError

    s = hil_board.session()
    try:
        s.handshake()
    except HilError as exc:
        s.close()
        raise HilBoardError.of(f"board {hil_board.name}", exc) from None
    yield s
    s.close()


def entry_point_installed() -> bool:
    """Whether tinyhil is installed with its `pytest11` entry point (pytest then
    loads the plugin by itself; `-p harness.pytest_plugin` would load it twice)."""
    from importlib.metadata import entry_points

    return any(e.value == __name__ for e in entry_points(group="pytest11") if e.name == "tinyhil")
