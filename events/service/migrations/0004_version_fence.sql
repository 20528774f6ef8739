-- A batch's write statement checks, inside itself, that every sync it updates still has the
-- version the batch read: if not, the whole statement fails with serialization_failure
-- (SQLSTATE 40001), which callers treat as a conflict (read again, decide again, retry).
-- This lets a batch read without row locks and write in one implicit transaction.
CREATE FUNCTION synclife_version_fence(expected bigint, updated bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF updated <> expected THEN
        RAISE EXCEPTION 'a sync changed since the batch read it (% of % updated)',
            updated, expected
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN updated;
END
$$;
