"""Client authentication: who is this connection?

- Without TLS (or without OIDC configured): SCRAM-SHA-256 against the token's
  verifier; the token never crosses the wire. A JWT sent this way just fails:
  JWTs need TLS.
- Over TLS with ``auth.oidc``: cleartext password inside TLS, so the password may be
  a JWT (verified against the JWKS) or a rowgate token (checked against its SCRAM
  verifier by deriving the salted password: nothing in clear is stored).
- With ``auth.mtls``: a verified client certificate names the principal and no
  password is asked for, unless ``auth.mtls.password`` requires both.

Every password failure counts towards the brute-force throttle; a certificate-only
login has nothing to guess and is not throttled."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rowgate.config import Config
from rowgate.errors import (
    InvalidAuthorization,
    InvalidPassword,
    ProtocolViolation,
    RowgateError,
    StateStoreUnavailable,
)
from rowgate.identity.access import AccessMap
from rowgate.identity.directory import Credential, IdentityDirectory, check_cleartext
from rowgate.identity.mtls import CertificateMapper
from rowgate.identity.oidc import OidcVerifier, looks_like_jwt
from rowgate.identity.principal import Principal
from rowgate.identity.throttle import LoginThrottle
from rowgate.identity.tokenstore import TokenStore
from rowgate.pgwire import backend as be
from rowgate.pgwire.auth import ScramServerExchange, ScramVerifier
from rowgate.statestore import Database, open_state

if TYPE_CHECKING:
    from rowgate.proxy.session import ClientSession

log = logging.getLogger("rowgate.auth")
_P = ord("p")


@dataclass(frozen=True)
class LoginResult:
    principal: Principal
    method: str  # "scram", "password" (token in clear inside TLS), "jwt", "certificate"
    token_id: str | None = None  # a state-store token: the revocation watcher looks for it
    deadline: float | None = None  # epoch seconds: the session is closed then (token expiry, JWT exp + grace)


class Authenticator:
    def __init__(self, config: Config, upstream_passwords: dict[str, str | None]) -> None:
        self.config = config
        self.db: Database | None = None
        store = None
        if config.state is not None or config.data_dir is not None:
            self.db = open_state(config.state, config.data_dir)
            store = TokenStore(self.db)
        self.store = store
        self.directory = IdentityDirectory(config.identities, store)
        auth = config.auth
        self.oidc = OidcVerifier(auth.oidc) if auth.oidc is not None else None
        self.mtls = CertificateMapper(auth.mtls) if auth.mtls is not None else None
        self.throttle = LoginThrottle(auth.throttle)
        self.access = AccessMap(config.upstreams, upstream_passwords)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()

    async def login(self, session: ClientSession, user: str) -> LoginResult:
        addr = session.info.client_addr
        cert = self._certificate(session, user)
        if cert is not None and self.mtls is not None and not self.mtls.cfg.password:
            # nothing to guess, so the throttle has no say: failed guesses at the name's token
            # do not lock its certificate out, nor does the certificate clear their count
            return LoginResult(cert, "certificate")
        self.throttle.check(user, addr)
        try:
            if session.info.tls and self.oidc is not None:
                result = await self._cleartext(session, user, addr)
            else:
                result = await self._scram(session, user, addr)
        except InvalidPassword:
            delay = self.throttle.failed(user, addr)
            session.server.login_failed(user, addr)  # logs a WARNING (and audits)
            if delay:
                await asyncio.sleep(delay)
            raise
        self.throttle.succeeded(user)
        return result

    def _certificate(self, session: ClientSession, user: str) -> Principal | None:
        if self.mtls is None:
            return None
        peercert = session.writer.get_extra_info("peercert") if session.info.tls else None
        if not peercert:
            if self.mtls.cfg.required:
                raise InvalidAuthorization(
                    "rowgate requires a client certificate",
                    hint="connect with TLS and a certificate from your organisation (sslcert/sslkey)",
                )
            return None
        principal = self.mtls.principal(peercert)
        if principal.name != user:
            raise InvalidAuthorization(
                f'the client certificate identifies "{principal.name}", not "{user}"',
                hint=f"connect with user name {principal.name!r}",
            )
        return principal

    async def _lookup(self, user: str) -> Credential | None:
        if self.store is None:
            return self.directory.lookup(user)
        try:
            return await asyncio.to_thread(self.directory.lookup, user)
        except RowgateError:
            raise
        except Exception as e:  # the store's driver: sqlite3 or psycopg, whatever went wrong there
            log.error("login for identity %r refused: cannot read the token store: %s", user, e)
            raise StateStoreUnavailable(
                "rowgate cannot check the credential now: its state store is unavailable",
                hint="try again later; the administrator finds the cause in rowgate's log",
            ) from None

    def _refused(self, user: str) -> InvalidPassword:
        hint = "the password is your rowgate token, not a database password"
        if self.oidc is not None:
            hint += " (an OIDC JWT is accepted only over TLS: sslmode=require)"
        return InvalidPassword(f'password authentication failed for user "{user}"', hint=hint)

    async def _read_password(self, session: ClientSession) -> bytes:
        f = await session._next_frame()
        if f.type != _P:
            raise ProtocolViolation(f"expected a password message, got {chr(f.type)!r}")
        return f.payload

    async def _scram(self, session: ClientSession, user: str, addr: str) -> LoginResult:
        cred = await self._lookup(user)
        mock_salt = None if cred else self.directory.mock_salt(user)  # stable per name: no enumeration
        exchange = ScramServerExchange(cred.verifier if cred else None, mock_salt=mock_salt)
        session.writer.write(exchange.request().encode())
        await session.writer.drain()
        try:
            for i in range(2):
                message = await self._read_password(session)
                if i == 1:
                    # once more, right before the proof is judged: attempts opened in parallel all
                    # passed the first check before any failed. Refusing only a right proof after
                    # judging it would tell the attacker it was right; this refuses any proof.
                    self.throttle.check(user, addr)
                session.writer.write(exchange.step(message).encode())
                await session.writer.drain()
        except InvalidPassword:
            raise self._refused(user) from None
        assert cred is not None  # an unknown user can never complete the exchange
        return self._token_login(cred, "scram")

    async def _cleartext(self, session: ClientSession, user: str, addr: str) -> LoginResult:
        session.writer.write(be.Authentication(be.AUTH_CLEARTEXT).encode())
        await session.writer.drain()
        payload = await self._read_password(session)
        self.throttle.check(user, addr)  # locked out since the first check: as in _scram
        try:
            password = payload.removesuffix(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation("malformed password message: not UTF-8") from None
        if self.oidc is not None and looks_like_jwt(password):
            jwt_login = await asyncio.to_thread(self.oidc.verify, password, user)
            deadline = jwt_login.expires + self.oidc.cfg.expiry_grace
            return LoginResult(jwt_login.principal, "jwt", deadline=deadline)
        cred = await self._lookup(user)
        # an unknown name costs the same key derivation as a known one
        verifier = cred.verifier if cred else ScramVerifier(self.directory.mock_salt(user), os.urandom(32), b"", 4096)
        ok = await asyncio.to_thread(check_cleartext, verifier, password)
        # other guesses may have locked the name out while this one was judged: refuse it then
        # whatever its verdict, so the answer does not tell the attacker the guess was right
        self.throttle.check(user, addr)
        if not ok or cred is None:
            raise self._refused(user)
        return self._token_login(cred, "password")

    @staticmethod
    def _token_login(cred: Credential, method: str) -> LoginResult:
        # checked only after the client proved the token: no one learns a token's state without it
        name = cred.principal.name
        if cred.revoked:
            raise InvalidAuthorization(f'the token of identity "{name}" has been revoked')
        if cred.expires is not None and time.time() >= cred.expires:
            when = datetime.fromtimestamp(cred.expires, UTC).isoformat(timespec="seconds")
            raise InvalidAuthorization(f'the token of identity "{name}" expired at {when}')
        return LoginResult(cred.principal, method, cred.token_id, cred.expires)
