-- Roles and the publication.
--   outbox_service : group role for services; may call notify_teacher() and
--                    INSERT into the outbox (validated by the trigger), nothing else.
--   outbox_cdc     : Debezium's login; REPLICATION, reads the outbox, writes heartbeats.
-- Passwords are not set here: set them per environment (ALTER ROLE ... PASSWORD).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_service') THEN
        CREATE ROLE outbox_service NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_cdc') THEN
        CREATE ROLE outbox_cdc LOGIN REPLICATION;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA outbox TO outbox_service, outbox_cdc;
GRANT SELECT ON outbox.notification_catalog TO outbox_service, outbox_cdc;
GRANT INSERT ON outbox.teacher_notifications TO outbox_service;
GRANT EXECUTE ON FUNCTION outbox.notify_teacher(text, text, jsonb, text, text, text, timestamptz, uuid)
    TO outbox_service;
REVOKE EXECUTE ON FUNCTION outbox.notify_teacher(text, text, jsonb, text, text, text, timestamptz, uuid)
    FROM PUBLIC;
GRANT SELECT ON outbox.teacher_notifications, outbox.heartbeat TO outbox_cdc;
GRANT INSERT, UPDATE ON outbox.heartbeat TO outbox_cdc;

-- The outbox, plus the heartbeat table so heartbeats advance the slot. Debezium
-- uses it as is (publication.autocreate.mode=disabled).
CREATE PUBLICATION outbox_publication FOR TABLE outbox.teacher_notifications, outbox.heartbeat;
