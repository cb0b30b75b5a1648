"""JWT verification: token in, teacher id and expiry out (pure; no I/O).

A session lives as long as its token: the server closes it with 4401 "token
expired" at ``exp`` (plus the leeway); a client reconnects with a fresh token
and ``resume``, so nothing is missed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jwt

from contracts.rules import id_violations
from router.errors import AuthError, ConfigError
from router.settings import RouterSettings

MIN_HS_SECRET_BYTES = 32  # RFC 7518 section 3.2: at least the hash's size


@dataclass(frozen=True)
class Identity:
    teacher_id: str
    expires_at: float  # epoch seconds, the token's exp


@dataclass(frozen=True)
class Verifier:
    """Verifies tokens: ``sub`` is the teacher id, ``exp`` is required."""

    key: str
    algorithms: tuple[str, ...]
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 10.0

    @classmethod
    def from_settings(cls, s: RouterSettings) -> Verifier:
        """Raises ConfigError when no key is configured or the algorithms do not fit it."""
        algs = tuple(s.jwt_algorithms)
        if s.jwt_public_key:
            if any(a.startswith("HS") for a in algs):
                raise ConfigError("jwt_algorithms", "use RS256 or ES256 with a public key")
            key = s.jwt_public_key
        elif s.jwt_secret is not None and s.jwt_secret.get_secret_value():
            if any(not a.startswith("HS") for a in algs):
                raise ConfigError("jwt_algorithms", "use HS256 with a shared secret")
            key = s.jwt_secret.get_secret_value()
            if len(key.encode()) < MIN_HS_SECRET_BYTES:
                raise ConfigError("jwt_secret", f"is {len(key.encode())} bytes; an HS256 secret "
                                  f"needs at least {MIN_HS_SECRET_BYTES} (for example "
                                  "`openssl rand -hex 32`)")  # fmt: skip
        else:
            raise ConfigError("jwt_secret", "set OUTBOX_JWT_SECRET or OUTBOX_JWT_PUBLIC_KEY")
        return cls(key, algs, s.jwt_audience, s.jwt_issuer, s.jwt_leeway_s)

    def verify(self, token: str | None) -> Identity:
        """The identity in a valid ``token``.

        Raises:
            AuthError: missing, malformed, badly signed, expired, not yet valid,
                wrong audience or issuer, a time claim that is not a number, or a
                ``sub`` that is not a valid teacher id.
        """
        if not token:
            raise AuthError("missing token")
        options = {"require": ["exp", "sub"], "verify_aud": self.audience is not None}
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError("wrong issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token has no {exc.claim} claim") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token not yet valid") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad signature") from None
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        for claim in ("exp", "nbf", "iat"):
            v = claims.get(claim)
            if claim in claims and not _finite_number(v):
                raise AuthError(f"token's {claim} claim is not a number")
        sub = claims.get("sub")
        if not isinstance(sub, str) or id_violations("teacher_id", sub, required=True):
            raise AuthError("token's sub claim is not a valid teacher id")
        return Identity(sub, float(claims["exp"]))


def _finite_number(v: object) -> bool:
    """A JSON number a float holds: not a bool, not infinite, not an integer
    too large for a float (a time claim of 10**400 would overflow)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def mint(
    secret_or_private_key: str,
    teacher_id: str,
    ttl_s: int,
    *,
    algorithm: str = "HS256",
    audience: str | None = None,
    issuer: str | None = None,
    now: float,
) -> str:
    """A development token for ``teacher_id`` valid for ``ttl_s`` seconds."""
    claims: dict[str, object] = {"sub": teacher_id, "iat": int(now), "exp": int(now + ttl_s)}
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret_or_private_key, algorithm=algorithm)
