-- Services cache shops in memory; every change to a shop row tells them to
-- drop it (channel payhub_shops, payload = the shop's id). Sent at commit.
CREATE FUNCTION shops_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('payhub_shops', OLD.id::text);
    ELSE
        PERFORM pg_notify('payhub_shops', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER shops_notify_change
    AFTER INSERT OR UPDATE OR DELETE ON shops
    FOR EACH ROW EXECUTE FUNCTION shops_notify_change();
