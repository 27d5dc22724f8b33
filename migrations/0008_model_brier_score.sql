-- Calibration beside accuracy: the Brier score of a model's forward-in-time validation
-- (null for models trained before it).
ALTER TABLE user_models ADD COLUMN brier_score DOUBLE PRECISION;
