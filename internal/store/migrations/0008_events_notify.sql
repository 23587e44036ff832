-- Every statement that inserts events announces them on the bus channel:
-- the NOTIFY travels with the insert (no separate round trip, and no
-- writer can forget it). PostgreSQL folds identical notifications of one
-- transaction into one, delivered at commit.
CREATE FUNCTION hodei_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hodei_events', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER events_notify AFTER INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION hodei_events_notify();
