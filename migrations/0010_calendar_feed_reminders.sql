-- Reminders in her calendar: an alarm this many days before each predicted period
-- (null: none).
ALTER TABLE calendar_feeds ADD COLUMN remind_days_before INTEGER;
