-- hera-guard 10: the author of every transaction. Idempotent.
--
-- Why: logical decoding carries rows, not who wrote them. A statement-level trigger on each
-- captured table emits, once per transaction, a transactional logical message
--     pg_logical_emit_message(true, 'hera.author', <json>)
-- before the transaction's first change to any of them (BEFORE ... FOR EACH STATEMENT,
-- INSERT/UPDATE/DELETE/TRUNCATE), so it is in WAL order ahead of the changes, on both
-- plugins; capture attaches it to the transaction's records and to each change event
-- (capture.event.Author). Nothing is written to any table.
--
-- <json> = {"db_user" (current_user), "session_user", "application_name", "client_addr"
-- (null over a Unix socket), "client_port", "backend_pid", "actor" (hera.actor), "context"
-- (hera.context, see below), "context_format" ("json" | "text" | null), "capped" (names of
-- the fields cut to their cap)}.
--
-- The application's own words, both optional, both untrusted text:
--     SET LOCAL hera.actor = 'deploy-42';                      -- a person, a deploy, a job
--     SET LOCAL hera.context = '{"ticket": "OPS-7", "request": "r-1"}';
-- Caps: actor 256 bytes, context 4096 bytes (HERA_AUTHOR_CONTEXT_CAP, the "4 kB" the docs
-- name); a value over its cap is cut at a character boundary and named in "capped".
-- A context that is a JSON object is kept as one (as jsonb prints it) with every key named
-- like a secret (password, secret, token, credential, api key, private key, cookie,
-- authorization, signature, session id), at any depth, replaced by "[redacted]"; anything
-- else (not JSON, an array, a scalar, or an object over the cap once printed) is kept as its
-- text, "context_format": "text". The database's encoding (UTF8) already refuses invalid
-- byte sequences in SET; json_build_object escapes every control character, so the message
-- is valid JSON whatever the client wrote.
--
-- Once per transaction: the trigger remembers the transaction id in the transaction-local
-- setting hera.author_sent. A subtransaction rolled back takes the message (decoding drops
-- it) and the setting (it reverts) with it, so the next statement emits again. A session
-- can set hera.author_sent itself and so suppress its own message, and a role allowed to
-- call pg_logical_emit_message can emit a message of its own: capture shows a transaction
-- without an author as exactly that (no author), and the message is evidence of who the
-- server says ran the session, not a signature. Revoke EXECUTE on pg_logical_emit_message
-- from application roles where that matters (capture's heartbeat role keeps it).
--
-- Privileges: no SECURITY DEFINER: the trigger runs as the writing role (current_user is
-- then who wrote, session_user who logged in) and needs only pg_logical_emit_message(),
-- which PostgreSQL grants to PUBLIC; a server that revoked it fails such writes instead of
-- letting them pass unattributed. Cost: after the first statement of a transaction the
-- trigger is a setting compare; the first builds the message inline (with a context, or an
-- actor over its cap, hera_guard_author_message() builds it, with a pinned search_path). The
-- trigger function has no SET clause (that would cost a settings save/restore on every
-- statement): every name in it is schema-qualified instead. bench/author.py measures it.
-- Enabled ALWAYS: session_replication_role = replica does not switch it off.
--
-- Which tables: the captured defaults (core_relationships, core_dynamic_data) of the schema
-- guard install runs in; any other captured table with
--     SELECT hera_guard_author_attach('schema.table');

CREATE OR REPLACE FUNCTION hera_guard_author_cap(value text, max_bytes integer)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL OR octet_length(value) <= max_bytes THEN
        RETURN value;
    END IF;
    value := left(value, max_bytes);
    -- characters are up to 4 bytes: drop at least a quarter of the excess each round
    WHILE octet_length(value) > max_bytes LOOP
        value := left(value, length(value) - greatest(1, (octet_length(value) - max_bytes) / 4));
    END LOOP;
    RETURN value;
END;
$$;

DO $do$
DECLARE
    s text := current_schema();
BEGIN
    EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I.hera_guard_author_redact(doc jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT CASE jsonb_typeof(doc)
    WHEN 'object' THEN coalesce((
        SELECT jsonb_object_agg(k, CASE
            WHEN k ~* '(passw|passwd|pwd|secret|token|credential|api.?key|private.?key|cookie|authorization|signature|session.?id)'
            THEN to_jsonb('[redacted]'::text)
            ELSE %1$I.hera_guard_author_redact(v) END)
        FROM jsonb_each(doc) AS e(k, v)), '{}'::jsonb)
    WHEN 'array' THEN coalesce((
        SELECT jsonb_agg(%1$I.hera_guard_author_redact(v) ORDER BY i)
        FROM jsonb_array_elements(doc) WITH ORDINALITY AS e(v, i)), '[]'::jsonb)
    ELSE doc
END
$$;$f$, s);

    EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I.hera_guard_author_message()
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    actor text := nullif(current_setting('hera.actor', true), '');
    ctx text := nullif(current_setting('hera.context', true), '');
    doc jsonb;
    fmt text;
    capped text[] := '{}';
BEGIN
    IF octet_length(actor) > 256 THEN
        actor := %1$I.hera_guard_author_cap(actor, 256);
        capped := capped || 'actor'::text;
    END IF;
    IF ctx IS NOT NULL THEN
        fmt := 'text';
        IF octet_length(ctx) <= 4096 AND left(ltrim(ctx), 1) = '{' THEN
            BEGIN
                doc := ctx::jsonb;
            EXCEPTION WHEN data_exception OR program_limit_exceeded THEN
                doc := NULL;  -- not JSON: kept as text
            END;
            IF jsonb_typeof(doc) = 'object' THEN
                ctx := %1$I.hera_guard_author_redact(doc)::text;
                fmt := 'json';
            END IF;
        END IF;
        IF octet_length(ctx) > 4096 THEN  -- HERA_AUTHOR_CONTEXT_CAP
            ctx := %1$I.hera_guard_author_cap(ctx, 4096);
            fmt := 'text';  -- a cut object is no longer JSON
            capped := capped || 'context'::text;
        END IF;
    END IF;
    RETURN json_build_object(
        'db_user', current_user,
        'session_user', session_user,
        'application_name', nullif(current_setting('application_name'), ''),
        'client_addr', host(inet_client_addr()),
        'client_port', inet_client_port(),
        'backend_pid', pg_backend_pid(),
        'actor', actor,
        'context', ctx,
        'context_format', fmt,
        'capped', capped)::text;
END;
$$;$f$, s);

    -- The per-statement path: no SET clause and no nested function call in the common case
    -- (no context, a short actor): measured, a nested call with a pinned search_path
    -- doubled the cost of a single-row INSERT; every name is schema-qualified instead.
    -- The message is the one hera_guard_author_message() builds, field for field.
    EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I.hera_guard_author()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    xid text := pg_catalog.textin(pg_catalog.xid8out(pg_catalog.pg_current_xact_id()));
    actor text;
BEGIN
    IF pg_catalog.current_setting('hera.author_sent', true) OPERATOR(pg_catalog.=) xid THEN
        RETURN NULL;
    END IF;
    PERFORM pg_catalog.set_config('hera.author_sent', xid, true);
    actor := NULLIF(pg_catalog.current_setting('hera.actor', true), '');
    IF pg_catalog.current_setting('hera.context', true) OPERATOR(pg_catalog.<>) ''
            OR pg_catalog.octet_length(actor) OPERATOR(pg_catalog.>) 256 THEN
        PERFORM pg_catalog.pg_logical_emit_message(true, 'hera.author',
                                                   %1$I.hera_guard_author_message());
        RETURN NULL;
    END IF;
    PERFORM pg_catalog.pg_logical_emit_message(true, 'hera.author', pg_catalog.json_build_object(
        'db_user', current_user,
        'session_user', session_user,
        'application_name', NULLIF(pg_catalog.current_setting('application_name'), ''),
        'client_addr', pg_catalog.host(pg_catalog.inet_client_addr()),
        'client_port', pg_catalog.inet_client_port(),
        'backend_pid', pg_catalog.pg_backend_pid(),
        'actor', actor,
        'context', NULL,
        'context_format', NULL,
        'capped', '{}'::pg_catalog.text[])::pg_catalog.text);
    RETURN NULL;
END;
$$;$f$, s);

    EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I.hera_guard_author_attach(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn oid := '%1$I.hera_guard_author()'::regprocedure;
    -- BEFORE (2) | INSERT (4) | DELETE (8) | UPDATE (16) | TRUNCATE (32), statement level
    want_type smallint := 62;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_trigger
               WHERE tgrelid = tbl AND tgname = 'hera_guard_author' AND tgfoid = fn
                 AND tgenabled = 'A' AND tgtype = want_type) THEN
        RETURN;  -- already so: no DDL (an ALTER TABLE would also reach the schema log)
    END IF;
    EXECUTE format('CREATE OR REPLACE TRIGGER hera_guard_author '
                   'BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %%s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %%s()', tbl, fn::regproc);
    EXECUTE format('ALTER TABLE %%s ENABLE ALWAYS TRIGGER hera_guard_author', tbl);
END;
$$;$f$, s);
END;
$do$;

-- Firing a trigger needs no EXECUTE grant; the message builder is called by the trigger as
-- the writing role, so it keeps PUBLIC's EXECUTE (it only describes the caller's own
-- session). Attaching is the installer's business.
REVOKE ALL ON FUNCTION hera_guard_author() FROM PUBLIC;
REVOKE ALL ON FUNCTION hera_guard_author_attach(regclass) FROM PUBLIC;
DO $$
DECLARE
    r text;
BEGIN
    FOR r IN SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated') LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION hera_guard_author_attach(regclass) FROM %I', r);
    END LOOP;
END;
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['core_relationships', 'core_dynamic_data'] LOOP
        IF to_regclass(format('%I.%I', current_schema(), t)) IS NOT NULL THEN
            PERFORM hera_guard_author_attach(format('%I.%I', current_schema(), t)::regclass);
        END IF;
    END LOOP;
END;
$$;
