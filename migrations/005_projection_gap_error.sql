-- The projectors' version guard raises an error on a gap instead of returning it as data, so
-- that a projector can send a batch, its checkpoint and its COMMIT in one round trip: the
-- error aborts the statement, and the server skips the checkpoint and the COMMIT queued
-- behind it. gaps is the guard's description of the accounts whose events do not follow on
-- the version applied (NULL when there is none); it goes back to the projector as DETAIL.
CREATE FUNCTION projection_refuse_gaps(gaps json) RETURNS json
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF gaps IS NOT NULL THEN
        RAISE EXCEPTION 'projection version guard: an event is missing'
            USING ERRCODE = 'LDG01', DETAIL = gaps::text;
    END IF;
    RETURN NULL;
END
$$;

---- create above / drop below ----

DROP FUNCTION projection_refuse_gaps(json);
