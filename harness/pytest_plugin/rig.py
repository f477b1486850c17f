"""What the pytest plugin does with a board: the targets a run may use, one
board held for one test (lock, reach, handshake), the firmware it holds
(built and flashed once per session per board and model), and the typed
result of a validation. Imported only when a test uses a board.

The work is the lab layer's (harness.lab: lock, reach, flash_instance,
handshake); this module only keeps a pytest session's state around it.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.boards import load_board
from harness.build import build
from harness.drivers import driver_for
from harness.errors import ConfigError, DeviceError, HilError
from harness.lab.check import handshake
from harness.lab.labfile import Instance, load_lab
from harness.lab.labgrid import LabgridClient
from harness.lab.lock import BoardLock
from harness.lab.run import _LocalReach, flash_instance
from harness.model import inspect_model
from harness.protocol.session import DeviceSession
from harness.pytest_plugin import HilBoardError
from harness.report import write_html, write_json, write_junit
from harness.results import Status
from harness.validate import Gates, validate

HANDSHAKE_TIMEOUT_S = 1.0
HANDSHAKE_RETRIES = 3
SHORT = {"tflm": "TFLM", "litert_ref": "LiteRT reference", "litert": "LiteRT"}

# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """A board one test may run on: a lab instance, the one --hil-port board,
    or a labgrid environment's target that holds a TinyhilDriver."""

    name: str
    board: str | None  # None: the one --hil-port board without --hil-board (the handshake says)
    tags: tuple[str, ...] = ()
    instance: object = None  # harness.lab.labfile.Instance (lab file and --hil-port)
    lg_target: str | None = None  # labgrid environment target name

    def matches(self, board: str | None, instance: str | None, tags) -> bool:
        import fnmatch

        if board is not None and not (self.board and fnmatch.fnmatchcase(self.board, board)):
            return False
        if instance is not None and not fnmatch.fnmatchcase(self.name, instance):
            return False
        return all(t in self.tags for t in tags)


def lab_targets(lab_path: str, select: list[str] | None) -> tuple[object, list[Target]]:

    lab = load_lab(lab_path)
    return lab, [Target(i.name, i.board, i.tags, instance=i) for i in lab.select(select or None)]


def port_target(port: str, board: str | None) -> Target:

    if board is not None:
        load_board(board)  # an unknown id is a usage error now, not per test
    inst = Instance(name=board or "port", board=board or "sim", port=port)
    return Target(inst.name, board, (), instance=inst)


def labgrid_targets(env) -> list[Target]:
    """The targets of a labgrid environment whose drivers include TinyhilDriver."""
    out = []
    for name, cfg in (env.config.get_targets() or {}).items():
        drivers = (cfg or {}).get("drivers") or {}
        entries = drivers if isinstance(drivers, list) else [{k: v} for k, v in drivers.items()]
        for entry in entries:
            for cls, args in (entry or {}).items():
                if cls == "TinyhilDriver":
                    out.append(Target(name, (args or {}).get("board", "sim"), (), lg_target=name))
    return out


# --------------------------------------------------------------------------- the result


@dataclass(repr=False)
class HilResult:
    """The outcome of `hil_validate`. `assert result.passed` fails with
    `summary`, the one-line verdict (it is also the repr)."""

    status: Status
    instance: str
    board: str | None
    firmware: str | None
    model: str
    model_sha256: str | None
    samples_done: int
    samples_planned: int
    outputs: list[dict]  # per output: float metrics, LSB section, classifier (docs/validate.md)
    gates: list  # harness.results.GateResult
    verdict: str | None  # triangulation: whose drift it is
    triangulation: dict | None
    timing: dict | None
    duration_s: float | None
    reports: dict[str, Path]
    report: object  # the harness.results.ValidationReport
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS

    @property
    def cosine_min(self) -> float | None:
        v = [o["float"]["cosine_min"] for o in self.outputs if (o.get("float") or {}).get("cosine_min") is not None]
        return min(v) if v else None

    @property
    def max_lsb(self) -> int | None:
        v = [o["lsb"]["max_lsb"] for o in self.outputs if o.get("lsb")]
        return max(v) if v else None

    @property
    def attribution(self) -> str | None:
        """The triangulation verdict, short: whose drift it is."""
        tri = self.triangulation or {}
        if not tri.get("samples"):
            return None
        matches, oracle = tri.get("matches") or [], tri.get("oracle")
        if oracle in matches:
            return f"bit-exact to {SHORT[oracle]}: no drift of its own"
        if matches:
            names = ", ".join(SHORT.get(k, k) for k in matches)
            return (
                f"matches {names}, not {SHORT.get(oracle, oracle)} (the oracle): a kernel difference, not the device's"
            )
        return "matches no host kernels: the drift is the device's own"

    @property
    def summary(self) -> str:
        """One line: status, where, the failed gates (or the figures), whose drift it is."""
        word = {Status.PASS: "PASS", Status.FAIL: "DRIFT"}.get(self.status, "ERROR")
        line = f"{word} {self.instance} [{self.board}] {Path(self.model).stem}"
        failed = [g.message for g in self.gates if g.status is Status.FAIL]
        if failed:
            line += ": " + "; ".join(failed)
        elif self.status is Status.PASS:
            figs = [f"cosine_min {self.cosine_min:.6g}" if self.cosine_min is not None else None]
            figs.append(f"max LSB {self.max_lsb}" if self.max_lsb is not None else None)
            line += ": " + ", ".join(f for f in figs if f)
        line += f" ({self.samples_done}/{self.samples_planned} samples)"
        if self.error:
            line += f" — {self.error}"
        if self.attribution:
            line += f" — {self.attribution}"
        return line

    __repr__ = __str__ = lambda self: self.summary  # noqa: E731 - pytest's assertion shows the repr

    @classmethod
    def of(cls, rep, instance: str, board: str | None, reports: dict[str, Path]) -> HilResult:
        dev = rep.device or {}
        tri = rep.triangulation or {}
        err = rep.error_info
        return cls(
            status=rep.status,
            instance=instance,
            board=dev.get("board") or board,
            firmware=dev.get("firmware"),
            model=Path((rep.model or {}).get("path") or rep.settings.get("model") or "model").name,
            model_sha256=(rep.model or {}).get("sha256"),
            samples_done=rep.samples_done,
            samples_planned=rep.samples_planned,
            outputs=list(rep.outputs),
            gates=list(rep.gates),
            verdict=tri.get("verdict"),
            triangulation=rep.triangulation,
            timing=rep.timing,
            duration_s=rep.duration_s,
            reports=reports,
            report=rep,
            error=" — ".join(x for x in (err.message, err.hint) if x) if err else None,
        )


# --------------------------------------------------------------------------- a held board


class _EnvReach:
    """A labgrid environment target's TinyhilDriver, as the lab's reach."""

    def __init__(self, driver):
        self.driver = driver

    def url(self, timeout: float = 10.0) -> str:
        return self.driver.url()

    def close(self) -> None:
        pass


@dataclass
class HilBoard:
    """The `hil_board` fixture: one board, held (locked) for one test."""

    name: str
    board: str
    url: str
    baud: int
    instance: object  # harness.lab.labfile.Instance
    device: object  # the handshake's DeviceInfo
    target: Target
    reach: object = field(repr=False, default=None)
    rig: Rig = field(repr=False, default=None)

    @property
    def model_sha256(self) -> str | None:
        return getattr(self.device, "model_sha256", None)

    @property
    def firmware(self) -> str | None:
        return getattr(self.device, "firmware", None)

    def handshake(self, timeout: float = HANDSHAKE_TIMEOUT_S, retries: int = HANDSHAKE_RETRIES):

        self.device = handshake(self.url, self.baud, timeout, retries)
        return self.device

    def session(self, timeout: float = 2.0, retries: int = 5):
        """A protocol session on this board (the caller closes it)."""

        return DeviceSession(self.url, baudrate=self.baud, timeout=timeout, retries=retries)

    def __str__(self) -> str:
        return f"{self.name} ({self.board} at {self.url})"


class Rig:
    """One pytest session's boards: targets, the labgrid client, what was
    built and flashed, and the processes a flash left running."""

    def __init__(self, *, lab=None, targets: list[Target], lg_env=None, wait: float = 0.0, lock_dir=None):
        self.lab, self.targets, self.lg_env, self.wait = lab, targets, lg_env, wait
        self.lock_dir = lock_dir or (lab.lock_dir if lab is not None else None)
        self.builds: dict[tuple[str, str], object] = {}  # (board id, model sha) -> BuildResult | HilError
        self.flashes: dict[tuple[str, str], int] = {}  # (lock key, model sha) -> flashes this session
        self.running: dict[str, object] = {}  # lock key -> FlashResult still running (QEMU, host firmware)
        self.build_dir: Path | None = None
        self._labgrid = None
        self._lg_used: set[str] = set()

    # ----- reaching
    def _labgrid_client(self):

        if self._labgrid is None:
            self._labgrid = LabgridClient(self.lab.coordinator if self.lab is not None else None)
        return self._labgrid

    def _env_target(self, t: Target):
        """The target's instance, reach and lock key (its driver active, its
        strategy not yet: that may power-cycle, so it waits for the lock)."""
        from labgrid.exceptions import NoDriverFoundError, NoResourceFoundError

        target = self.lg_env.get_target(t.lg_target)
        self._lg_used.add(t.lg_target)
        drv = target.get_driver("TinyhilDriver")
        try:
            strategy = target.get_driver("TinyhilStrategy", activate=False)
        except NoDriverFoundError:
            strategy = None
        try:
            place = target.get_resource("RemotePlace", wait_avail=False).name
        except NoResourceFoundError:
            place = None
        url = drv.url()
        inst = Instance(name=t.name, board=drv.board, port=url, baud=drv._baud())
        return inst, _EnvReach(drv), (f"labgrid:{place}" if place else inst.lock_key), strategy

    @contextlib.contextmanager
    def hold(self, t: Target, wait: float | None = None):
        """The board of target `t`, locked, reached and its handshake checked;
        `HilBoardError` when it cannot be."""

        wait = self.wait if wait is None else wait
        handle = None
        lock = None
        try:
            strategy = None
            if t.lg_target is not None:
                inst, reach, key, strategy = self._env_target(t)
            else:
                inst, key = t.instance, t.instance.lock_key
            lock = BoardLock(key, lock_dir=self.lock_dir, wait=wait, label=f"board {t.name} ({inst.describe()})")
            lock.acquire()
            if strategy is not None:
                strategy.transition("ready")
            if t.lg_target is None:
                if inst.place is not None:
                    handle = reach = self._labgrid_client().acquire(inst.place, wait=wait)
                else:
                    reach = _LocalReach(inst)
            url = reach.url()
            board_id = t.board
            baud = inst.baud or (load_board(board_id).baud if board_id else 921600)
            b = HilBoard(t.name, board_id or "", url, baud, inst, None, t, reach, self)
            info = b.handshake()
            if board_id is None:  # --hil-port without --hil-board: what the device says it is
                from dataclasses import replace

                board_id = info.board
                b.board, b.baud = board_id, inst.baud or load_board(board_id).baud
                b.instance = replace(inst, name=t.name, board=board_id)
            elif info.board != board_id:
                raise DeviceError(
                    f"the device at {url} says it is a {info.board} board, not {board_id}",
                    "check which board sits on this port (or fix the lab file)",
                )
        except HilError as exc:
            if lock is not None:
                lock.release()
            if handle is not None:
                handle.close()
            raise HilBoardError.of(f"board {t.name}", exc) from None
        except Exception as exc:
            if lock is not None:
                lock.release()
            if handle is not None:
                handle.close()
            raise HilBoardError.of(f"board {t.name}", exc) from exc
        try:
            yield b
        finally:
            try:
                if handle is not None:
                    handle.close()
            finally:
                lock.release()

    # ----- firmware
    def _build(self, b: HilBoard, model: Path, sha: str):

        board = load_board(b.board)
        if not board.pio_env or b.instance.flash.elf:
            return None
        key = (b.board, sha)
        if key not in self.builds:
            out = (self.build_dir or Path("build")) / b.board / sha[:12]
            try:
                self.builds[key] = build(b.board, model, out=out)
            except HilError as exc:
                self.builds[key] = exc
        built = self.builds[key]
        if isinstance(built, HilError):
            raise built
        return built

    def ensure(self, b: HilBoard, model: str | os.PathLike) -> HilBoard:
        """Make `b` hold `model`: nothing when its handshake says it does
        (a simulated board is never flashed: it must already hold it),
        else build (once a session per board type and model) and flash."""

        model = Path(model)
        try:
            sha = inspect_model(model).sha256
        except HilError as exc:
            raise HilBoardError(f"model {model}: {exc.message}", exc.hint) from None
        if b.model_sha256 == sha:
            return b
        inst = b.instance
        try:
            if not inst.flash.command and not driver_for(load_board(b.board)).programs_existing_board:
                held = (b.model_sha256 or "?")[:16]
                raise DeviceError(
                    f"it holds the model {held}…, not {model.name} ({sha[:16]}…), and a {b.board} board is not flashed",
                    f"start it with that model (hil device sim --model {model.name}) or pick another instance",
                )
            built = self._build(b, model, sha)
            elf = inst.flash.elf or (str(built.elf) if built is not None else None)
            old = self.running.pop(inst.lock_key, None)
            if old is not None:
                old.stop()
            port, started = flash_instance(inst, model, b.reach, elf=elf)
            if started is not None and started.process is not None:
                self.running[inst.lock_key] = started
            self.flashes[(inst.lock_key, sha)] = self.flashes.get((inst.lock_key, sha), 0) + 1
            b.url = port
            deadline = time.monotonic() + 15.0  # a board that was just flashed boots first
            while True:
                try:
                    info = b.handshake()
                    break
                except HilError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.5)
            if info.model_sha256 != sha:
                raise DeviceError(
                    f"after flashing, the device reports model {info.model_sha256[:16]}…, not {sha[:16]}…",
                    "check the flash command / the firmware build",
                )
        except HilError as exc:
            raise HilBoardError.of(f"board {b.name}", exc) from None
        return b

    # ----- the end
    def close(self) -> None:
        for started in self.running.values():
            with contextlib.suppress(Exception):
                started.stop()
        self.running.clear()
        if self._labgrid is not None:
            self._labgrid.close()
            self._labgrid = None
        for name in self._lg_used:
            with contextlib.suppress(Exception):
                self.lg_env.get_target(name).cleanup()


def validate_on(
    b: HilBoard, model, data, out: Path, *, samples=None, reference="tflm", timeout=2.0, retries=5, **gates
):
    """`harness.validate.validate` on a held board, its reports written to `out`."""

    unknown = set(gates) - {"min_cosine", "max_lsb", "min_top1"}
    if unknown:
        raise ConfigError(
            f"hil_validate got unknown gates: {', '.join(sorted(unknown))}", "gates: min_cosine, max_lsb, min_top1"
        )
    rep = validate(
        b.url,
        model,
        data,
        samples=samples,
        reference=reference,
        baud=b.baud,
        timeout=timeout,
        retries=retries,
        board=b.board,
        gates=Gates(**gates),
    )
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "html": out / "report.html", "junit": out / "junit.xml"}
    d = rep.to_dict()
    write_json(d, paths["json"])
    write_junit(d, paths["junit"])
    write_html(d, paths["html"])
    return HilResult.of(rep, b.name, b.board, paths)


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:120] or "test"
