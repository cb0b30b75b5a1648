-- The teacher-notification outbox, in the shape Debezium's Outbox Event Router
-- expects. Services write here in their own transaction (notify_teacher() or a
-- validated raw INSERT); Debezium streams each committed row to Kafka; the relay's
-- janitor deletes rows once the replication slot has confirmed them.
CREATE SCHEMA IF NOT EXISTS outbox;

CREATE TABLE outbox.notification_catalog (
    type             text PRIMARY KEY,
    service          text NOT NULL,
    priority         text NOT NULL
        CHECK (priority IN ('critical', 'immediate', 'high', 'standard', 'low')),
    priority_rank    int  NOT NULL,
    category         text NOT NULL,
    action_required  boolean NOT NULL,
    deadline_rule    text NOT NULL CHECK (deadline_rule IN ('required', 'optional', 'none')),
    default_deadline interval,
    description      text NOT NULL
);

CREATE TABLE outbox.teacher_notifications (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),  -- event id
    aggregatetype text        NOT NULL DEFAULT 'teacher',
    aggregateid   text        NOT NULL,                               -- teacher id = Kafka key
    type          text        NOT NULL,                               -- notification type
    payload       jsonb       NOT NULL,                               -- the whole notification
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The writing transaction's id: lets the janitor prove a row was captured
    -- (committed before a snapshot whose WAL position the slot has confirmed).
    txid          xid8        NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX teacher_notifications_txid ON outbox.teacher_notifications (txid);

-- Debezium's heartbeat.action.query upserts here, so an idle outbox still moves
-- the slot's confirmed position and never pins WAL.
CREATE TABLE outbox.heartbeat (
    id      int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    beat_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO outbox.heartbeat (id) VALUES (1);
