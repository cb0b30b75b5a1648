-- Generated from contracts/limits.py by `outbox db generate`; do not edit.
-- A repeatable migration: re-applied whenever its content changes.
CREATE OR REPLACE FUNCTION outbox.limit_id_max_chars(field text) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT CASE field WHEN 'teacher_id' THEN 128 WHEN 'correlation_id' THEN 256 WHEN 'batch_id' THEN 128 WHEN 'class_id' THEN 128 WHEN 'event_key' THEN 128 WHEN 'event_type' THEN 128 END $$;
CREATE OR REPLACE FUNCTION outbox.limit_id_forbidden_re() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '[\u0001-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\ufffe-\uffff]' $$;
CREATE OR REPLACE FUNCTION outbox.limit_blank_re() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '^[\u0009\u000a\u000b\u000c\u000d\u001c\u001d\u001e\u001f\u0020\u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000]*$' $$;
CREATE OR REPLACE FUNCTION outbox.limit_document_keys() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT ARRAY['teacher_id', 'notification_type', 'category', 'priority', 'payload', 'action_required', 'deadline_timestamp', 'correlation_id', 'batch_id', 'class_id'] $$;
CREATE OR REPLACE FUNCTION outbox.limit_payload_bytes() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 65536 $$;
CREATE OR REPLACE FUNCTION outbox.limit_payload_depth() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 32 $$;
CREATE OR REPLACE FUNCTION outbox.limit_number_digits() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 15 $$;
CREATE OR REPLACE FUNCTION outbox.limit_topic_re() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '^huleedu\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.v[1-9][0-9]*$' $$;
CREATE OR REPLACE FUNCTION outbox.limit_topic_max_chars() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 249 $$;
CREATE OR REPLACE FUNCTION outbox.limit_deadline_re() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '^([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])(\.[0-9]{1,6})?(Z|[+-](0[0-9]|1[0-4]):[0-5][0-9])$' $$;
CREATE OR REPLACE FUNCTION outbox.limit_deadline_years() RETURNS int4range
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT int4range(2000, 2199, '[]') $$;
