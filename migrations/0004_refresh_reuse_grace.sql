-- The refresh token a login's last refresh replaced: presented again within
-- REFRESH_REUSE_GRACE_S (two tabs refreshing at once), it gets the pair already issued
-- instead of being taken for theft.
ALTER TABLE logins ADD COLUMN previous_refresh_jti VARCHAR(64);
