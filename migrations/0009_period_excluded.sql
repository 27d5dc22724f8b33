-- Cycles she sets aside: a period marked excluded starts a cycle whose length counts neither
-- in her estimate nor in the population prior (illness, the pill, a pregnancy loss, travel).
ALTER TABLE period_records ADD COLUMN excluded BOOLEAN NOT NULL DEFAULT FALSE;
