"""The relay daemon: owns the CDC side (Debezium connector lifecycle through the
Kafka Connect REST API, replication-slot health, the outbox janitor).

Error tree::

    RelayError
    ├── SettingsError              a setting is missing or invalid (names the env var)
    ├── MigrationError             a migration failed or was edited after it was applied
    ├── DatabaseUnavailableError   Postgres could not be reached
    └── ConnectError
        ├── ConnectUnreachableError    no answer from the REST API
        └── ConnectApiError            an error answer (status code + Connect's message)
            └── ConnectorNotFoundError     404 for a connector
"""
