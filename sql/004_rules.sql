-- One rule set: the trigger applies contracts/rules.py's check_document(), with
-- the same SQLSTATEs, reading every limit from outbox.limit_*() (generated from
-- contracts/limits.py into R__limits.sql). tests/adversarial proves both sides
-- accept and refuse the same documents.
--   OB001 unknown type   OB002 contradicts the catalog   OB003 deadline
--   OB004 missing field  OB005 payload                   OB006 malformed field

-- An id field: a non-blank string, bounded, printable.
CREATE FUNCTION outbox.check_id(field text, v jsonb, required boolean) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s text;
BEGIN
    IF v IS NULL OR v = 'null'::jsonb THEN
        IF required THEN
            RAISE EXCEPTION '% is required', field USING ERRCODE = 'OB004',
                HINT = 'pass it as a non-empty string';
        END IF;
        RETURN;
    END IF;
    IF jsonb_typeof(v) <> 'string' THEN
        RAISE EXCEPTION '% must be a string, not %', field, jsonb_typeof(v)
            USING ERRCODE = 'OB006', HINT = 'pass the id as text';
    END IF;
    s := v #>> '{}';
    IF s ~ outbox.limit_blank_re() THEN
        RAISE EXCEPTION '% must not be empty or only whitespace', field USING ERRCODE = 'OB004',
            HINT = 'pass the id it is about';
    END IF;
    IF char_length(s) > outbox.limit_id_max_chars(field) THEN
        RAISE EXCEPTION '% is % characters, more than %', field, char_length(s),
            outbox.limit_id_max_chars(field) USING ERRCODE = 'OB006',
            HINT = 'ids are references, not data';
    END IF;
    IF s ~ outbox.limit_id_forbidden_re() THEN
        RAISE EXCEPTION '% holds a control, invisible or bidirectional-format character', field
            USING ERRCODE = 'OB006', HINT = 'ids must be printable text';
    END IF;
END
$$;

-- The payload: an object, nested at most limit_payload_depth() deep, numbers of
-- at most limit_number_digits() digits written out, at most limit_payload_bytes()
-- bytes of canonical compact JSON (numbers as Postgres writes them).
CREATE FUNCTION outbox.check_payload(pl jsonb) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    size        bigint;
    long_number boolean;
BEGIN
    IF pl IS NULL THEN
        RETURN;
    END IF;
    IF jsonb_typeof(pl) <> 'object' THEN
        RAISE EXCEPTION 'payload must be a JSON object' USING ERRCODE = 'OB005',
            HINT = 'pass the notification''s details as an object';
    END IF;
    IF jsonb_path_exists(pl, ('strict $.**{' || outbox.limit_payload_depth()
            || ' to last} ? (@.type() == "object" || @.type() == "array")')::jsonpath) THEN
        RAISE EXCEPTION 'payload nests more than % objects or arrays deep',
            outbox.limit_payload_depth() USING ERRCODE = 'OB005', HINT = 'flatten it';
    END IF;
    -- One pass over every value: numbers' digits and the canonical size.
    SELECT bool_or(jsonb_typeof(v) = 'number'
                   AND length(ltrim(split_part(ltrim(v::text, '-'), '.', 1), '0'))
                       + length(split_part(v::text, '.', 2)) > outbox.limit_number_digits()),
           sum(CASE jsonb_typeof(v)
                   -- n keys: braces, n - 1 commas, each key as JSON and its colon
                   WHEN 'object' THEN coalesce((SELECT 1 + count(*) + sum(octet_length(to_jsonb(k)::text) + 1)
                                                FROM jsonb_object_keys(v) k), 2)
                   WHEN 'array' THEN 2 + greatest(0, jsonb_array_length(v) - 1)
                   ELSE octet_length(v::text)
               END)
      INTO long_number, size FROM jsonb_path_query(pl, 'strict $.**') v;
    IF long_number THEN
        RAISE EXCEPTION 'payload has a number of more than % digits written out',
            outbox.limit_number_digits() USING ERRCODE = 'OB005', HINT = 'round it';
    END IF;
    IF size > outbox.limit_payload_bytes() THEN
        RAISE EXCEPTION 'payload is % bytes encoded, more than %', size,
            outbox.limit_payload_bytes() USING ERRCODE = 'OB005',
            HINT = 'send a reference (an id or URL) instead of the data';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION outbox.validate_notification() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    c        outbox.notification_catalog%ROWTYPE;
    p        jsonb := NEW.payload;
    n_type   text;
    extra    text;
    dv       jsonb;
    d        text;
    yr       int;
    deadline timestamptz;
BEGIN
    IF p IS NULL OR jsonb_typeof(p) <> 'object' THEN
        RAISE EXCEPTION 'payload must be a JSON object holding the whole notification'
            USING ERRCODE = 'OB005', HINT = 'call outbox.notify_teacher() instead of a raw INSERT';
    END IF;
    SELECT string_agg(quote_literal(left(k, 40)), ', ' ORDER BY k) INTO extra
    FROM jsonb_object_keys(p) k WHERE k <> ALL (outbox.limit_document_keys());
    IF extra IS NOT NULL THEN
        RAISE EXCEPTION 'the notification has keys that are not notification fields: %', extra
            USING ERRCODE = 'OB006', HINT = 'fields: ' || array_to_string(outbox.limit_document_keys(), ', ');
    END IF;
    IF jsonb_typeof(p->'notification_type') = 'string' THEN
        n_type := p->>'notification_type';
        SELECT * INTO c FROM outbox.notification_catalog WHERE type = n_type;
    END IF;
    IF c.type IS NULL THEN
        RAISE EXCEPTION 'unknown notification_type %',
            coalesce(quote_literal(left(n_type, 80)), coalesce(jsonb_typeof(p->'notification_type'), 'missing'))
            USING ERRCODE = 'OB001',
                  HINT = 'known types: ' || (SELECT string_agg(type, ', ' ORDER BY type)
                                             FROM outbox.notification_catalog);
    END IF;
    PERFORM outbox.check_id('teacher_id', p->'teacher_id', true);
    PERFORM outbox.check_id('correlation_id', p->'correlation_id', true);
    IF p->'priority' IS DISTINCT FROM to_jsonb(c.priority) THEN
        RAISE EXCEPTION '% has priority % in the catalog, not %', n_type, upper(c.priority),
            coalesce(left(p->>'priority', 60), 'NULL')
            USING ERRCODE = 'OB002', HINT = 'leave it out and let notify_teacher() fill it';
    END IF;
    IF p->'category' IS DISTINCT FROM to_jsonb(c.category) THEN
        RAISE EXCEPTION '% has category % in the catalog, not %', n_type, c.category,
            coalesce(left(p->>'category', 60), 'NULL')
            USING ERRCODE = 'OB002', HINT = 'leave it out and let notify_teacher() fill it';
    END IF;
    IF coalesce(p->'action_required', 'false'::jsonb) IS DISTINCT FROM to_jsonb(c.action_required) THEN
        RAISE EXCEPTION '% has action_required % in the catalog, not %', n_type,
            c.action_required, coalesce(left(p->>'action_required', 60), 'NULL')
            USING ERRCODE = 'OB002', HINT = 'leave it out and let notify_teacher() fill it';
    END IF;
    dv := p->'deadline_timestamp';
    IF dv IS NULL OR dv = 'null'::jsonb THEN
        IF c.deadline_rule = 'required' THEN
            RAISE EXCEPTION '% requires a deadline', n_type USING ERRCODE = 'OB003',
                HINT = 'pass deadline_timestamp as a timestamp with a time zone';
        END IF;
    ELSE
        IF c.deadline_rule = 'none' THEN
            RAISE EXCEPTION '% takes no deadline', n_type USING ERRCODE = 'OB003',
                HINT = 'leave deadline_timestamp out';
        END IF;
        IF jsonb_typeof(dv) <> 'string' OR (dv #>> '{}') !~ outbox.limit_deadline_re() THEN
            RAISE EXCEPTION 'deadline_timestamp % is not RFC 3339 with an offset', left(dv::text, 40)
                USING ERRCODE = 'OB003',
                      HINT = 'write it like 2026-12-01T12:00:00Z or 2026-12-01T13:00:00+01:00';
        END IF;
        d := dv #>> '{}';
        yr := left(d, 4)::int;
        IF NOT outbox.limit_deadline_years() @> yr THEN
            RAISE EXCEPTION 'deadline_timestamp % must fall in the years %', d,
                outbox.limit_deadline_years() USING ERRCODE = 'OB003';
        END IF;
        BEGIN
            deadline := d::timestamptz;
        EXCEPTION WHEN datetime_field_overflow OR invalid_datetime_format THEN
            RAISE EXCEPTION 'deadline_timestamp % is not a calendar date', d
                USING ERRCODE = 'OB003';
        END;
        IF deadline <= clock_timestamp() THEN
            RAISE EXCEPTION 'deadline_timestamp % is already past', d
                USING ERRCODE = 'OB003', HINT = 'give a deadline in the future';
        END IF;
    END IF;
    PERFORM outbox.check_id('batch_id', p->'batch_id', false);
    PERFORM outbox.check_id('class_id', p->'class_id', false);
    IF n_type LIKE 'batch\_%' AND coalesce(p->'batch_id', 'null'::jsonb) = 'null'::jsonb THEN
        RAISE EXCEPTION 'batch_id is required for %', n_type USING ERRCODE = 'OB004',
            HINT = 'pass the batch''s id';
    END IF;
    IF n_type LIKE 'class\_%' AND coalesce(p->'class_id', 'null'::jsonb) = 'null'::jsonb THEN
        RAISE EXCEPTION 'class_id is required for %', n_type USING ERRCODE = 'OB004',
            HINT = 'pass the class''s id';
    END IF;
    PERFORM outbox.check_payload(p->'payload');
    -- The routing columns are derived from the notification and must agree with it.
    IF NEW.aggregateid IS NULL THEN
        NEW.aggregateid := p->>'teacher_id';
    ELSIF NEW.aggregateid <> p->>'teacher_id' THEN
        RAISE EXCEPTION 'aggregateid differs from payload teacher_id'
            USING ERRCODE = 'OB002', HINT = 'leave aggregateid out';
    END IF;
    IF NEW.type IS NULL THEN
        NEW.type := n_type;
    ELSIF NEW.type <> n_type THEN
        RAISE EXCEPTION 'type differs from payload notification_type'
            USING ERRCODE = 'OB002', HINT = 'leave type out';
    END IF;
    IF NEW.aggregatetype <> 'teacher' THEN
        RAISE EXCEPTION 'aggregatetype must be teacher, not %', left(NEW.aggregatetype, 40)
            USING ERRCODE = 'OB002', HINT = 'leave aggregatetype out';
    END IF;
    -- Set here, never by the caller: the janitor proves capture by txid, and a
    -- far-future txid would leave a row it never deletes.
    NEW.txid := pg_current_xact_id();
    NEW.created_at := clock_timestamp();
    RETURN NEW;
END
$$;
