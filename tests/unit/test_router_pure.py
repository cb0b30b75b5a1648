"""Pure parts of the router: JWT verification, record decoding, frames, limits."""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import generate_latest
from pydantic import ValidationError

from contracts import InvalidNotificationError, build_notification
from contracts.catalog import CATALOG
from contracts.notification import read_document
from contracts.protocol import NotificationFrame, client_frame_adapter, server_frame_adapter
from router.auth import Verifier, mint
from router.decode import decode
from router.errors import AuthError, ConfigError, PoisonMessageError
from router.limits import TokenBucket
from router.metrics import RouterMetrics
from router.session import notification_text
from router.settings import RouterSettings
from tests.unit.test_contracts import NOW as DOC_NOW
from tests.unit.test_contracts import deadline_for, ids_for


def test_hs256() -> None:
    NOW = time.time()
    v = Verifier.from_settings(
        RouterSettings(jwt_secret="s" * 32, jwt_audience="a", jwt_issuer="i")
    )
    ident = v.verify(mint("s" * 32, "t1", 60, audience="a", issuer="i", now=NOW))
    assert ident.teacher_id == "t1" and ident.expires_at == int(NOW + 60)
    for token, reason in [
        (None, "missing token"),
        ("x.y.z", "malformed token"),
        (mint("s" * 32, "t1", -100, audience="a", issuer="i", now=NOW), "token expired"),
        (mint("s" * 32, "t1", 60, audience="b", issuer="i", now=NOW), "wrong audience"),
        (mint("s" * 32, "t1", 60, audience="a", issuer="j", now=NOW), "wrong issuer"),
        (mint("o" * 32, "t1", 60, audience="a", issuer="i", now=NOW), "bad signature"),
    ]:
        with pytest.raises(AuthError) as ei:
            v.verify(token)
        assert ei.value.reason == reason
        assert int(ei.value.code) == 4401


def test_es256_public_key() -> None:
    NOW = time.time()
    key = ec.generate_private_key(ec.SECP256R1())
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()  # fmt: skip
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()  # fmt: skip
    v = Verifier.from_settings(RouterSettings(jwt_public_key=pub, jwt_algorithms="ES256"))  # type: ignore[arg-type]
    assert v.verify(mint(priv, "t9", 60, algorithm="ES256", now=NOW)).teacher_id == "t9"
    with pytest.raises(AuthError):
        v.verify(mint("s" * 32, "t9", 60, now=NOW))


def test_verifier_config_errors() -> None:
    with pytest.raises(ConfigError, match="OUTBOX_JWT_SECRET"):
        Verifier.from_settings(RouterSettings())
    with pytest.raises(ConfigError, match="HS256"):
        Verifier.from_settings(RouterSettings(jwt_secret="x", jwt_algorithms="RS256"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="at least 32"):
        Verifier.from_settings(RouterSettings(jwt_secret="dev-secret"))


@pytest.mark.parametrize(
    ("claims", "reason"),
    [({"sub": "t", "exp": "9999999999"}, "token's exp claim is not a number"),
     ({"sub": "t", "exp": True}, "token expired"),  # PyJWT reads True as 1
     ({"sub": "t", "exp": 9999999999, "nbf": "0"}, "token's nbf claim is not a number"),
     ({"sub": "t", "exp": 10**400}, "token's exp claim is not a number"),  # no float holds it
     ({"sub": "t", "exp": 9999999999, "iat": [1]}, "malformed token"),
     ({"sub": "t\ud800", "exp": 9999999999}, "token's sub claim is not a valid teacher id"),
     ({"sub": "t\nINFO forged", "exp": 9999999999}, "token's sub claim is not a valid teacher id"),
     ({"sub": "t\u200f", "exp": 9999999999}, "token's sub claim is not a valid teacher id"),
     ({"sub": "\u3000", "exp": 9999999999}, "token's sub claim is not a valid teacher id"),
     ({"sub": "t" * 129, "exp": 9999999999}, "token's sub claim is not a valid teacher id"),
     ({"sub": 7, "exp": 9999999999}, "malformed token")],
)  # fmt: skip
def test_tokens_with_bad_claims_are_refused(claims: dict[str, object], reason: str) -> None:
    import jwt

    v = Verifier.from_settings(RouterSettings(jwt_secret="s" * 32))
    try:
        token = jwt.encode(claims, "s" * 32, algorithm="HS256")
    except UnicodeEncodeError:  # a lone surrogate: forge the token by hand
        import base64
        import hashlib
        import hmac
        import json

        def b64(b: bytes) -> bytes:
            return base64.urlsafe_b64encode(b).rstrip(b"=")

        head = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(claims).encode())
        sig = b64(hmac.new(b"s" * 32, head, hashlib.sha256).digest())
        token = (head + b"." + sig).decode()
    with pytest.raises(AuthError) as ei:
        v.verify(token)
    assert ei.value.reason == reason


def test_positions_beyond_64_bits_are_not_positions() -> None:
    from contracts.protocol import ResumeFrame, valid_position

    assert valid_position("18446744073709551615-18446744073709551615")
    assert not valid_position("18446744073709551616-0")
    assert not valid_position("1-18446744073709551616")
    assert not valid_position("99999999999999999999-0")
    # ASCII digits and nothing else (frames carry a position as it is)
    for odd in ["1-0\n", "\u0661-\u0660", "\uff11-0", " 1-0", "1-0 ", "1--0", "-1-0", "1-"]:
        assert not valid_position(odd), repr(odd)
    with pytest.raises(ValueError):
        ResumeFrame(position="18446744073709551616-0")


def test_the_position_after_another() -> None:
    from contracts.protocol import next_position

    top = 2**64 - 1
    assert next_position("0-0") == "0-1"
    assert next_position("5-9") == "5-10"
    assert next_position(f"5-{top}") == "6-0"
    assert next_position(f"{top}-{top - 1}") == f"{top}-{top}"
    assert next_position(f"{top}-{top}") is None  # nothing can follow the largest


def test_decode() -> None:
    n = build_notification("class_created", "t1", {"a": 1}, "c", class_id="k")
    r = decode(n.to_json().encode(), [("id", b"e-1"), ("created_at", b"2026-12-01T10:00:00Z")])
    assert (r.event_id, r.teacher_id, r.created_at, r.action_required) == (
        "e-1",
        "t1",
        "2026-12-01T10:00:00Z",
        False,
    )
    assert json.loads(r.notification_json) == json.loads(n.to_json())
    # The created_at header is passed on only as a timestamp: a garbled one
    # (which a browser could not show) is dropped, and the record delivered.
    for created, kept in [(b"2026-12-08T01:02:03.123456789Z", True),
                          (b"2026-12-08 01:02:03.123+00:00", True),
                          (b"yesterday", False), (b"\xff\xfe", False),
                          (b"2026-12-08T01:02:03Z" + b" " * 60, False), (b"", False)]:  # fmt: skip
        got = decode(n.to_json().encode(), [("id", b"e-3"), ("created_at", created)]).created_at
        assert got == (created.decode() if kept else None), created
    # a connector without JSON expansion sends a JSON string
    assert decode(json.dumps(n.to_json()).encode(), [("id", b"e-2")]).event_id == "e-2"
    cases = [
        (b"{", [("id", b"e")], "invalid_json"),
        (b"[1]", [("id", b"e")], "schema"),
        (
            json.dumps({**json.loads(n.to_json()), "notification_type": "zzz"}).encode(),
            [("id", b"e")],
            "unknown_type",
        ),
        (
            json.dumps({**json.loads(n.to_json()), "teacher_id": ""}).encode(),
            [("id", b"e")],
            "schema",
        ),
        (n.to_json().encode(), [], "missing_id"),
        (None, [], "invalid_json"),
    ]
    for value, headers, kind in cases:
        with pytest.raises(PoisonMessageError) as ei:
            decode(value, headers)
        assert ei.value.kind == kind


@pytest.mark.parametrize("t", sorted(CATALOG))
def test_decode_reads_what_the_model_reads(t: str) -> None:
    """The router reads a few fields without building the model; they are the
    model's, for every type of the catalog."""
    n = build_notification(t, "t1", {"x": 1.5}, "c", deadline_timestamp=deadline_for(t),
                           now=DOC_NOW, **ids_for(t))  # fmt: skip
    r = decode(n.to_json().encode(), [("id", b"e-1")])
    want_deadline = n.deadline_timestamp.isoformat() if n.deadline_timestamp else None
    assert (r.teacher_id, r.action_required, r.priority_rank, r.deadline) == (
        n.teacher_id, n.action_required, n.priority.rank, want_deadline)  # fmt: skip


def test_decode_takes_the_first_non_null_header_of_each_name() -> None:
    v = build_notification("class_created", "t1", {}, "c", class_id="k").to_json().encode()
    r = decode(v, [("id", None), ("created_at", b"2026-01-01T00:00:01Z"), ("id", b"e-1"),
                   ("id", b"e-2"), ("created_at", b"2026-01-01T00:00:02Z")])  # fmt: skip
    assert (r.event_id, r.created_at) == ("e-1", "2026-01-01T00:00:01Z")
    assert decode(v, {"id": "e-3", "created_at": None}).created_at is None


def test_read_document_refuses_what_the_database_cannot_store() -> None:
    base = build_notification("class_created", "t", {"n": 1.5}, "c", class_id="k").to_json()
    doc, deadline = read_document(base.encode())
    assert doc == json.loads(base) and deadline is None
    for text in (base.encode("utf-16"), base.replace("1.5", "NaN").encode(),
                 base.replace("1.5", "1.0000000000000001").encode(),
                 base.replace("1.5", "9" * 5000).encode(), b"\xff" + base.encode()):  # fmt: skip
        with pytest.raises(InvalidNotificationError):
            read_document(text)


def test_hand_built_frame_matches_the_model() -> None:
    n = build_notification("class_created", "t1", {"a": 'é"x'}, "c", class_id="k")
    text = notification_text("e1", "1-0", None, json.loads(n.to_json()), pending=True)
    frame = server_frame_adapter.validate_json(text)
    assert isinstance(frame, NotificationFrame)
    assert frame.pending and not frame.replayed and frame.notification["payload"] == {"a": 'é"x'}


def test_client_frames() -> None:
    assert client_frame_adapter.validate_json('{"type":"ack","id":"e"}').type == "ack"
    with pytest.raises(ValueError):
        client_frame_adapter.validate_json('{"type":"resume","position":"abc"}')
    with pytest.raises(ValueError):
        client_frame_adapter.validate_json('{"type":"subscribe","teacher_id":"other"}')


def test_token_bucket() -> None:
    b = TokenBucket(rate_per_s=1, burst=2)
    assert [b.allow(0), b.allow(0), b.allow(0)] == [True, True, False]
    assert b.allow(1.0)


def test_decode_passes_compact_json_through_and_reserializes_pretty_json() -> None:
    n = build_notification("class_created", "t1", {"a": "x\ny"}, "c", class_id="k")
    compact = n.to_json().encode()
    assert decode(compact, [("id", b"e")]).notification_json == compact.decode()
    pretty = json.dumps(json.loads(compact), indent=2).encode()
    out = decode(pretty, [("id", b"e")]).notification_json
    assert "\n" not in out and json.loads(out) == json.loads(compact)


def test_loop_metrics_export_like_prometheus_client() -> None:
    m = RouterMetrics()
    for v in (0.0005, 0.001, 0.004, 0.02, 3.0):  # 0.001 and 0.02 sit on bucket bounds
        m.router_latency.observe(v)
    m.delivered.inc()
    m.delivered.inc(2)
    text = generate_latest(m.registry).decode()
    assert 'outbox_router_kafka_to_frame_seconds_bucket{le="0.001"} 2.0' in text
    assert 'outbox_router_kafka_to_frame_seconds_bucket{le="0.005"} 3.0' in text
    assert 'outbox_router_kafka_to_frame_seconds_bucket{le="0.02"} 4.0' in text
    assert 'outbox_router_kafka_to_frame_seconds_bucket{le="2.5"} 4.0' in text
    assert 'outbox_router_kafka_to_frame_seconds_bucket{le="+Inf"} 5.0' in text
    assert "outbox_router_kafka_to_frame_seconds_count 5.0" in text
    assert "outbox_router_kafka_to_frame_seconds_sum 3.0255" in text
    assert "outbox_router_delivered_total 3.0" in text
    assert 'outbox_router_latency_seconds_bucket{le="+Inf"} 0.0' in text


def test_each_worker_gets_its_index_and_admin_port() -> None:
    from router.workers import worker_env

    env = worker_env({"OUTBOX_WORKERS": "4", "PATH": "/bin"}, 2, 9200)
    assert env["OUTBOX_WORKERS"] == "1" and env["OUTBOX_REUSE_PORT"] == "true"
    assert (env["OUTBOX_WORKER_INDEX"], env["OUTBOX_ADMIN_PORT"], env["PATH"]) == (
        "2",
        "9202",
        "/bin",
    )
    assert "OUTBOX_ADMIN_PORT" not in worker_env({}, 1, None)


def test_the_redis_timeout_outlasts_wait() -> None:
    # WAIT is answered only when its own timeout runs out: a call timeout no
    # longer than that would fail every batch a replica is slow for.
    with pytest.raises(ValidationError, match=r"OUTBOX_REDIS_TIMEOUT_S \(2 s\) must be longer"):
        RouterSettings(redis_wait_replicas=1, redis_wait_timeout_ms=2000, redis_timeout_s=2)
    assert RouterSettings(redis_wait_replicas=1, redis_wait_timeout_ms=2000, redis_timeout_s=2.5)
    assert RouterSettings(redis_wait_timeout_ms=60000).redis_timeout_s == 5.0  # not waiting
    for bad in (0, -1, 301):
        with pytest.raises(ValidationError):
            RouterSettings(redis_timeout_s=bad)
        with pytest.raises(ValidationError):
            RouterSettings(redis_health_check_s=bad)


def test_a_pending_item_is_read_as_the_ingest_script_writes_it_and_nothing_else() -> None:
    from router.store import parse_pending

    written = ('{"id":"e-1","p":"1700000000000-0","r":4,"d":"2026-12-01T12:00:00+00:00",'
               '"c":"2026-12-01T11:00:00Z","n":{"teacher_id":"t"}}')  # fmt: skip
    item = parse_pending(written)
    assert item is not None
    assert (item.event_id, item.position, item.rank) == ("e-1", "1700000000000-0", 4)
    assert item.deadline is not None and item.deadline.utcoffset() is not None
    assert item.created_at == "2026-12-01T11:00:00Z" and item.notification == {"teacher_id": "t"}
    no_deadline = parse_pending('{"id":"e","p":"1-0","r":1,"d":"","c":"","n":{}}')
    assert no_deadline is not None and no_deadline.deadline is None
    assert no_deadline.created_at is None
    good = {"id": "e", "p": "1-0", "r": 1, "d": "", "c": "", "n": {}}
    for broken in [b"\xff", "not json", "[1]", "null", "{}", '{"id":"e"}',
                   json.dumps({**good, "id": ""}), json.dumps({**good, "id": 7}),
                   json.dumps({**good, "p": "soon"}), json.dumps({**good, "p": 5}),
                   json.dumps({**good, "r": "high"}), json.dumps({**good, "r": None}),
                   json.dumps({**good, "d": "tomorrow"}), json.dumps({**good, "d": 5}),
                   json.dumps({**good, "n": "text"}), json.dumps({**good, "c": 5}) + "x",
                   "[" * 100_000]:  # fmt: skip
        assert parse_pending(broken) is None, broken
