-- Rules of a notification, enforced in the database for every writer: the same
-- rules, SQLSTATEs and messages as contracts/notification.py.
--   OB001 unknown type   OB002 contradicts the catalog   OB003 deadline
--   OB004 missing field  OB005 payload
CREATE FUNCTION outbox.validate_notification() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    c        outbox.notification_catalog%ROWTYPE;
    p        jsonb := NEW.payload;
    n_type   text;
    deadline timestamptz;
BEGIN
    IF p IS NULL OR jsonb_typeof(p) <> 'object' THEN
        RAISE EXCEPTION 'payload must be a JSON object holding the whole notification'
            USING ERRCODE = 'OB005', HINT = 'call outbox.notify_teacher() instead of a raw INSERT';
    END IF;
    n_type := p->>'notification_type';
    SELECT * INTO c FROM outbox.notification_catalog WHERE type = n_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown notification_type %', coalesce(quote_literal(n_type), 'NULL')
            USING ERRCODE = 'OB001',
                  HINT = 'known types: ' || (SELECT string_agg(type, ', ' ORDER BY type)
                                             FROM outbox.notification_catalog);
    END IF;
    IF coalesce(btrim(p->>'teacher_id'), '') = '' THEN
        RAISE EXCEPTION 'teacher_id must not be empty' USING ERRCODE = 'OB004',
            HINT = 'pass the id of the teacher the notification is for';
    END IF;
    IF coalesce(btrim(p->>'correlation_id'), '') = '' THEN
        RAISE EXCEPTION 'correlation_id must not be empty' USING ERRCODE = 'OB004',
            HINT = 'pass the id of the request or event that caused this notification';
    END IF;
    IF p->>'priority' IS DISTINCT FROM c.priority THEN
        RAISE EXCEPTION '% has priority % in the catalog, not %', n_type, upper(c.priority),
            coalesce(upper(p->>'priority'), 'NULL')
            USING ERRCODE = 'OB002', HINT = 'leave it out and let notify_teacher() fill it';
    END IF;
    IF p->>'category' IS DISTINCT FROM c.category THEN
        RAISE EXCEPTION '% has category % in the catalog, not %', n_type, c.category,
            coalesce(p->>'category', 'NULL')
            USING ERRCODE = 'OB002', HINT = 'leave it out and let notify_teacher() fill it';
    END IF;
    IF coalesce(p->'action_required', 'false'::jsonb) <> to_jsonb(c.action_required) THEN
        RAISE EXCEPTION '% has action_required % in the catalog, not %', n_type,
            c.action_required, coalesce(p->>'action_required', 'NULL')
            USING ERRCODE = 'OB002', HINT = 'leave it out and let notify_teacher() fill it';
    END IF;
    IF coalesce(p->>'deadline_timestamp', '') = '' THEN
        IF c.deadline_rule = 'required' THEN
            RAISE EXCEPTION '% requires a deadline', n_type USING ERRCODE = 'OB003',
                HINT = 'pass deadline_timestamp as a timestamp with a time zone';
        END IF;
    ELSE
        IF c.deadline_rule = 'none' THEN
            RAISE EXCEPTION '% takes no deadline', n_type USING ERRCODE = 'OB003',
                HINT = 'leave deadline_timestamp out';
        END IF;
        -- An ISO timestamp must end in Z or +hh[:mm]/-hh[:mm] to be unambiguous.
        IF (p->>'deadline_timestamp') !~ '(Z|[+-]\d\d(:?\d\d)?)$' THEN
            RAISE EXCEPTION 'deadline_timestamp % is naive', p->>'deadline_timestamp'
                USING ERRCODE = 'OB003', HINT = 'give it a time zone, for example 2026-12-01T12:00:00Z';
        END IF;
        deadline := (p->>'deadline_timestamp')::timestamptz;
        IF deadline <= clock_timestamp() THEN
            RAISE EXCEPTION 'deadline_timestamp % is already past', p->>'deadline_timestamp'
                USING ERRCODE = 'OB003', HINT = 'give a deadline in the future';
        END IF;
    END IF;
    IF n_type LIKE 'batch\_%' AND coalesce(btrim(p->>'batch_id'), '') = '' THEN
        RAISE EXCEPTION 'batch_id is required for %', n_type USING ERRCODE = 'OB004',
            HINT = 'pass the batch''s id';
    END IF;
    IF n_type LIKE 'class\_%' AND coalesce(btrim(p->>'class_id'), '') = '' THEN
        RAISE EXCEPTION 'class_id is required for %', n_type USING ERRCODE = 'OB004',
            HINT = 'pass the class''s id';
    END IF;
    IF p ? 'payload' AND jsonb_typeof(p->'payload') <> 'object' THEN
        RAISE EXCEPTION 'payload.payload must be a JSON object' USING ERRCODE = 'OB005',
            HINT = 'pass the notification''s details as an object';
    END IF;
    IF octet_length((p->'payload')::text) > 65536 THEN
        RAISE EXCEPTION 'payload is % bytes encoded, more than 65536',
            octet_length((p->'payload')::text) USING ERRCODE = 'OB005',
            HINT = 'send a reference (an id or URL) instead of the data';
    END IF;
    -- The routing columns are derived from the notification and must agree with it.
    IF NEW.aggregateid IS NULL THEN
        NEW.aggregateid := p->>'teacher_id';
    ELSIF NEW.aggregateid <> p->>'teacher_id' THEN
        RAISE EXCEPTION 'aggregateid % differs from payload teacher_id %', NEW.aggregateid,
            p->>'teacher_id' USING ERRCODE = 'OB002', HINT = 'leave aggregateid out';
    END IF;
    IF NEW.type IS NULL THEN
        NEW.type := n_type;
    ELSIF NEW.type <> n_type THEN
        RAISE EXCEPTION 'type % differs from payload notification_type %', NEW.type, n_type
            USING ERRCODE = 'OB002', HINT = 'leave type out';
    END IF;
    IF NEW.aggregatetype <> 'teacher' THEN
        RAISE EXCEPTION 'aggregatetype must be teacher, not %', NEW.aggregatetype
            USING ERRCODE = 'OB002', HINT = 'leave aggregatetype out';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER teacher_notifications_validate
    BEFORE INSERT ON outbox.teacher_notifications
    FOR EACH ROW EXECUTE FUNCTION outbox.validate_notification();

-- Outbox rows are facts: they are never changed, only deleted by the janitor.
CREATE FUNCTION outbox.reject_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'outbox rows are immutable' USING ERRCODE = 'OB002',
        HINT = 'write a new notification instead';
END
$$;
CREATE TRIGGER teacher_notifications_immutable
    BEFORE UPDATE ON outbox.teacher_notifications
    FOR EACH ROW EXECUTE FUNCTION outbox.reject_update();

-- notify_teacher(): what a service calls inside its own transaction. It fills
-- priority, category, action_required and the default deadline from the catalog
-- and inserts the row (the trigger validates it); returns the event id.
CREATE FUNCTION outbox.notify_teacher(
    p_teacher_id      text,
    p_type            text,
    p_payload         jsonb,
    p_correlation_id  text,
    p_batch_id        text DEFAULT NULL,
    p_class_id        text DEFAULT NULL,
    p_deadline        timestamptz DEFAULT NULL,
    p_event_id        uuid DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    c        outbox.notification_catalog%ROWTYPE;
    event_id uuid := coalesce(p_event_id, gen_random_uuid());
    deadline timestamptz := p_deadline;
BEGIN
    SELECT * INTO c FROM outbox.notification_catalog WHERE type = p_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown notification_type %', coalesce(quote_literal(p_type), 'NULL')
            USING ERRCODE = 'OB001',
                  HINT = 'known types: ' || (SELECT string_agg(type, ', ' ORDER BY type)
                                             FROM outbox.notification_catalog);
    END IF;
    IF deadline IS NULL AND c.default_deadline IS NOT NULL THEN
        deadline := clock_timestamp() + c.default_deadline;
    END IF;
    INSERT INTO outbox.teacher_notifications (id, aggregateid, type, payload)
    VALUES (event_id, p_teacher_id, p_type, jsonb_build_object(
        'teacher_id', p_teacher_id,
        'notification_type', p_type,
        'category', c.category,
        'priority', c.priority,
        'payload', coalesce(p_payload, '{}'::jsonb),
        'action_required', c.action_required,
        'deadline_timestamp', CASE WHEN deadline IS NULL THEN NULL
            ELSE to_char(deadline AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') END,
        'correlation_id', p_correlation_id,
        'batch_id', p_batch_id,
        'class_id', p_class_id));
    RETURN event_id;
END
$$;
