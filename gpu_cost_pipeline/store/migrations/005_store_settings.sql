-- What the store was set up with: the mode's reason, and the TimescaleDB policies' settings
-- (so they are re-set only when the configuration changes).
CREATE TABLE store_settings (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
