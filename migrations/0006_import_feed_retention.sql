-- Auto-delete: a woman may keep only her last retention_days days of history (NULL: all).
ALTER TABLE users ADD COLUMN retention_days INTEGER CHECK (retention_days IS NULL OR retention_days >= 90);

-- Her secret calendar feed: only the SHA-256 of its token is kept, so the table cannot be
-- used to read anyone's calendar. One feed per user; a new one replaces it.
CREATE TABLE calendar_feeds (
    user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    token_hash VARCHAR(64) NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX ix_calendar_feeds_token_hash ON calendar_feeds (token_hash);
