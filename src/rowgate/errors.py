"""The one exception tree. Every error a user can cause carries a SQLSTATE so the
proxy can turn it into an ErrorResponse and the CLI into a clear message."""

from __future__ import annotations


class RowgateError(Exception):
    """Base of every error rowgate raises on purpose."""

    sqlstate = "XX000"
    severity = "ERROR"

    def __init__(self, message: str, *, detail: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.hint = hint


class ConfigError(RowgateError):
    """The configuration file is missing, malformed or invalid (names the key path)."""

    sqlstate = "F0000"


class ProtocolViolation(RowgateError):
    """A peer sent bytes that are not valid protocol 3.0; the connection is closed."""

    sqlstate = "08P01"
    severity = "FATAL"


class MessageTooLarge(ProtocolViolation):
    """A length field exceeds the configured maximum; nothing was allocated for it."""

    sqlstate = "54000"


class InvalidPassword(RowgateError):
    sqlstate = "28P01"
    severity = "FATAL"


class InvalidAuthorization(RowgateError):
    sqlstate = "28000"
    severity = "FATAL"


class LoginLocked(InvalidAuthorization):
    """Too many failed logins for an identity or from an address (brute-force lockout)."""


class CredentialEnded(InvalidAuthorization):
    """A session's credential was revoked or expired while the session was open."""


class UnknownDatabase(RowgateError):
    sqlstate = "3D000"
    severity = "FATAL"


class TooManyConnections(RowgateError):
    sqlstate = "53300"
    severity = "FATAL"


class UpstreamUnavailable(RowgateError):
    """rowgate could not connect or authenticate to the upstream database."""

    sqlstate = "08006"
    severity = "FATAL"


class FeatureNotSupported(RowgateError):
    sqlstate = "0A000"
    severity = "FATAL"


class AdminShutdown(RowgateError):
    sqlstate = "57P01"
    severity = "FATAL"


class IdleSessionTimeout(RowgateError):
    sqlstate = "57P05"
    severity = "FATAL"


class StartupTimeout(RowgateError):
    sqlstate = "08006"
    severity = "FATAL"


class StateStoreUnavailable(RowgateError):
    """The state store (token identities) could not be read during a login: refused."""

    sqlstate = "58030"
    severity = "FATAL"


class AuditUnavailable(RowgateError):
    """The audit log could not be written: the statement is refused (fail closed)."""

    sqlstate = "58030"


class MaskingError(RowgateError):
    """A result could not be masked (malformed value, detector failure, unexpected message):
    the connection is closed rather than send it (fail closed)."""

    sqlstate = "XX000"
    severity = "FATAL"
