"""Settings of the relay process (env prefix ``OUTBOX_``), read once by the CLI."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.notification import NOTIFICATION_TOPIC


class RelaySettings(BaseSettings):
    """Everything the relay, `outbox connector ...` and `outbox doctor` need."""

    model_config = SettingsConfigDict(env_prefix="OUTBOX_", extra="ignore")

    pg_dsn: str = Field(
        default="",
        description="DSN of the service database that holds the outbox (admin or relay role).",
    )
    connect_url: str = "http://127.0.0.1:8083"
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic: str = NOTIFICATION_TOPIC
    topic_partitions: int = Field(default=6, ge=1)

    connector_name: str = "outbox-teacher-notifications"
    # How Connect reaches Postgres; defaults to the host/port/db of pg_dsn.
    connector_pg_host: str | None = None
    connector_pg_port: int | None = None
    connector_pg_database: str | None = None
    cdc_user: str = "outbox_cdc"
    cdc_password: SecretStr = SecretStr("")
    # Secrets from files (container secrets): the file's content, trailing
    # newline dropped. pg_password_file sets the password of pg_dsn.
    cdc_password_file: Path | None = None
    pg_password_file: Path | None = None
    # `outbox db migrate` sets the relay role's password from these (sql/006).
    relay_db_user: str = "outbox_relay"
    relay_db_password: SecretStr = SecretStr("")
    relay_db_password_file: Path | None = None
    topic_prefix: str = "outbox"
    slot_name: str = "outbox_notifications"
    publication: str = "outbox_publication"
    heartbeat_interval_ms: int = Field(default=5000, ge=100)
    poll_interval_ms: int = Field(default=5, ge=1)
    # The connector template; default: connect-config/connector.json of this install.
    connector_template: Path | None = None
    # Extra connector keys (JSON object); a null value removes a key.
    connector_overrides: dict[str, str | None] = Field(default_factory=dict)

    supervise_interval_s: float = Field(default=5.0, gt=0)
    restart_backoff_initial_s: float = Field(default=5.0, gt=0)
    restart_backoff_max_s: float = Field(default=300.0, gt=0)
    max_restarts: int = Field(default=5, ge=0)
    # The restart budget resets only after the connector ran this long unbroken.
    restart_stable_after_s: float = Field(default=60.0, ge=0)

    slot_warn_bytes: int = 1 << 30
    slot_critical_bytes: int = 8 << 30
    heartbeat_warn_s: float = 60.0

    # A Postgres query of the relay (slot health, a janitor round) that gets no
    # answer in this long fails: a database that hangs or is cut off without
    # closing the connection is reported (slot health unknown) instead of
    # stopping the supervision loop.
    pg_timeout_s: float = Field(default=10.0, gt=0, le=300)

    janitor_enabled: bool = True
    janitor_interval_s: float = Field(default=10.0, gt=0)
    janitor_batch: int = Field(default=1000, ge=1)

    http_host: str = "127.0.0.1"
    relay_http_port: int = Field(default=9108, ge=0, le=65535)

    @model_validator(mode="after")
    def _secret_files(self) -> RelaySettings:
        if self.cdc_password_file is not None:
            if self.cdc_password.get_secret_value():
                raise ValueError("set OUTBOX_CDC_PASSWORD or OUTBOX_CDC_PASSWORD_FILE, not both")
            self.cdc_password = SecretStr(read_secret_file(self.cdc_password_file))
        if self.relay_db_password_file is not None:
            if self.relay_db_password.get_secret_value():
                raise ValueError("set OUTBOX_RELAY_DB_PASSWORD or OUTBOX_RELAY_DB_PASSWORD_FILE, "
                                 "not both")  # fmt: skip
            self.relay_db_password = SecretStr(read_secret_file(self.relay_db_password_file))
        if self.pg_password_file is not None and self.pg_dsn:
            from psycopg.conninfo import make_conninfo

            self.pg_dsn = make_conninfo(
                self.pg_dsn, password=read_secret_file(self.pg_password_file)
            )
        return self

    @field_validator("connect_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        # One worker's URL, or several of one cluster, comma-separated.
        return ",".join(u.strip().rstrip("/") for u in v.split(",") if u.strip())

    def pg_parts(self) -> tuple[str, int, str]:
        """Host, port and database name of ``pg_dsn`` (a URL or key=value DSN).

        Raises:
            ValueError: psycopg cannot read the DSN.
        """
        import psycopg.conninfo

        try:
            parts = psycopg.conninfo.conninfo_to_dict(self.pg_dsn)
        except psycopg.Error as exc:
            raise ValueError("OUTBOX_PG_DSN is not a Postgres DSN (a URL or key=value "
                             "pairs)") from exc  # fmt: skip
        host = self.connector_pg_host or str(parts.get("host") or "127.0.0.1").split(",")[0]
        port = self.connector_pg_port or int(str(parts.get("port") or 5432).split(",")[0])
        database = self.connector_pg_database or str(parts.get("dbname") or "postgres")
        return host, port, database


def read_secret_file(path: Path) -> str:
    """A secret kept in a file, without its trailing newline.

    Raises:
        ValueError: the file cannot be read (the message names it, not its content).
    """
    try:
        return path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read the secret file {path}: {exc.strerror}") from None
