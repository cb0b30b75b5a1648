-- Domain events: a second outbox table beside the notifications, streamed by the
-- same connector (its own Outbox Event Router routes each row to the topic in
-- its `topic` column) and cleaned by the same janitor. Only topics registered in
-- outbox.event_topics (generated from contracts/events.py into
-- R__event_topics.sql) may be written; the envelope (the Kafka value) is built
-- here from the row, so it cannot disagree with it.
--   OB007 the topic is not a registered domain topic

CREATE TABLE outbox.event_topics (
    topic       text PRIMARY KEY,
    service     text NOT NULL,  -- the producer: the envelope's "source"
    partitions  int  NOT NULL CHECK (partitions BETWEEN 1 AND 1000),
    description text NOT NULL
);

CREATE TABLE outbox.domain_events (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),  -- event id
    topic          text        NOT NULL,   -- Kafka topic (routed by the connector)
    aggregateid    text        NOT NULL,   -- Kafka key
    type           text        NOT NULL,   -- event type (header event_type)
    correlation_id text        NOT NULL,   -- header correlation_id
    payload        jsonb       NOT NULL,   -- the event's data
    envelope       jsonb       NOT NULL,   -- the Kafka value, built by the trigger
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    txid           xid8        NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX domain_events_txid ON outbox.domain_events (txid);

CREATE FUNCTION outbox.validate_domain_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t outbox.event_topics;
BEGIN
    IF NEW.topic IS NULL OR NEW.topic = '' THEN
        RAISE EXCEPTION 'topic is required' USING ERRCODE = 'OB006',
            HINT = 'pass the topic name';
    END IF;
    SELECT * INTO t FROM outbox.event_topics WHERE topic = NEW.topic;
    IF NOT FOUND OR NEW.topic !~ outbox.limit_topic_re()
            OR char_length(NEW.topic) > outbox.limit_topic_max_chars() THEN
        RAISE EXCEPTION '% is not a registered domain topic', left(NEW.topic, 80)
            USING ERRCODE = 'OB007',
                  HINT = 'add it to contracts/events.py EVENT_TOPICS and run `outbox db migrate`; known: '
                      || coalesce((SELECT string_agg(topic, ', ' ORDER BY topic) FROM outbox.event_topics), 'none');
    END IF;
    PERFORM outbox.check_id('event_key', to_jsonb(NEW.aggregateid), true);
    PERFORM outbox.check_id('event_type', to_jsonb(NEW.type), true);
    PERFORM outbox.check_id('correlation_id', to_jsonb(NEW.correlation_id), true);
    IF NEW.payload IS NULL THEN
        RAISE EXCEPTION 'payload must be a JSON object' USING ERRCODE = 'OB005',
            HINT = 'pass the event''s data as an object';
    END IF;
    PERFORM outbox.check_payload(NEW.payload);
    -- What the caller cannot choose: when, which transaction, the envelope.
    NEW.id := coalesce(NEW.id, gen_random_uuid());
    NEW.created_at := clock_timestamp();
    NEW.txid := pg_current_xact_id();
    NEW.envelope := jsonb_build_object(
        'event_id', NEW.id,
        'event_type', NEW.type,
        'source', t.service,
        'correlation_id', NEW.correlation_id,
        'event_timestamp', to_char(NEW.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'data', NEW.payload);
    RETURN NEW;
END
$$;

CREATE TRIGGER validate_domain_event BEFORE INSERT ON outbox.domain_events
    FOR EACH ROW EXECUTE FUNCTION outbox.validate_domain_event();

-- Rows are written once and shipped as they are.
CREATE FUNCTION outbox.refuse_domain_event_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'domain events are immutable' USING ERRCODE = 'OB006',
        HINT = 'publish a new event instead';
END
$$;
CREATE TRIGGER refuse_domain_event_update BEFORE UPDATE ON outbox.domain_events
    FOR EACH ROW EXECUTE FUNCTION outbox.refuse_domain_event_update();

-- publish_event(topic, key, event_type, payload, correlation_id): the SQL way,
-- in the caller's transaction; returns the event id.
CREATE FUNCTION outbox.publish_event(
    p_topic text, p_key text, p_event_type text, p_payload jsonb, p_correlation_id text,
    p_event_id uuid DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    eid uuid := coalesce(p_event_id, gen_random_uuid());
BEGIN
    -- No RETURNING: services may write the outbox but not read it.
    INSERT INTO outbox.domain_events (id, topic, aggregateid, type, correlation_id, payload)
    VALUES (eid, p_topic, p_key, p_event_type, p_correlation_id, p_payload);
    RETURN eid;
END
$$;

GRANT SELECT ON outbox.event_topics TO outbox_service, outbox_cdc;
GRANT INSERT ON outbox.domain_events TO outbox_service;
GRANT SELECT ON outbox.domain_events TO outbox_cdc;
GRANT EXECUTE ON FUNCTION outbox.publish_event(text, text, text, jsonb, text, uuid) TO outbox_service;
REVOKE EXECUTE ON FUNCTION outbox.publish_event(text, text, text, jsonb, text, uuid) FROM PUBLIC;

ALTER PUBLICATION outbox_publication ADD TABLE outbox.domain_events;
