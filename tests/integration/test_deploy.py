"""compose.yaml, the Dockerfile and .env.example: what can be checked without an engine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.settings import RelaySettings
from router.settings import RouterSettings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail(
            "docker-compose is missing: `apt-get install docker-compose` (make test installs it)"
        )
    d = tmp_path_factory.mktemp("compose")
    for name in ("compose.yaml", "Dockerfile"):
        shutil.copy(ROOT / name, d / name)
    shutil.copytree(ROOT / "connect-config", d / "connect-config")
    shutil.copytree(ROOT / "deploy", d / "deploy")
    shutil.copy(ROOT / ".env.example", d / ".env")
    subprocess.run(
        [exe, "-f", "compose.yaml", "config", "-q"],
        cwd=d,
        check=True,
        capture_output=True,
        timeout=60,
    )
    out = subprocess.run([exe, "-f", "compose.yaml", "config"], cwd=d, check=True, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    data: dict[str, Any] = yaml.safe_load(out.stdout)
    return data


def test_services_present(rendered: dict[str, Any]) -> None:
    assert set(rendered["services"]) >= {
        "postgres",
        "kafka",
        "connect",
        "redis",
        "relay",
        "router",
        "lb",
    }


def test_every_image_is_pinned(rendered: dict[str, Any]) -> None:
    for name, svc in rendered["services"].items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), (name, image)
    assert "apache/kafka:3.9.0" in {s["image"] for s in rendered["services"].values()}
    assert "quay.io/debezium/connect:3.0.7.Final" in {
        s["image"] for s in rendered["services"].values()
    }
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            assert ":" in line.split()[1] and "latest" not in line


def test_environment_names_match_the_settings(rendered: dict[str, Any]) -> None:
    known = {
        f"OUTBOX_{n.upper()}" for n in (*RouterSettings.model_fields, *RelaySettings.model_fields)
    }
    names: set[str] = set()
    for svc in rendered["services"].values():
        env = svc.get("environment") or {}
        names |= {k for k in env if k.startswith("OUTBOX_")}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith("OUTBOX_"):
            names.add(line.split("=", 1)[0])
    assert names, "no OUTBOX_ settings found"
    assert names - known == set()


def test_postgres_has_what_doctor_checks(rendered: dict[str, Any]) -> None:
    cmd = rendered["services"]["postgres"]["command"]
    text = " ".join(cmd) if isinstance(cmd, list) else cmd
    assert (
        "wal_level=logical" in text
        and "max_replication_slots" in text
        and "max_wal_senders" in text
    )


def test_connect_worker_settings_equal_connect_config(rendered: dict[str, Any]) -> None:
    props = {}
    for line in (ROOT / "connect-config" / "worker.properties").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            props[k] = v
    env = rendered["services"]["connect"]["environment"]
    checked = 0
    for k, v in env.items():
        if k.startswith("CONNECT_"):
            key = k[len("CONNECT_") :].lower().replace("_", ".")
            assert props.get(key) == str(v), key
            checked += 1
    fixed = {k: v for k, v in props.items() if "${" not in v and not k.startswith(("config.storage", "offset.storage",
             "status.storage", "plugin.", "rest.", "listeners"))}  # fmt: skip
    missing = {k for k in fixed if f"CONNECT_{k.upper().replace('.', '_')}" not in env}
    assert missing == set()
    assert checked >= 8


def test_relay_mounts_the_connector_template(rendered: dict[str, Any]) -> None:
    relay = rendered["services"]["relay"]
    target = relay["environment"]["OUTBOX_CONNECTOR_TEMPLATE"]
    vols = relay["volumes"]
    found = [v for v in vols if (v["target"] if isinstance(v, dict) else v.split(":")[1]) == target]
    assert found
    src = found[0]["source"] if isinstance(found[0], dict) else found[0].split(":")[0]
    assert src.endswith("connect-config/connector.json")


def test_dockerfile_is_non_root_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "USER 10001" in text and "HEALTHCHECK" in text


def test_wheel_ships_the_data_the_image_needs(tmp_path: Path) -> None:
    """The Dockerfile installs the wheel: it must carry sql/, connect-config/ and the page."""
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)  # fmt: skip
    (wheel,) = tmp_path.glob("outbox_relay-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("outbox/_data/sql/001_outbox.sql", "outbox/_data/sql/R__catalog.sql",
                   "outbox/_data/connect-config/connector.json", "router/static/index.html",
                   "router/static/app.js", "relay/resources.py"):  # fmt: skip
        assert needed in names, needed


def _env(svc: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (svc.get("environment") or {}).items()}


def _secret_names(svc: dict[str, Any]) -> set[str]:
    return {s if isinstance(s, str) else s["source"] for s in svc.get("secrets") or []}


def test_each_service_gets_only_its_secrets(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    assert set(rendered["secrets"]) == {"postgres_password", "cdc_password",
                                        "relay_db_password", "jwt_secret"}  # fmt: skip
    for name in ("router",):
        env = _env(services[name])
        assert _secret_names(services[name]) == {"jwt_secret"}
        assert not [k for k in env if k.startswith(("OUTBOX_PG", "OUTBOX_CDC", "OUTBOX_RELAY_DB"))]
        assert env["OUTBOX_JWT_SECRET_FILE"] == "/run/secrets/jwt_secret"
    relay = services["relay"]
    assert _secret_names(relay) == {"relay_db_password", "cdc_password"}
    assert _env(relay)["OUTBOX_PG_DSN"].startswith("postgresql://outbox_relay@")
    assert _secret_names(services["migrate"]) == {"postgres_password", "cdc_password",
                                                  "relay_db_password"}  # fmt: skip
    for name, svc in services.items():  # no password in any environment or the .env
        for k, v in _env(svc).items():
            assert "PASSWORD" not in k or k.endswith("_FILE"), (name, k)
            assert "://" not in v or "@" not in v or ":" not in v.split("://", 1)[1].split("@")[0], (
                name, k)  # fmt: skip
    assert "PASSWORD" not in (ROOT / ".env.example").read_text().replace("_password", "")


def test_the_served_inbox_page_is_an_allowed_origin() -> None:
    origins = next(line.split("=", 1)[1] for line in (ROOT / ".env.example").read_text().splitlines()
                   if line.startswith("OUTBOX_ALLOWED_ORIGINS="))  # fmt: skip
    assert "http://localhost:8765" in origins.split(",")


def test_the_build_context_leaves_out_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", ".env", "node_modules/", "secrets/", ".git"):
        assert entry in ignored, entry


def test_routers_scale_behind_a_health_checked_load_balancer(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    router, lb = services["router"], services["lb"]
    assert not router.get("ports"), "fixed host ports would stop --scale router=N"
    assert not router.get("container_name")
    assert lb["image"].startswith("haproxy:") and lb["ports"]
    cfg = (ROOT / "deploy" / "haproxy.cfg").read_text()
    assert "option httpchk GET /readyz" in cfg and "http-check expect status 200" in cfg
    assert "server-template router" in cfg and "resolvers docker" in cfg  # found by DNS
    assert "timeout tunnel" in cfg  # upgraded WebSockets live on
    mounted = [str(v.get("source", v) if isinstance(v, dict) else v) for v in lb["volumes"]]
    assert any("deploy/haproxy.cfg:" in m for m in mounted), mounted
