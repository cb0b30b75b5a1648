-- The relay's own role, so that it needs no superuser: it reads slot health and
-- the heartbeat, counts and deletes shipped outbox rows, and reads what
-- `outbox doctor` checks. It may not write notifications or events.
-- Its password is set per environment (`outbox db migrate` with
-- OUTBOX_RELAY_DB_PASSWORD or OUTBOX_RELAY_DB_PASSWORD_FILE).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_relay') THEN
        CREATE ROLE outbox_relay LOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA outbox TO outbox_relay;
GRANT SELECT, DELETE ON outbox.teacher_notifications, outbox.domain_events TO outbox_relay;
GRANT SELECT ON outbox.heartbeat, outbox.notification_catalog, outbox.event_topics,
    outbox.schema_migrations TO outbox_relay;
