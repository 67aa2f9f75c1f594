"""One clear line for a Kafka connection that cannot work, the same for both clients.

kafka-python and librdkafka report a wrong password, an unknown CA, a certificate for another
host or a plaintext/TLS mismatch in their own ways (kafka-python mostly as "no brokers
available" after its retries, librdkafka as error callbacks). Before a service builds its
clients it connects once itself, with Python's ``ssl`` and the Kafka protocol's ApiVersions,
SaslHandshake and SaslAuthenticate requests (SCRAM through the ``scramp`` package), and turns
the first failure into one line saying which it is. Secrets never appear in it.
"""

from __future__ import annotations

import socket
import ssl
import struct

from hera_kit.kafka_config import KafkaConfig, as_config

# Kafka error codes the probe names (from the protocol's error table)
_UNSUPPORTED_SASL_MECHANISM = 33
_ILLEGAL_SASL_STATE = 34
_SASL_AUTHENTICATION_FAILED = 58
_EXPIRED, _HOSTNAME = 10, (62, 64)  # 64: an IP address the certificate does not name
_UNKNOWN_CA = (2, 18, 19, 20, 21)
# what a TLS handshake against a plaintext listener ends with (OpenSSL reasons, Python errors)
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNEXPECTED_EOF_WHILE_READING",
            "EOFError", "ConnectionResetError", "SSLEOFError", "HTTP_REQUEST", "TimeoutError")


def unreachable_message(servers: object, why: str = "") -> str:
    """The one line for a broker nobody answers at (``servers``: the list, never secrets)."""
    return (f"cannot reach the Kafka broker at {servers}{why}: check --bootstrap-servers and "
            "that the broker is running")


class KafkaUnreachable(RuntimeError):
    """No bootstrap server accepts a TCP connection: the message is the one line to show."""


class KafkaSecurityError(RuntimeError):
    """The connection's TLS or SASL cannot work: the message is the one line to show."""


def _server(entry: str) -> tuple[str, int]:
    host, _, port = entry.strip().rpartition(":")
    return host or "localhost", int(port)


def _request(api_key: int, version: int, body: bytes, correlation: int) -> bytes:
    client = b"hera-guard-probe"
    header = struct.pack(">hhih", api_key, version, correlation, len(client)) + client
    return struct.pack(">i", len(header) + len(body)) + header + body


def read_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out


def _call(sock: socket.socket, api_key: int, version: int, body: bytes, correlation: int
          ) -> bytes:
    sock.sendall(_request(api_key, version, body, correlation))
    size = struct.unpack(">i", read_exact(sock, 4))[0]
    if not 4 <= size <= 10 * 1024 * 1024:
        raise ValueError("not a Kafka response")
    payload = read_exact(sock, size)
    if struct.unpack(">i", payload[:4])[0] != correlation:
        raise ValueError("not a Kafka response")
    return payload[4:]


def _string(data: bytes, at: int) -> tuple[str | None, int]:
    n = struct.unpack(">h", data[at:at + 2])[0]
    if n < 0:
        return None, at + 2
    return data[at + 2:at + 2 + n].decode(errors="replace"), at + 2 + n


def _tls(cfg: KafkaConfig, sock: socket.socket, host: str, where: str) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_location)
    ctx.check_hostname = cfg.ssl_check_hostname
    if cfg.ssl_certificate_location and cfg.ssl_key_location:
        try:
            ctx.load_cert_chain(cfg.ssl_certificate_location, cfg.ssl_key_location,
                                password=cfg.ssl_key_password)
        except ssl.SSLError:
            raise KafkaSecurityError(
                "ssl.certificate.location/ssl.key.location: the client certificate and key do "
                "not load (wrong ssl.key.password, or a key that is not the certificate's)"
            ) from None
    try:
        return ctx.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        code = exc.verify_code
        if code == _EXPIRED:
            why = "has expired"
        elif code in _HOSTNAME:
            why = (f"is not for host {host} (hostname verification; "
                   "ssl.endpoint.identification.algorithm)")
        elif code in _UNKNOWN_CA:
            why = ("is not signed by a CA this client trusts (unknown CA: check "
                   "ssl.ca.location)")
        else:
            why = f"was refused: {exc.verify_message}"
        raise KafkaSecurityError(f"TLS to the Kafka broker at {where}: its certificate "
                                 f"{why}") from None
    except (ssl.SSLError, EOFError, ConnectionError, TimeoutError) as exc:
        # a plaintext Kafka listener reads the ClientHello as the start of a huge request
        # and waits for the rest: no answer at all (TimeoutError) means no TLS there
        reason = getattr(exc, "reason", None) or type(exc).__name__
        if reason in _NOT_TLS:
            raise KafkaSecurityError(
                f"TLS to the Kafka broker at {where}: the listener does not speak TLS "
                f"(security.protocol={cfg.security_protocol} against a plaintext listener?)"
            ) from None
        raise KafkaSecurityError(f"TLS to the Kafka broker at {where} failed: {reason}"
                                 ) from None


def _sasl(cfg: KafkaConfig, sock: socket.socket, where: str) -> None:
    mech = cfg.sasl_mechanism or ""
    mech_b = mech.encode()
    answer = _call(sock, 17, 1, struct.pack(">h", len(mech_b)) + mech_b, 2)
    error = struct.unpack(">h", answer[:2])[0]
    if error == _UNSUPPORTED_SASL_MECHANISM:
        count = struct.unpack(">i", answer[2:6])[0]
        at, offered = 6, []
        for _ in range(max(count, 0)):
            name, at = _string(answer, at)
            offered.append(name or "")
        raise KafkaSecurityError(f"SASL at the Kafka broker at {where}: mechanism {mech} is not "
                                 f"enabled there (it offers: {', '.join(offered) or 'none'})")
    if error != 0:
        raise KafkaSecurityError(f"SASL at the Kafka broker at {where}: the handshake was "
                                 f"refused (Kafka error {error}; does this listener do SASL?)")
    if mech == "PLAIN":
        token = b"\0" + (cfg.sasl_username or "").encode() + b"\0" + \
            (cfg.sasl_password or "").encode()
        _authenticate(sock, token, where, cfg, 3)
        return
    from scramp import ScramClient, ScramException  # type: ignore[import-untyped]

    client = ScramClient([mech], cfg.sasl_username or "", cfg.sasl_password or "")
    server_first = _authenticate(sock, client.get_client_first().encode(), where, cfg, 3)
    try:
        client.set_server_first(server_first.decode())
        final = client.get_client_final()
    except ScramException as exc:
        raise KafkaSecurityError(f"SASL {mech} at the Kafka broker at {where}: the exchange "
                                 f"failed ({exc})") from None
    server_final = _authenticate(sock, final.encode(), where, cfg, 4)
    try:
        client.set_server_final(server_final.decode())
    except ScramException:
        raise KafkaSecurityError(f"SASL {mech} at the Kafka broker at {where}: the broker's "
                                 "proof is wrong (it does not know this password)") from None


def _authenticate(sock: socket.socket, token: bytes, where: str, cfg: KafkaConfig,
                  correlation: int) -> bytes:
    answer = _call(sock, 36, 1, struct.pack(">i", len(token)) + token, correlation)
    error = struct.unpack(">h", answer[:2])[0]
    message, at = _string(answer, 2)
    if error == _SASL_AUTHENTICATION_FAILED:
        raise KafkaSecurityError(
            f"SASL {cfg.sasl_mechanism} at the Kafka broker at {where}: authentication failed "
            f"for user {cfg.sasl_username} (wrong username or password)")
    if error != 0:
        raise KafkaSecurityError(f"SASL {cfg.sasl_mechanism} at the Kafka broker at {where}: "
                                 f"Kafka error {error} ({message or 'no message'})")
    n = struct.unpack(">i", answer[at:at + 4])[0]
    return answer[at + 4:at + 4 + max(n, 0)]


def probe(cfg: KafkaConfig, timeout_s: float = 5.0) -> None:
    """Connect to the first answering bootstrap server as the clients will; raise
    :class:`KafkaSecurityError` with one line if TLS or SASL cannot work. A server that does
    not accept TCP at all is left to the caller's reachability check."""
    last: KafkaSecurityError | None = None
    for entry in cfg.bootstrap_servers.split(","):
        try:
            host, port = _server(entry)
            raw = socket.create_connection((host, port), timeout=timeout_s)
        except (OSError, ValueError):
            continue
        where = f"{host}:{port}"
        sock: socket.socket = raw
        try:
            if cfg.uses_tls:
                sock = _tls(cfg, raw, host, where)
            served = False
            try:
                if cfg.uses_sasl:
                    _sasl(cfg, sock, where)
                _call(sock, 18, 0, b"", 9)  # ApiVersions: a Kafka listener that took us
                served = True
                # Metadata (no topics): served only once authenticated; a SASL listener
                # closes the connection here for a client that did not authenticate
                _call(sock, 3, 1, struct.pack(">i", 0), 10)
            except ssl.SSLError as exc:
                # TLS 1.3: the server judges the client certificate after the handshake, so
                # its refusal is an alert or a bare close on the first read
                refused = isinstance(exc, ssl.SSLEOFError) or any(
                    r in str(exc) for r in ("CERTIFICATE_REQUIRED", "HANDSHAKE_FAILURE",
                                            "UNKNOWN_CA", "BAD_CERTIFICATE"))
                if refused and not cfg.ssl_certificate_location:
                    raise KafkaSecurityError(
                        f"TLS to the Kafka broker at {where}: the broker requires a client "
                        "certificate (ssl.certificate.location, ssl.key.location)") from None
                if refused:
                    raise KafkaSecurityError(
                        f"TLS to the Kafka broker at {where}: the broker refused the client "
                        "certificate in ssl.certificate.location (not signed by a CA it "
                        "trusts, or expired)") from None
                raise KafkaSecurityError(f"TLS to the Kafka broker at {where} failed: "
                                         f"{exc.reason or exc}") from None
            except (EOFError, ValueError, ConnectionError, struct.error):
                if served:
                    raise KafkaSecurityError(
                        f"the Kafka broker at {where} answers but serves no requests to this "
                        f"client: it requires SASL (security.protocol={cfg.security_protocol}; "
                        "use SASL_SSL with sasl.mechanism, sasl.username, sasl.password)"
                    ) from None
                if cfg.uses_tls:
                    raise KafkaSecurityError(
                        f"the Kafka broker at {where} closed the connection after TLS "
                        f"(security.protocol={cfg.security_protocol}: does the listener expect "
                        "SASL, or no SASL?)") from None
                raise KafkaSecurityError(
                    f"the Kafka broker at {where} does not answer a plaintext client "
                    f"(security.protocol={cfg.security_protocol} against a TLS or SASL "
                    "listener? use SSL or SASL_SSL)") from None
            return
        except KafkaSecurityError as exc:
            last = exc
        except (TimeoutError, OSError) as exc:
            last = KafkaSecurityError(f"the Kafka broker at {where} did not answer the "
                                      f"connection check ({type(exc).__name__})")
        finally:
            sock.close()
    if last is not None:
        raise last


def check_reachable(kafka: KafkaConfig | str, timeout_s: float = 5.0) -> None:
    """Fail fast with one clear line when no bootstrap server accepts a TCP connection
    (KafkaUnreachable: kafka-python would otherwise retry for tens of seconds before saying
    so), or when the connection's TLS or SASL cannot work (KafkaSecurityError, from
    :func:`probe`, naming which, the same for both clients). Every service checks its broker
    with it before building clients."""
    cfg = as_config(kafka)
    for entry in cfg.bootstrap_servers.split(","):
        try:
            with socket.create_connection(_server(entry), timeout=timeout_s):
                break
        except (OSError, ValueError):
            continue
    else:
        raise KafkaUnreachable(unreachable_message(cfg))
    probe(cfg, timeout_s)
