-- Each woman's own "today": the IANA time zone her dates are in (existing accounts: UTC,
-- what "today" meant for them until now).
ALTER TABLE users ADD COLUMN time_zone VARCHAR(64) NOT NULL DEFAULT 'UTC';
