"""`hil lab run`: every selected instance × every model, one worker per board.

Per board type and model the firmware is built once (PlatformIO's cache is
reused across runs); then each worker takes its board's lock (and its
labgrid place), and for every model: flash, find the port again, validate,
write the board's own reports. A board that cannot be reached, flashed or
validated is ERROR, never FAIL; when the lab file names power control, it is
power-cycled and tried once more. The other boards go on.

Results follow Zephyr twister: PASS, DRIFT (a gate was evaluated and failed)
and ERROR (could not run). The run's exit code: 1 when any cell drifted —
a drift is a finding about the model that no rerun removes —, else 2 when
any cell could not run, else 0.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.boards import load_board
from harness.build import build
from harness.console import NullProgress
from harness.drivers import driver_for
from harness.errors import ConfigError, DeviceError, FlashError, HilError
from harness.flash import flash
from harness.lab.labfile import Instance, Lab, expand
from harness.lab.labgrid import LabgridClient
from harness.lab.lock import BoardLock
from harness.report import write_html, write_json, write_junit
from harness.validate import validate

PASS, DRIFT, ERROR = "PASS", "DRIFT", "ERROR"


@dataclass(frozen=True)
class ModelSpec:
    """One model of the run and its validation data."""

    model: Path
    data: Path
    name: str


def model_specs(models: Sequence[str], datas: Sequence[str]) -> list[ModelSpec]:
    if not models:
        raise ConfigError("no --model given", "pass --model M.tflite --data D.npz (repeat the pair for more models)")
    if len(models) != len(datas):
        raise ConfigError(
            f"{len(models)} --model but {len(datas)} --data", "give one --data after each --model, in the same order"
        )
    specs, names = [], set()
    for m, d in zip(models, datas):
        m, d = Path(m), Path(d)
        if not m.is_file():
            raise ConfigError(f"model {m} does not exist", "check the path to the .tflite")
        if not d.is_file():
            raise ConfigError(f"validation data {d} does not exist", "pass the .npz written by `hil convert`")
        name = m.stem
        k = 2
        while name in names:  # two models of one stem in other folders
            name, k = f"{m.stem}-{k}", k + 1
        names.add(name)
        specs.append(ModelSpec(m, d, name))
    return specs


@dataclass
class RunSettings:
    """What `hil validate` takes, plus the lab's own knobs."""

    samples: int | None = None
    gates: object = None  # harness.validate.Gates; None = validate's defaults
    reference: str = "tflm"
    timeout: float = 2.0
    retries: int = 5
    worst_k: int = 10
    wait: float = 0.0  # seconds to wait for a busy board
    jobs: int | None = None  # workers (default: one per board)
    build: bool = True
    tflm_dir: str | None = None
    lock_dir: Path | None = None


@dataclass
class Cell:
    """One instance × one model."""

    instance: str
    board: str
    model: str
    model_path: str
    data_path: str
    status: str = ERROR
    exit_code: int = 2
    headline: dict = field(default_factory=dict)
    error: str | None = None
    hint: str | None = None
    attempts: int = 0
    power_cycled: bool = False
    port: str | None = None
    device: dict | None = None
    reports: dict = field(default_factory=dict)  # kind -> path relative to the run's folder
    duration_s: float = 0.0
    steps: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LabRun:
    lab: str
    out: Path
    models: list[ModelSpec]
    cells: list[Cell]
    started: str
    duration_s: float = 0.0
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        statuses = {c.status for c in self.cells}
        if DRIFT in statuses:
            return 1
        if ERROR in statuses or self.interrupted or not self.cells:
            return 2
        return 0

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.cells if c.status == s) for s in (PASS, DRIFT, ERROR)}


# --------------------------------------------------------------------------- the validate seam


def validation_outcome(rep) -> tuple[str, int, dict]:
    """PASS / DRIFT / ERROR, the exit code and the JSON report of a
    `harness.validate.ValidationReport`: the one place the lab reads it."""
    d = rep.to_dict()
    status = str(getattr(rep.status, "value", rep.status)).lower()
    mapped = {"pass": PASS, "fail": DRIFT}.get(status, ERROR)  # error, skipped: not decided
    return mapped, {PASS: 0, DRIFT: 1, ERROR: 2}[mapped], d


def headline(d: dict) -> dict:
    """The figures of a cell in the matrix: worst cosine, largest LSB step, samples."""
    outs = d.get("outputs") or []
    cos = [o["float"]["cosine_min"] for o in outs if o.get("float") and o["float"].get("cosine_min") is not None]
    lsb = [o["lsb"]["max_lsb"] for o in outs if o.get("lsb")]
    failed = [g["name"] for g in d.get("gates") or [] if g.get("status") == "fail"]
    return {
        "cosine_min": min(cos) if cos else None,
        "max_lsb": max(lsb) if lsb else None,
        "samples_done": d.get("samples_done", 0),
        "samples_planned": d.get("samples_planned", 0),
        "failed_gates": failed,
    }


# --------------------------------------------------------------------------- progress


class _CellProgress:
    """validate's progress, shown in the one view of the run under the
    instance's name; a stopped run ends the cell at its next sample."""

    def __init__(self, progress, label: str, stop: threading.Event, on_sample: Callable[[int], None] | None):
        self._p, self._label, self._stop, self._on_sample = progress, label, stop, on_sample

    def task(self, description: str, total: int | None = None, **fields):
        inner = self._p.task(f"{self._label} {description}", total=total, **fields)
        outer = self

        class _Task:
            n = 0

            def advance(self, n: int = 1, **f):
                inner.advance(n, **f)
                if description == "device":
                    self.n += n
                    if outer._on_sample is not None:
                        outer._on_sample(self.n)
                if outer._stop.is_set():
                    raise KeyboardInterrupt  # validate records it: a partial, interrupted report

            def update(self, **f):
                inner.update(**f)

            def close(self):
                inner.close()

        return _Task()


# --------------------------------------------------------------------------- reaching a board


class _LocalReach:
    """A board on this host: its URL, or its USB port found by VID:PID + serial."""

    def __init__(self, inst: Instance):
        self.inst = inst

    def url(self, timeout: float = 10.0) -> str:
        if self.inst.usb is None:
            return str(self.inst.port)
        return find_usb(self.inst, timeout)

    def power_cycle(self, off_s: float = 1.0) -> None:
        raise ConfigError(f"{self.inst.name}: power: labgrid needs a labgrid place", "use power: {command: ...}")

    def close(self) -> None:
        pass


def find_usb(inst: Instance, timeout: float = 10.0, sleep=time.sleep) -> str:
    """The port of a USB serial board now (it may have re-enumerated)."""
    from serial.tools import list_ports

    u = inst.usb
    deadline = time.monotonic() + timeout
    while True:
        for p in list_ports.comports():
            if (p.vid, p.pid) == (u.vid, u.pid) and (u.serial is None or p.serial_number == u.serial):
                return p.device
        if time.monotonic() >= deadline:
            raise DeviceError(
                f"{inst.name}: no USB serial port {u.describe()} is connected",
                "check the cable and the serial number (`hil ports` lists them)",
            )
        sleep(0.25)


def run_command(argv: list[str], what: str, timeout: float) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise FlashError(f"{what}: {argv[0]} is not installed", "check the command in the lab file") from exc
    except subprocess.TimeoutExpired as exc:
        raise FlashError(f"{what}: {argv[0]} did not finish in {timeout:g} s", "run it by hand") from exc
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise FlashError(f"{what} failed (exit {proc.returncode}): {tail[:200]}", "run it by hand: " + " ".join(argv))


def flash_instance(
    inst: Instance,
    model: Path,
    reach,
    *,
    elf: str | None = None,
    on_flash: Callable[[], None] | None = None,
    steps: list[str] | None = None,
):
    """Put the firmware holding `model` on the board the way its lab entry
    says (its own flash command, else the board's method; the simulated board
    is not flashed), then find its port again: (port, FlashResult or None).
    A FlashResult that started a process (QEMU, host firmware) is the
    caller's to stop."""
    board = load_board(inst.board)
    steps = steps if steps is not None else []
    port = reach.url()
    if inst.flash.command:
        argv = expand(
            inst.flash.command,
            {
                "model": model,
                "elf": elf,
                "port": port,
                "board": inst.board,
                "instance": inst.name,
                "place": inst.place,
            },
        )
        if on_flash is not None:
            on_flash()
        run_command(argv, f"{inst.name}: flash", inst.flash.timeout)
        steps.append("flashed: " + " ".join(argv))
        return reach.url(), None  # it may have re-enumerated (a new /dev node, a new TCP port)
    if not driver_for(board).programs_existing_board:  # a running simulated board holds what it was started with
        return port, None
    if inst.place is not None:
        raise ConfigError(
            f"{inst.name}: flashing {inst.board} on a remote labgrid exporter is not built in",
            "give the instance a flash: {command: ...} that flashes it (e.g. over SSH on the exporter)",
        )
    if on_flash is not None:
        on_flash()
    started = flash(
        inst.board,
        port=port if inst.usb is None and inst.port else None,
        elf=elf,
        tcp_port=inst.flash.tcp_port,
        ram=inst.flash.ram,
        model=model,
    )
    try:
        steps.append(f"flashed {inst.board}" + (f": {started.port}" if started.port else ""))
        if inst.usb is not None:
            port = reach.url(timeout=15.0)
        elif started.port:
            port = started.port
    except BaseException:
        started.stop()
        raise
    return port, started


# --------------------------------------------------------------------------- the run


class LabRunner:
    def __init__(
        self,
        lab: Lab,
        specs: list[ModelSpec],
        instances: list[Instance],
        out: Path,
        settings: RunSettings,
        *,
        progress=None,
        on_event: Callable[..., None] | None = None,
        labgrid_client=None,
    ):

        self.lab, self.specs, self.instances, self.out, self.s = lab, specs, instances, Path(out), settings
        self.progress = progress or NullProgress()
        self.on_event = on_event or (lambda *a, **k: None)
        self.stop = threading.Event()
        self.builds: dict[tuple[str, str], object] = {}  # (board, model name) -> BuildResult | HilError
        self._labgrid = labgrid_client
        self._labgrid_lock = threading.Lock()

    # ----- build
    def build_all(self) -> None:

        if not self.s.build:
            return
        for board_id in sorted({i.board for i in self.instances}):
            if not load_board(board_id).pio_env:
                continue  # nothing to build: the simulated board
            for spec in self.specs:
                if self.stop.is_set():
                    return
                self.on_event("build", board=board_id, model=spec.name)
                try:
                    self.builds[(board_id, spec.name)] = build(
                        board_id,
                        spec.model,
                        tflm_dir=self.s.tflm_dir,
                        out=self.out / "build" / board_id / spec.name,
                    )
                except HilError as exc:
                    self.builds[(board_id, spec.name)] = exc

    # ----- labgrid
    def labgrid(self):
        with self._labgrid_lock:
            if self._labgrid is None:
                self._labgrid = LabgridClient(self.lab.coordinator)
            return self._labgrid

    @contextlib.contextmanager
    def reach(self, inst: Instance):
        if inst.place is None:
            yield _LocalReach(inst)
            return
        client = self.labgrid()
        handle = client.acquire(inst.place, wait=self.s.wait, stop=self.stop)
        try:
            yield handle
        finally:
            handle.close()  # releases the place: also on errors, Ctrl-C and SIGTERM

    # ----- one board
    def work(self, inst: Instance) -> list[Cell]:
        cells = [self._new_cell(inst, spec) for spec in self.specs]
        t0 = time.monotonic()

        waiting = []

        def sleep(s: float) -> None:
            if not waiting:
                waiting.append(True)
                self.on_event("waiting", instance=inst.name)
            if self.stop.wait(s):
                raise KeyboardInterrupt

        lock = BoardLock(
            inst.lock_key,
            lock_dir=self.s.lock_dir or self.lab.lock_dir,
            wait=self.s.wait,
            label=f"board {inst.name} ({inst.describe()})",
            sleep=sleep,
        )
        try:
            lock.acquire()
        except (HilError, KeyboardInterrupt) as exc:
            for c in cells:
                self._fail(c, exc)
            return cells
        self.on_event("locked", instance=inst.name)
        try:
            with self.reach(inst) as reach:
                self.on_event("reached", instance=inst.name)
                for cell, spec in zip(cells, self.specs):
                    if self.stop.is_set():
                        self._fail(cell, KeyboardInterrupt())
                        continue
                    self.attempt(inst, spec, cell, reach)
                    if cell.status == ERROR and inst.power is not None and not self.stop.is_set():
                        try:
                            self.power_cycle(inst, reach)
                            cell.power_cycled = True
                        except HilError as exc:
                            cell.steps.append(f"power cycle failed: {exc}")
                        else:
                            self.attempt(inst, spec, cell, reach)
                    self.on_event("cell", instance=inst.name, model=spec.name, status=cell.status)
        except (HilError, KeyboardInterrupt) as exc:
            for c in cells:
                if c.attempts == 0:
                    self._fail(c, exc)
        except Exception as exc:  # noqa: BLE001 - one board's surprise must not end the others
            for c in cells:
                if c.attempts == 0:
                    self._fail(c, HilError(f"unexpected {type(exc).__name__}: {exc}", "run again with --debug"))
        finally:
            lock.release()
            for c in cells:
                c.duration_s = round(c.duration_s or (time.monotonic() - t0), 3)
        return cells

    def power_cycle(self, inst: Instance, reach) -> None:
        p = inst.power
        self.on_event("power_cycle", instance=inst.name)
        if p.command:
            argv = expand(
                p.command, {"instance": inst.name, "board": inst.board, "port": inst.port, "place": inst.place}
            )
            run_command(argv, f"{inst.name}: power cycle", 120.0)
        else:
            reach.power_cycle(p.off_s)

    def _new_cell(self, inst: Instance, spec: ModelSpec) -> Cell:
        return Cell(inst.name, inst.board, spec.name, str(spec.model), str(spec.data))

    @staticmethod
    def _fail(cell: Cell, exc: BaseException) -> None:
        cell.status, cell.exit_code = ERROR, 2
        if isinstance(exc, KeyboardInterrupt):
            cell.error, cell.hint = "interrupted before it ran", None
        else:
            cell.error, cell.hint = getattr(exc, "message", str(exc)), getattr(exc, "hint", None)

    def attempt(self, inst: Instance, spec: ModelSpec, cell: Cell, reach) -> None:
        """Flash (when the board is flashed), find the port, validate."""

        cell.attempts += 1
        t0 = time.monotonic()
        started = None
        try:
            board = load_board(inst.board)
            built = self.builds.get((inst.board, spec.name))
            if isinstance(built, HilError):
                raise built
            elf = inst.flash.elf or (str(built.elf) if built is not None else None)
            port, started = flash_instance(
                inst,
                spec.model,
                reach,
                elf=elf,
                on_flash=lambda: self.on_event("flash", instance=inst.name, model=spec.name),
                steps=cell.steps,
            )
            cell.port = port
            self.on_event("validate", instance=inst.name, model=spec.name, port=port)
            rep = validate(
                port,
                spec.model,
                spec.data,
                samples=self.s.samples,
                reference=self.s.reference,
                baud=inst.baud or board.baud,
                timeout=self.s.timeout,
                retries=self.s.retries,
                worst_k=self.s.worst_k,
                progress=_CellProgress(
                    self.progress,
                    f"{inst.name} · {spec.name}",
                    self.stop,
                    lambda n: self.on_event("sample", instance=inst.name, model=spec.name, n=n),
                ),
                board=inst.board,
                **({"gates": self.s.gates} if self.s.gates is not None else {}),
            )
            status, code, d = validation_outcome(rep)
            cell.status, cell.exit_code = status, code
            cell.headline = headline(d)
            cell.device = (
                {k: d["device"].get(k) for k in ("board", "firmware", "model_sha256")} if d.get("device") else None
            )
            cell.error = d["error"]["message"] if d.get("error") else None
            cell.hint = d["error"].get("hint") if d.get("error") else None
            cell.reports = self.write_cell_reports(inst, spec, d)
        except HilError as exc:
            self._fail(cell, exc)
        except KeyboardInterrupt as exc:
            self._fail(cell, exc)
            cell.error = "interrupted"
        finally:
            if started is not None:
                started.stop()
            cell.duration_s = round(cell.duration_s + time.monotonic() - t0, 3)

    def write_cell_reports(self, inst: Instance, spec: ModelSpec, d: dict) -> dict:

        folder = self.out / inst.name / spec.name
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"json": folder / "report.json", "html": folder / "report.html", "junit": folder / "junit.xml"}
        write_json(d, paths["json"])
        write_junit(d, paths["junit"])
        write_html(d, paths["html"])
        return {k: str(p.relative_to(self.out)) for k, p in paths.items()}

    # ----- all boards
    def run(self) -> LabRun:
        started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        t0 = time.monotonic()
        result = LabRun(str(self.lab.path), self.out, self.specs, [], started)
        self.out.mkdir(parents=True, exist_ok=True)
        pool = ThreadPoolExecutor(max_workers=self.s.jobs or len(self.instances), thread_name_prefix="lab")
        futures = []
        try:
            self.build_all()
            futures = [pool.submit(self.work, inst) for inst in self.instances]
            pending = set(futures)
            while pending:  # short waits: Ctrl-C and SIGTERM reach the main thread between them
                _, pending = wait(pending, timeout=0.2)
        except KeyboardInterrupt:
            result.interrupted = True
            self.stop.set()
            wait(futures)  # every worker ends at its next sample, releasing its lock and place
        finally:
            pool.shutdown(wait=True)
            if self._labgrid is not None:
                self._labgrid.close()
        for fut in futures:
            result.cells.extend(fut.result())
        if not futures:  # interrupted while building
            result.cells = [self._interrupted(i, s) for i in self.instances for s in self.specs]
        result.duration_s = round(time.monotonic() - t0, 3)
        return result

    def _interrupted(self, inst: Instance, spec: ModelSpec) -> Cell:
        c = self._new_cell(inst, spec)
        self._fail(c, KeyboardInterrupt())
        return c


def run_lab(
    lab: Lab,
    specs: list[ModelSpec],
    *,
    select: Sequence[str] | None = None,
    out: str | Path = "lab-report",
    settings: RunSettings | None = None,
    progress=None,
    on_event: Callable[..., None] | None = None,
) -> LabRun:
    """Validate every selected instance of `lab` on every model; see the module docstring."""
    settings = settings or RunSettings()
    if settings.gates is not None:
        settings.gates.check()
    if settings.jobs is not None and settings.jobs < 1:
        raise ConfigError(f"--jobs {settings.jobs} must be at least 1", "leave it out for one worker per board")
    instances = lab.select(select)
    runner = LabRunner(lab, specs, instances, Path(out), settings, progress=progress, on_event=on_event)
    return runner.run()
