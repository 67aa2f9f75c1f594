"""Where an archive lives: a local directory or any URI deltalake supports (``s3://bucket/p``,
``gs://``, ``az://``, ...), with the object store's options (credentials, endpoint) passed in
explicitly. The CLI builds those options from the standard ``AWS_*`` variables
(``settings.StorageSettings``); library code never reads the environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from consumers.archive.layout import UnsupportedLocationError
from hera_kit import logs

# The schemes deltalake (delta-rs) opens tables on; anything else it refuses ("Unknown scheme").
_REMOTE = ("s3://", "s3a://", "gs://", "gcs://", "az://", "abfs://", "abfss://", "adl://",
           "azure://", "hdfs://", "viewfs://", "lakefs://", "memory://")
# Anything shaped like a URI: taken for a local path it would silently become a directory
# named "s4:" under the working directory.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class ArchiveLocation:
    uri: str  # a local absolute path, or a remote URI
    storage_options: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def is_local(self) -> bool:
        return not self.uri.startswith(_REMOTE)

    @property
    def path(self) -> Path:
        return Path(self.uri)

    def options(self) -> dict[str, str] | None:
        return dict(self.storage_options) or None

    def __str__(self) -> str:
        """For messages: the URI without any user:password part."""
        return logs.redact(self.uri)


def archive_location(target: str | Path | ArchiveLocation,
                     storage_options: Mapping[str, str] | None = None) -> ArchiveLocation:
    if isinstance(target, ArchiveLocation):
        return target
    text = str(target)
    if text.startswith("file://"):
        text = text[len("file://"):]
    if text.startswith(_REMOTE):
        return ArchiveLocation(text.rstrip("/"), dict(storage_options or {}))
    if _URI.match(text):
        scheme = text.split("://", 1)[0]
        known = ", ".join(s.rstrip(":/") for s in ("file://", *_REMOTE))
        raise UnsupportedLocationError(
            f"unknown archive URI scheme {scheme!r} in {logs.redact(text)}; use a local path "
            f"or one of {known} (e.g. s3://bucket/prefix)")
    return ArchiveLocation(str(Path(text).absolute()), {})


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_S3_CODE = re.compile(r"<Code>([^<]+)</Code>")
_S3_MESSAGE = re.compile(r"<Message>([^<]+)</Message>")


def store_error(exc: BaseException) -> str:
    """One line out of an object-store / Delta error: S3's own code and message when the
    store answered (``NoSuchBucket: The specified bucket does not exist``), else the first
    and the innermost cause (``Generic S3 error ... Connection refused (os error 111)``)."""
    text = _ANSI.sub("", str(exc))
    code, message = _S3_CODE.search(text), _S3_MESSAGE.search(text)
    if code:
        return logs.redact(code.group(1) + (f": {message.group(1)}" if message else ""))[:300]
    lines = [ln.strip().lstrip("↳").strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        return type(exc).__name__
    out = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return logs.redact(out)[:300]


# Answers of a store that will not change by waiting: credentials, permissions, the bucket.
_LASTING = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket",
            "InvalidBucketName", "AllAccessDisabled", "AccountProblem", "InvalidToken",
            "ExpiredToken", "lacked the necessary privileges", "Permission denied")


def store_failure_passes(exc: BaseException) -> bool:
    """Whether a store failure may pass by waiting (5xx, timeouts, refused connections, a
    full disk) rather than needing the operator (credentials, permissions, the bucket)."""
    if isinstance(exc, PermissionError):
        return False
    text = _ANSI.sub("", str(exc))
    return not any(word in text for word in _LASTING)
