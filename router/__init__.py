"""The router: Kafka to teachers' browsers over WebSocket, with Redis for dedupe,
history, replay and fan-out across replicas.

Error tree::

    RouterError
    ├── ConfigError             a setting is missing or invalid (names the env var)
    ├── AuthError               a token was refused (close code + reason)
    ├── PoisonMessageError      a Kafka message that cannot be routed (dead-lettered)
    └── StoreUnavailableError   Redis could not be reached
        ├── ReplicationShortError   Redis has a batch, too few of its replicas do yet
        ├── StoreFullError          Redis is at its maxmemory (OOM): retried
        └── SlotMovingError         a slot of the batch is moving (reshard): TRYAGAIN
"""
