"""The lab file (lab.yaml): which board sits where, how it is flashed and
power-cycled, and its tags. The user's own file, like twister's hardware map;
what a board can do stays in boards/ (docs/lab.md has the reference).

Read with PyYAML's node graph (`yaml.compose`) so that every error names the
file, the line and the key.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.boards import board_ids
from harness.errors import ConfigError

INSTANCE_KEYS = {"board", "port", "usb", "place", "baud", "flash", "power", "tags", "description"}
FLASH_KEYS = {"elf", "ram", "tcp_port", "command", "timeout"}
POWER_KEYS = {"command", "labgrid", "off_s"}
USB_KEYS = {"vid", "pid", "serial"}
TOP_KEYS = {"instances", "lock_dir", "labgrid"}
LABGRID_KEYS = {"coordinator"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class UsbMatch:
    vid: int
    pid: int
    serial: str | None = None

    def describe(self) -> str:
        return f"usb {self.vid:04x}:{self.pid:04x}" + (f" serial {self.serial}" if self.serial else "")


@dataclass(frozen=True)
class FlashOptions:
    elf: str | None = None
    ram: bool = False
    tcp_port: int | None = None
    command: tuple[str, ...] | None = None  # the user's own flash command, placeholders {model} {elf} {port} …
    timeout: float = 300.0


@dataclass(frozen=True)
class PowerControl:
    command: tuple[str, ...] | None = None  # cycles the power (or presses reset) when run
    labgrid: bool = False  # the place's power resource, through labgrid's PowerProtocol
    off_s: float = 1.0


@dataclass(frozen=True)
class Instance:
    """One board on the shelf."""

    name: str
    board: str
    port: str | None = None
    usb: UsbMatch | None = None
    place: str | None = None
    baud: int | None = None
    flash: FlashOptions = field(default_factory=FlashOptions)
    power: PowerControl | None = None
    tags: tuple[str, ...] = ()
    line: int = 0  # where it is defined in the lab file

    @property
    def reached_by(self) -> str:
        return "place" if self.place else "usb" if self.usb else "port"

    def describe(self) -> str:
        if self.place:
            return f"labgrid place {self.place}"
        if self.usb:
            return self.usb.describe()
        return str(self.port)

    @property
    def lock_key(self) -> str:
        """What the lock is taken on: the board itself (its port, USB serial
        number or labgrid place), not the name one lab file gives it."""
        if self.place:
            return f"labgrid:{self.place}"
        if self.usb:
            return f"usb:{self.usb.vid:04x}:{self.usb.pid:04x}:{self.usb.serial or self.name}"
        port = self.port or ""
        if port.startswith("/dev/"):
            port = os.path.realpath(port)  # /dev/serial/by-id/... and /dev/ttyACM0 are one board
        return f"port:{port}"

    def matches(self, pattern: str) -> bool:
        if pattern.startswith("tag:"):
            return pattern[4:] in self.tags
        return fnmatch.fnmatchcase(self.name, pattern)


@dataclass(frozen=True)
class Lab:
    path: Path
    instances: tuple[Instance, ...]
    lock_dir: Path | None = None
    coordinator: str | None = None

    def select(self, patterns: Sequence[str] | None = None) -> list[Instance]:
        """Instances matching any pattern (a name glob or tag:T); all without."""
        if not patterns:
            return list(self.instances)
        chosen = [i for i in self.instances if any(i.matches(p) for p in patterns)]
        if not chosen:
            names = ", ".join(i.name for i in self.instances)
            tags = sorted({t for i in self.instances for t in i.tags})
            raise ConfigError(
                f"--select {' '.join(patterns)} matches no instance of {self.path}",
                f"instances: {names}" + (f"; tags: {', '.join(tags)}" if tags else ""),
            )
        return chosen

    def get(self, name: str) -> Instance:
        for i in self.instances:
            if i.name == name:
                return i
        raise ConfigError(
            f"{self.path} has no instance '{name}'", f"instances: {', '.join(i.name for i in self.instances)}"
        )


# --------------------------------------------------------------------------- reading


class _Reader:
    """Turns YAML nodes into values; every error carries file, line and key."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, node, key: str, message: str, hint: str | None = None):
        line = node.start_mark.line + 1 if node is not None else 1
        raise ConfigError(f"{self.path}:{line}: {key}: {message}", hint or f"fix '{key}' in {self.path}")

    def mapping(self, node, key: str, allowed: set[str]) -> dict[str, tuple]:
        import yaml

        if not isinstance(node, yaml.MappingNode):
            self.fail(node, key, "must be a mapping (key: value lines)")
        out: dict[str, tuple] = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                self.fail(k, key, "keys must be plain names")
            name = k.value
            full = f"{key}.{name}" if key else name
            if name in out:
                self.fail(k, full, "is given twice")
            if allowed and name not in allowed:
                self.fail(k, full, "is not a known key", f"known keys here: {', '.join(sorted(allowed))}")
            out[name] = (k, v, full)
        return out

    def scalar(self, node, key: str):
        import yaml

        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, key, "must be a single value")
        return yaml.constructor.SafeConstructor().construct_object(node, deep=True)

    def string(self, node, key: str) -> str:
        v = self.scalar(node, key)
        if v is None or isinstance(v, (dict, list)) or str(v).strip() == "":
            self.fail(node, key, "must be a non-empty string")
        return str(v)

    def integer(self, node, key: str, minimum: int = 0) -> int:
        v = self.scalar(node, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            self.fail(node, key, f"must be an integer >= {minimum} (got {node.value!r})")
        return v

    def number(self, node, key: str) -> float:
        v = self.scalar(node, key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            self.fail(node, key, f"must be a number >= 0 (got {node.value!r})")
        return float(v)

    def boolean(self, node, key: str) -> bool:
        v = self.scalar(node, key)
        if not isinstance(v, bool):
            self.fail(node, key, f"must be true or false (got {node.value!r})")
        return v

    def command(self, node, key: str) -> tuple[str, ...]:
        import yaml

        if isinstance(node, yaml.SequenceNode):
            argv = tuple(self.string(n, f"{key}[{i}]") for i, n in enumerate(node.value))
        else:
            text = self.string(node, key)
            try:
                argv = tuple(shlex.split(text))
            except ValueError as exc:
                self.fail(node, key, f"is not a valid command line ({exc})")
        if not argv:
            self.fail(node, key, "is an empty command")
        return argv

    def hexid(self, node, key: str) -> int:
        v = self.scalar(node, key)
        text = f"{v:04d}" if isinstance(v, int) else str(v)  # YAML reads 2341 as a number
        try:
            n = int(text, 16)
        except ValueError:
            n = -1
        if not 0 <= n <= 0xFFFF:
            self.fail(node, key, f"must be a 4-digit hex USB id like 2341 (got {node.value!r})")
        return n


def _instance(r: _Reader, name_node, node, name: str) -> Instance:
    key = f"instances.{name}"
    if not NAME_RE.match(name):
        r.fail(name_node, key, "instance names are letters, digits, '.', '_' and '-'")
    m = r.mapping(node, key, INSTANCE_KEYS)
    if "board" not in m:
        r.fail(node, key, "has no 'board' (a board id of boards/, e.g. sim or nano33ble)")
    bnode = m["board"][1]
    board = r.string(bnode, f"{key}.board")

    if board not in board_ids():
        r.fail(bnode, f"{key}.board", f"unknown board '{board}'", f"known boards: {', '.join(board_ids())}")
    ways = [w for w in ("port", "usb", "place") if w in m]
    if len(ways) != 1:
        r.fail(
            node,
            key,
            "needs exactly one of 'port' (a pyserial URL), 'usb' (vid, pid, serial) or 'place' (labgrid)"
            + (f"; it has {', '.join(ways)}" if ways else ""),
        )
    port = r.string(m["port"][1], f"{key}.port") if "port" in m else None
    usb = _usb_match(r, m["usb"][1], f"{key}.usb") if "usb" in m else None
    place = r.string(m["place"][1], f"{key}.place") if "place" in m else None
    baud = r.integer(m["baud"][1], m["baud"][2], 1) if "baud" in m else None
    flash = _flash_options(r, m["flash"][1], f"{key}.flash") if "flash" in m else FlashOptions()
    power = _power_control(r, m["power"][1], f"{key}.power", place) if "power" in m else None
    tags = _tags(r, m["tags"][1], f"{key}.tags") if "tags" in m else ()
    if "description" in m:
        r.string(m["description"][1], f"{key}.description")
    return Instance(
        name=name,
        board=board,
        port=port,
        usb=usb,
        place=place,
        baud=baud,
        flash=flash,
        power=power,
        tags=tags,
        line=name_node.start_mark.line + 1,
    )


def _usb_match(r: _Reader, node, key: str) -> UsbMatch:
    u = r.mapping(node, key, USB_KEYS)
    for need in ("vid", "pid"):
        if need not in u:
            r.fail(node, key, f"has no '{need}'")
    return UsbMatch(
        r.hexid(u["vid"][1], u["vid"][2]),
        r.hexid(u["pid"][1], u["pid"][2]),
        r.string(u["serial"][1], u["serial"][2]) if "serial" in u else None,
    )


def _flash_options(r: _Reader, node, key: str) -> FlashOptions:
    f = r.mapping(node, key, FLASH_KEYS)
    return FlashOptions(
        elf=r.string(f["elf"][1], f["elf"][2]) if "elf" in f else None,
        ram=r.boolean(f["ram"][1], f["ram"][2]) if "ram" in f else False,
        tcp_port=r.integer(f["tcp_port"][1], f["tcp_port"][2], 1) if "tcp_port" in f else None,
        command=r.command(f["command"][1], f["command"][2]) if "command" in f else None,
        timeout=r.number(f["timeout"][1], f["timeout"][2]) if "timeout" in f else 300.0,
    )


def _power_control(r: _Reader, node, key: str, place: str | None) -> PowerControl:
    p = r.mapping(node, key, POWER_KEYS)
    power = PowerControl(
        command=r.command(p["command"][1], p["command"][2]) if "command" in p else None,
        labgrid=r.boolean(p["labgrid"][1], p["labgrid"][2]) if "labgrid" in p else False,
        off_s=r.number(p["off_s"][1], p["off_s"][2]) if "off_s" in p else 1.0,
    )
    if (power.command is None) == (not power.labgrid):
        r.fail(node, key, "needs exactly one of 'command' or 'labgrid: true'")
    if power.labgrid and place is None:
        r.fail(node, f"{key}.labgrid", "needs the instance to be a labgrid 'place'")
    return power


def _tags(r: _Reader, node, key: str) -> tuple[str, ...]:
    """A YAML list of tags, or one string of them separated by commas or spaces."""
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return tuple(r.string(n, f"{key}[{i}]") for i, n in enumerate(node.value))
    return tuple(r.string(node, key).replace(",", " ").split())


def load_lab(path: str | os.PathLike) -> Lab:
    """Read and check a lab file; a `ConfigError` names file, line and key."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"lab file {path} does not exist", "write one (docs/lab.md has an example)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read lab file {path}: {exc.strerror}", "check the path") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{line}: not valid YAML: {problem}", "fix the indentation or quoting") from exc
    r = _Reader(path)
    if root is None:
        raise ConfigError(f"{path}:1: instances: the lab file is empty", "add an 'instances:' mapping (docs/lab.md)")
    top = r.mapping(root, "", TOP_KEYS)
    if "instances" not in top:
        r.fail(root, "instances", "is missing", "add an 'instances:' mapping of name -> board, port (docs/lab.md)")
    inodes = r.mapping(top["instances"][1], "instances", set())
    if not inodes:
        r.fail(top["instances"][1], "instances", "is empty")
    instances = [_instance(r, k, v, name) for name, (k, v, _) in inodes.items()]
    seen: dict[str, Instance] = {}
    for inst in instances:
        other = seen.get(inst.lock_key)
        if other is not None:
            r.fail(
                inodes[inst.name][0],
                f"instances.{inst.name}",
                f"is the same board as instance '{other.name}' (line {other.line}): {inst.describe()}",
            )
        seen[inst.lock_key] = inst
    lock_dir = None
    if "lock_dir" in top:
        lock_dir = Path(r.string(top["lock_dir"][1], "lock_dir")).expanduser()
        if not lock_dir.is_absolute():
            lock_dir = (path.parent / lock_dir).resolve()
    coordinator = None
    if "labgrid" in top:
        lg = r.mapping(top["labgrid"][1], "labgrid", LABGRID_KEYS)
        if "coordinator" in lg:
            coordinator = r.string(lg["coordinator"][1], "labgrid.coordinator")
    return Lab(path=path, instances=tuple(instances), lock_dir=lock_dir, coordinator=coordinator)


def expand(argv: Iterable[str], values: dict[str, object]) -> list[str]:
    """A command line with {model}, {elf}, {port}, {board}, {instance} filled in."""
    out = []
    for a in argv:
        try:
            out.append(a.format(**{k: "" if v is None else v for k, v in values.items()}))
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"command argument '{a}' names an unknown placeholder ({exc})",
                f"placeholders: {', '.join('{' + k + '}' for k in values)}",
            ) from exc
    return out


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]
