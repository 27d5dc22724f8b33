-- Stored energy models carry the format of the features they were trained on (MODEL_FORMAT
-- in planher.py): a model of another format is retrained instead of loaded. The models
-- stored before this migration are of the first format.
ALTER TABLE user_models ADD COLUMN model_format INTEGER NOT NULL DEFAULT 1;
