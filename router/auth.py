"""JWT verification: token in, teacher id out (pure; no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

import jwt

from router.errors import AuthError, ConfigError
from router.settings import RouterSettings


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
        else:
            raise ConfigError("jwt_secret", "set OUTBOX_JWT_SECRET or OUTBOX_JWT_PUBLIC_KEY")
        return cls(key, algs, s.jwt_audience, s.jwt_issuer, s.jwt_leeway_s)

    def verify(self, token: str | None) -> str:
        """The teacher id of a valid ``token``.

        Raises:
            AuthError: missing, malformed, badly signed, expired, not yet valid,
                wrong audience or issuer, or no ``sub``.
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
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip():
            raise AuthError("token has an empty sub claim")
        return sub


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
