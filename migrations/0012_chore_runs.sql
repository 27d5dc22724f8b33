-- When each chore that must run once for all instances (the retention sweep) last ran:
-- the process whose update moves it on does the chore; the others see it done.
CREATE TABLE chore_runs (
    name VARCHAR(32) PRIMARY KEY,
    last_run_at TIMESTAMP NOT NULL
);
