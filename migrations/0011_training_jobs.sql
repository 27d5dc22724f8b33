-- Trainings queued by web processes for `python -m planher worker` (TRAINING=worker): one
-- row per model to train, taken by one worker at a time (FOR UPDATE SKIP LOCKED), claimed
-- with a heartbeat so a killed worker's job is taken over.
CREATE TABLE training_jobs (
    subject VARCHAR(32) PRIMARY KEY,
    user_id INTEGER REFERENCES users (id) ON DELETE CASCADE,
    force BOOLEAN NOT NULL,
    queued_at TIMESTAMP NOT NULL,
    requested_at TIMESTAMP NOT NULL,
    claimed_at TIMESTAMP,
    attempts INTEGER NOT NULL
);
CREATE INDEX ix_training_jobs_queued_at ON training_jobs (queued_at);
