"""OAuth client-credentials tokens: issue JWT-shaped bearer tokens and check them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import uuid
from urllib.parse import parse_qs

from .common import ApiError


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def service_user_id(access_key_id: str) -> str:
    """A stable uuid for the service user owning ``access_key_id``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"m3ter-emulator:{access_key_id}"))


class TokenIssuer:
    """Issues and validates bearer tokens for one set of service-user credentials."""

    def __init__(self, org_id: str, access_key_id: str, api_secret: str, expires_in: int) -> None:
        self.org_id = org_id
        self.access_key_id = access_key_id
        self.api_secret = api_secret
        self.expires_in = int(expires_in)
        self._signing_key = secrets.token_bytes(32)
        self._tokens: dict[str, float] = {}  # token -> expiry (epoch seconds)

    def reset(self) -> None:
        """Forget every issued token."""
        self._tokens.clear()

    def expire_all(self) -> int:
        """Make every issued token expired now; return how many there were."""
        past = time.time() - 1
        for token in self._tokens:
            self._tokens[token] = past
        return len(self._tokens)

    def exchange(self, authorization: str | None, content_type: str, body: bytes) -> dict:
        """Answer ``POST /oauth/token``: check Basic credentials and grant type, issue a token."""
        if not self._basic_credentials_ok(authorization):
            raise ApiError(401, "Unauthorized: invalid client credentials (access key id / api secret)")
        grant_type = _grant_type(content_type, body)
        if grant_type != "client_credentials":
            raise ApiError(400, f"Unsupported grant_type {grant_type!r}: expected 'client_credentials'")
        return {
            "access_token": self._new_token(),
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }

    def check_bearer(self, authorization: str | None) -> None:
        """Raise a 403 unless ``authorization`` carries a known, unexpired bearer token."""
        if not authorization:
            raise ApiError(403, "Forbidden: missing Authorization header with a Bearer token")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(403, "Forbidden: the Authorization header must be 'Bearer <token>'")
        expiry = self._tokens.get(token)
        if expiry is None:
            raise ApiError(403, "Forbidden: invalid bearer token")
        if time.time() >= expiry:
            raise ApiError(403, "Forbidden: the bearer token has expired")

    def _basic_credentials_ok(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        key, sep, secret = decoded.partition(":")
        return (
            bool(sep)
            # as bytes: compare_digest refuses str holding non-ASCII characters
            and hmac.compare_digest(key.encode("utf-8"), self.access_key_id.encode("utf-8"))
            and hmac.compare_digest(secret.encode("utf-8"), self.api_secret.encode("utf-8"))
        )

    def _new_token(self) -> str:
        now = time.time()
        header = {"alg": "HS256", "typ": "JWT"}
        payload = {
            "sub": service_user_id(self.access_key_id),
            "orgId": self.org_id,
            "iss": "m3ter-emulator",
            "iat": int(now),
            "exp": int(now + self.expires_in),
            "jti": str(uuid.uuid4()),
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload)
        )
        signature = hmac.new(self._signing_key, signing_input.encode(), hashlib.sha256).digest()
        token = f"{signing_input}.{_b64url(signature)}"
        self._tokens[token] = now + self.expires_in
        return token


def _grant_type(content_type: str, body: bytes) -> str | None:
    """Read ``grant_type`` from a form-encoded or JSON body."""
    text = body.decode("utf-8", errors="replace").strip()
    if "json" in content_type.lower() or text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        value = data.get("grant_type") if isinstance(data, dict) else None
        return value if isinstance(value, str) else None
    values = parse_qs(text).get("grant_type")
    return values[0] if values else None
