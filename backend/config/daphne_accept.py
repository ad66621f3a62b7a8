"""New connections to the least busy of ``manage.py serve``'s daphne processes.

The processes share one listening socket and each accepts from it when it wakes. Twisted
accepts up to a hundred connections per wake-up, so clients that connect together (four
scanners or workstations starting a send) all went to whichever process woke first, and each
keeps its connection for all its requests: one core did all the work while the other idled.

:func:`install` (in each daphne process of ``serve``, before daphne starts) makes a process
accept one connection per wake-up, and a process that already holds connections first waits
a moment (``WAIT_S`` per connection held, at most ``MAX_WAIT_S``), so an idle process takes
the connection if there is one; if none does, the waiting one accepts it afterwards. Nothing
is refused and nothing waits longer than ``MAX_WAIT_S``.
"""

from __future__ import annotations

from typing import Any

WAIT_S = 0.002
MAX_WAIT_S = 0.010


def install(reactor: Any) -> None:
    """Patch Twisted's TCP server port and connections in this process (once)."""
    from twisted.internet import tcp

    port_class: Any = tcp.Port
    server_class: Any = tcp.Server
    if getattr(port_class, "_artiscan_least_busy", False):
        return
    live: set[Any] = set()  # this process' open server connections
    accept = port_class.doRead
    made = server_class.__init__
    lost = server_class.connectionLost

    def server_init(self: Any, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        live.add(self)

    def connection_lost(self: Any, reason: Any) -> None:
        live.discard(self)
        lost(self, reason)

    def do_read(port: Any) -> Any:
        port.numberAccepts = 1
        if live and not getattr(port, "_artiscan_waited", False):
            port._artiscan_waited = True
            port.stopReading()
            reactor.callLater(min(MAX_WAIT_S, WAIT_S * len(live)), port.startReading)
            return None
        port._artiscan_waited = False
        return accept(port)

    server_class.__init__ = server_init
    server_class.connectionLost = connection_lost
    port_class.doRead = do_read
    port_class._artiscan_least_busy = True
