-- The population model trains on the most recent days of everyone (ORDER BY date DESC
-- LIMIT …): without this index that read sorts every mood ever logged, which at a million
-- moods outlasts the database timeout.
CREATE INDEX ix_daily_moods_date ON daily_moods (date);
