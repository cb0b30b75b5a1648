"""The embedded development stack: real Postgres, Redis, a Kafka-protocol broker
and a Kafka Connect worker with Debezium, run as local processes.

Error tree::

    StackError
    ├── ArtifactError        an artifact could not be fetched or laid out
    ├── PrerequisiteError    a system package or binary is missing
    ├── ComponentStartError  a component did not become ready (names it, shows its log)
    └── StackStateError      no stack state, or a stale one
"""
