"""Pure parts of the router: JWT verification, record decoding, frames, limits."""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import generate_latest

from contracts import build_notification
from contracts.protocol import NotificationFrame, client_frame_adapter, server_frame_adapter
from router.auth import Verifier, mint
from router.decode import decode
from router.errors import AuthError, ConfigError, PoisonMessageError
from router.limits import TokenBucket
from router.metrics import RouterMetrics
from router.session import notification_text
from router.settings import RouterSettings


def test_hs256() -> None:
    NOW = time.time()
    v = Verifier.from_settings(
        RouterSettings(jwt_secret="s" * 32, jwt_audience="a", jwt_issuer="i")
    )
    assert v.verify(mint("s" * 32, "t1", 60, audience="a", issuer="i", now=NOW)) == "t1"
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
    assert v.verify(mint(priv, "t9", 60, algorithm="ES256", now=NOW)) == "t9"
    with pytest.raises(AuthError):
        v.verify(mint("s" * 32, "t9", 60, now=NOW))


def test_verifier_config_errors() -> None:
    with pytest.raises(ConfigError, match="OUTBOX_JWT_SECRET"):
        Verifier.from_settings(RouterSettings())
    with pytest.raises(ConfigError, match="HS256"):
        Verifier.from_settings(RouterSettings(jwt_secret="x", jwt_algorithms="RS256"))  # type: ignore[arg-type]


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
