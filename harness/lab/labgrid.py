"""Boards on other hosts, through labgrid (`tinyhil[labgrid]`).

labgrid's coordinator knows the places, who holds them and the exporters'
serial ports (ser2net, RFC 2217). For an instance whose lab entry is a
`place`, tinyhil acquires the place (or takes the one of the reservation in
LG_TOKEN: place `+`), resolves its NetworkSerialPort to
`rfc2217://host:port?ign_set_control&timeout=5`, validates, and releases.
The port is looked up again whenever it is asked for: a re-enumerated USB
port comes back on a new TCP port.

labgrid's client session is asyncio-based and one per process: every call
runs on one thread that owns the event loop (the workers of a lab run share
it), with the loop idle in between, as labgrid's own client does.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from harness.errors import ConfigError, DeviceError, ToolError
from harness.lab.lock import BoardBusyError

DEFAULT_COORDINATOR = "127.0.0.1:20408"
RFC2217_OPTIONS = "ign_set_control&timeout=5"  # without ign_set_control pyserial waits for option 'control'


def _import_labgrid():
    try:
        import labgrid.remote.client as client  # noqa: F401
    except ImportError as exc:
        raise ToolError(
            f"labgrid is not installed ({exc.name} missing)",
            "pip install 'tinyhil[labgrid]' (then check `python -c \"import serial\"`: docs/lab.md)",
        ) from exc
    return client


def serial_url(host: str, port: int, protocol: str = "rfc2217") -> str:
    if protocol == "raw":
        return f"socket://{host}:{port}"
    return f"rfc2217://{host}:{port}?{RFC2217_OPTIONS}"


class LabgridClient:
    """One labgrid client session for this process."""

    def __init__(self, coordinator: str | None = None, *, timeout: float = 10.0):
        self.address = coordinator or os.environ.get("LG_COORDINATOR") or DEFAULT_COORDINATOR
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labgrid")
        self._session = None
        self._loop = None
        self._closed = False
        self._acquired: set[str] = set()
        self._guard = threading.Lock()
        self.timeout = timeout
        self._call(self._start)

    # everything below the seam runs on the labgrid thread
    def _call(self, fn, *args):
        if self._closed:
            raise DeviceError("the labgrid session is closed", "start a new run")
        return self._pool.submit(fn, *args).result()

    def _start(self) -> None:
        import asyncio

        client = _import_labgrid()
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)  # labgrid looks the loop up on its thread
        try:
            self._session = self._loop.run_until_complete(asyncio.wait_for(self._connect(client), timeout=self.timeout))
        except (Exception, asyncio.TimeoutError) as exc:  # noqa: BLE001 - grpc and labgrid raise many kinds
            raise DeviceError(
                f"cannot reach the labgrid coordinator at {self.address}: {type(exc).__name__} {exc}".strip(),
                "start labgrid-coordinator, or set labgrid: coordinator: in the lab file / LG_COORDINATOR",
            ) from exc

    async def _connect(self, client):
        s = client.ClientSession(self.address, self._loop)
        await s.start()
        return s

    def _run(self, coro):
        return self._loop.run_until_complete(coro)

    def _sync(self) -> None:
        self._run(self._session.sync_with_coordinator())
        if self._session.stopping.is_set():
            raise DeviceError(f"lost the labgrid coordinator at {self.address}", "check that it still runs")

    def _place(self, pattern: str):
        from labgrid.remote.client import Error as LgError

        self._sync()
        try:
            names = self._session._match_places(pattern)
        except LgError as exc:
            raise ConfigError(f"labgrid place {pattern}: {' '.join(map(str, exc.args))}", "check LG_TOKEN") from exc
        if pattern in names:
            names = [pattern]
        if not names:
            hint = "set LG_TOKEN to your reservation's token" if pattern.startswith("+") else "`labgrid-client places`"
            raise ConfigError(f"labgrid place {pattern} matches no place at {self.address}", hint)
        if len(names) > 1:
            raise ConfigError(
                f"labgrid place {pattern} matches {len(names)} places ({', '.join(sorted(names))})",
                "name the place in the lab file",
            )
        return self._session.places[names[0]]

    def _user(self) -> str:
        return f"{self._session.gethostname()}/{self._session.getuser()}"

    def _try_acquire(self, pattern: str) -> tuple[str, str | None]:
        """(place name, None) when acquired, (place name, holder) when busy."""
        import grpc
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        place = self._place(pattern)
        if place.acquired:
            return place.name, place.acquired
        try:
            self._run(self._session.stub.AcquirePlace(pb.AcquirePlaceRequest(placename=place.name)))
        except grpc.aio.AioRpcError as exc:
            self._sync()
            holder = self._session.places[place.name].acquired
            if holder:
                return place.name, holder
            raise DeviceError(f"labgrid place {place.name} could not be acquired: {exc.details()}", None) from exc
        self._sync()
        return place.name, None

    def _release(self, name: str) -> None:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        self._run(self._session.stub.ReleasePlace(pb.ReleasePlaceRequest(placename=name)))
        self._sync()

    def _serial(self, name: str) -> str:
        from labgrid.remote.client import Error as LgError

        self._sync()
        place = self._session.places[name]
        try:
            resources = self._session.get_target_resources(place)
        except LgError as exc:
            raise DeviceError(f"labgrid place {name}: {' '.join(map(str, exc.args))}", "check the exporter") from exc
        ports = [r for (_, cls), r in sorted(resources.items()) if cls == "NetworkSerialPort"]
        if not ports:
            raise ConfigError(
                f"labgrid place {name} has no NetworkSerialPort",
                f"labgrid-client -p {name} add-match EXPORTER/GROUP/NetworkSerialPort/NAME",
            )
        r = ports[0]
        if not r.avail or not r.args.get("port"):
            raise DeviceError(
                f"the serial port of labgrid place {name} is not available on its exporter",
                "check the board's cable and the exporter's log",
            )
        return serial_url(r.args["host"], int(r.args["port"]), r.args.get("protocol", "rfc2217"))

    def _power_cycle(self, name: str, off_s: float) -> None:
        from labgrid.driver.exception import NoDriverFoundError
        from labgrid.resource import NetworkPowerPort
        from labgrid.resource.remote import NetworkUSBPowerPort

        place = self._session.places[name]
        target = self._session._get_target(place)
        try:
            try:
                drv = target.get_driver("PowerProtocol")
            except NoDriverFoundError:
                drv = None
                for res in target.resources:
                    cls = {NetworkPowerPort: "NetworkPowerDriver", NetworkUSBPowerPort: "USBPowerDriver"}.get(type(res))
                    if cls:
                        drv = self._session._get_driver_or_new(target, cls)
                        break
                if drv is None:
                    raise ConfigError(
                        f"labgrid place {name} has no power resource",
                        f"add one (labgrid-client -p {name} add-match …/NetworkPowerPort/…) or use power: {{command: …}}",
                    ) from None
            target.activate(drv)
            drv.off()
            time.sleep(off_s)
            drv.on()
        finally:
            target.cleanup()

    # ----- the API the lab uses (any thread)
    def acquire(self, pattern: str, *, wait: float = 0.0, stop: threading.Event | None = None) -> PlaceHandle:
        """Acquire the place; `BoardBusyError` naming its holder after `wait` seconds."""
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            name, holder = self._call(self._try_acquire, pattern)
            if holder is None:
                with self._guard:
                    self._acquired.add(name)
                return PlaceHandle(self, name)
            if time.monotonic() >= deadline:
                raise BoardBusyError(
                    f"labgrid place {name} is busy: acquired by {holder}",
                    "wait for it (--wait SECONDS), or reserve it: labgrid-client reserve name=" + name,
                    {"labgrid": holder},
                )
            if stop is not None and stop.wait(0.5):
                raise KeyboardInterrupt
            if stop is None:
                time.sleep(0.5)

    def release(self, name: str) -> None:
        with self._guard:
            if name not in self._acquired:
                return
            self._acquired.discard(name)
        self._call(self._release, name)

    def place_state(self, pattern: str) -> dict:
        def f():
            p = self._place(pattern)
            return {"name": p.name, "acquired": p.acquired, "reservation": p.reservation}

        return self._call(f)

    def close(self) -> None:
        """Release every place still held, then end the session."""
        if self._closed:
            return
        for name in list(self._acquired):
            try:
                self.release(name)
            except Exception:  # noqa: BLE001 - closing must go on
                pass

        def stop():
            if self._session is not None:
                try:
                    self._run(self._session.stop())
                    self._run(self._session.close())
                except Exception:  # noqa: BLE001
                    pass
            if self._loop is not None:
                self._loop.close()

        try:
            self._pool.submit(stop).result(timeout=10)
        finally:
            self._closed = True
            self._pool.shutdown(wait=False)


class PlaceHandle:
    """An acquired place: its serial URL (looked up each time), power, release."""

    def __init__(self, client: LabgridClient, name: str):
        self.client, self.name = client, name

    def url(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.client._call(self.client._serial, self.name)
            except DeviceError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.25)

    def power_cycle(self, off_s: float = 1.0) -> None:
        self.client._call(self.client._power_cycle, self.name, off_s)

    def close(self) -> None:
        self.client.release(self.name)
