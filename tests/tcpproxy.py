"""A TCP proxy a test can cut and restore: a database outage without touching the server.

``cut()`` closes every relayed connection and refuses new ones (as a server that went away);
``restore()`` relays again. The shared PostgreSQL server itself is never stopped.
``PgWireCounter`` reads what the clients send through it: how many statements, how many
round trips (the PostgreSQL frontend protocol's message types, counted over every connection).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import struct
from collections.abc import Callable

Tap = Callable[[int, bytes], None]  # (connection number, bytes the client sent)


class CuttableProxy:
    """127.0.0.1:<port> relayed to ``target``."""

    def __init__(self, target_host: str, target_port: int, tap: Tap | None = None) -> None:
        self._target = (target_host, target_port)
        self._tap = tap
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._relays: set[asyncio.Task[None]] = set()
        self.port = 0
        self.accepted = 0

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def restore(self) -> None:
        """Listen again, on the same port."""
        if self._server is None:
            await self.start(self.port)

    async def stop(self) -> None:
        await self.cut()
        for task in list(self._relays):
            task.cancel()
        for task in list(self._relays):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))
        sent = None if self._tap is None else functools.partial(self._tap, self.accepted)
        for src, dst, tap in ((reader, up_writer, sent), (up_reader, writer, None)):
            task = asyncio.create_task(self._pipe(src, dst, tap))
            self._relays.add(task)
            task.add_done_callback(self._relays.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    tap: Callable[[bytes], None] | None) -> None:
        try:
            while data := await src.read(65536):
                if tap is not None:
                    tap(data)
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._links.discard(dst)
            dst.transport.abort()


class PgWireCounter:
    """Counts the frontend messages clients send to PostgreSQL, by type, over all connections:
    ``E`` (Execute: one statement run), ``S`` (Sync: the end of an extended-protocol round
    trip), ``Q`` (a simple query such as BEGIN or COMMIT: one round trip of its own)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._pending: dict[int, bytearray] = {}
        self._started: set[int] = set()  # connections past their startup message

    def __call__(self, connection: int, data: bytes) -> None:
        buffer = self._pending.setdefault(connection, bytearray())
        buffer += data
        while True:
            if connection not in self._started:  # SSLRequest / StartupMessage: no type byte
                if len(buffer) < 8:
                    return
                length, code = struct.unpack("!II", buffer[:8])
                if len(buffer) < length:
                    return
                del buffer[:length]
                if code != 80877103:  # not an SSLRequest: the startup message itself
                    self._started.add(connection)
                continue
            if len(buffer) < 5:
                return
            length = struct.unpack("!I", buffer[1:5])[0]
            if len(buffer) < 1 + length:
                return
            self.counts[chr(buffer[0])] += 1
            del buffer[:1 + length]

    @property
    def round_trips(self) -> int:
        return self.counts["S"] + self.counts["Q"]

    @property
    def statements(self) -> int:
        return self.counts["E"] + self.counts["Q"]
