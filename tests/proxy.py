"""A TCP proxy on 127.0.0.1 in front of a real server, with faults the tests switch on and off.

- `down()`: every open connection is closed and new ones are refused (a server that died).
- `blackhole()`: connections stay open but nothing is forwarded either way; new ones are accepted and
  left unanswered (a server or network that stopped answering).
- `up()`: forwarding again (after `down()`, on the same port).

Written by hand because the fault modes are the point: a plain forwarding proxy library has no switch
for them, and this is a few dozen lines over `socket` and `select`.
"""

from __future__ import annotations

import select
import socket
import threading
import time


class FaultyProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = "up"
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener = self._listen(0)
        self.port = int(self._listener.getsockname()[1])
        self._stopped = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        listener.settimeout(0.2)
        return listener

    def down(self) -> None:
        with self._lock:
            self.mode = "down"
            self._listener.close()
            for conn in self._conns:
                conn.close()
            self._conns.clear()

    def blackhole(self) -> None:
        self.mode = "blackhole"

    def up(self) -> None:
        with self._lock:
            if self.mode == "down":
                self._listener = self._listen(self.port)
            self.mode = "up"

    def close(self) -> None:
        self._stopped = True
        self.down()

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:  # a timeout, or the listener closed while down
                time.sleep(0.05)
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._conns += [client, server]
        peers = {client: server, server: client}
        try:
            while not self._stopped:
                if self.mode == "blackhole":
                    time.sleep(0.05)
                    continue
                readable, _, _ = select.select(list(peers), [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):  # a socket closed under us by down(): ValueError from select on fd -1
            return
        finally:
            client.close()
            server.close()
