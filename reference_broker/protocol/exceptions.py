"""The codec's exceptions.

A broker must tell three failures apart: bytes it cannot parse (close the connection or answer
INVALID_REQUEST), a version it does not speak (answer UNSUPPORTED_VERSION with the right
correlation id, never close), and a handler that built an impossible response (a bug here).
So the three are separate classes, and ``UnsupportedVersion`` deliberately does not derive from
``ProtocolError``: an ``except ProtocolError`` written first must not swallow it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .api_keys import api_name

if TYPE_CHECKING:
    from .header import RequestHeader


class _LocatedError(Exception):
    """An error inside a message: keeps the field path so the message says where it happened.

    Decoders raise it with the bare reason; every enclosing struct or array prepends its field
    name or index on the way out, and the top level fills in which message it was.
    """

    def __init__(self, reason: str, *, path: list[str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = path if path is not None else []
        self.where = ""

    @property
    def field_path(self) -> str:
        """The failing field, e.g. ``topic_data[0].partition_data[1].records``."""
        return "".join(p if p.startswith("[") else "." + p for p in self.path).lstrip(".")

    def __str__(self) -> str:
        return ": ".join(part for part in (self.where, self.field_path, self.reason) if part)


class ProtocolError(_LocatedError):
    """Bytes that are not a valid frame of the message they claim to be.

    ``header`` is the request header when it was parsed before the failure, so the broker can
    still log (or answer) with the client's correlation id.
    """

    def __init__(self, reason: str, *, header: RequestHeader | None = None) -> None:
        super().__init__(reason)
        self.header = header


class EncodeError(_LocatedError, ValueError):
    """A message dict that cannot be encoded (wrong type, integer out of range, null where the
    version does not allow it): a bug in the caller, reported with the field path."""


class UnsupportedVersion(Exception):
    """An API key or version this codec does not handle.

    The broker answers it with error UNSUPPORTED_VERSION (35) using ``header.correlation_id``.
    """

    def __init__(self, api_key: int, api_version: int, header: RequestHeader | None = None) -> None:
        super().__init__(f"{api_name(api_key)} v{api_version} is not supported by this codec")
        self.api_key = api_key
        self.api_version = api_version
        self.header = header
