-- The event bus reads the log after a cursor, in (xid, id) order, and
-- counts a subscriber's lag the same way. As prepared statements their
-- plans are cached per connection, and one made while the table was tiny
-- (a sequential scan and a sort) was kept as the table grew, until
-- autovacuum next analyzed it: seen at 233 ms per read with 200,000
-- events. In these functions sequential scans are off, so events_order_idx
-- serves them whatever the statistics say. They are STABLE: they read with
-- the caller's snapshot, the one whose xmin the read returns.
CREATE FUNCTION hodei_read_events(after_xid xid8, after_id bigint, max_events integer)
RETURNS TABLE (id bigint, xid bigint, type text, aggregate_kind text, aggregate_id text, correlation_id text,
               created_at timestamptz, payload bytea, xmin bigint)
LANGUAGE plpgsql STABLE SET enable_seqscan = off AS $$
BEGIN
    RETURN QUERY
    SELECT e.id, e.xid::text::bigint, e.type, e.aggregate_kind, e.aggregate_id, e.correlation_id, e.created_at, e.payload,
           pg_snapshot_xmin(pg_current_snapshot())::text::bigint
    FROM events e
    WHERE (e.xid, e.id) > (after_xid, after_id)
    ORDER BY e.xid, e.id
    LIMIT max_events;
END
$$;

CREATE FUNCTION hodei_count_events_after(after_xid xid8, after_id bigint) RETURNS bigint
LANGUAGE plpgsql STABLE SET enable_seqscan = off AS $$
BEGIN
    RETURN (SELECT count(*) FROM events e WHERE (e.xid, e.id) > (after_xid, after_id));
END
$$;
