-- Label scopes find their pods with jsonb containment (labels @> '{"app": "x"}'): one index
-- probe per label selector instead of testing every pod against every selector.
CREATE INDEX gpu_pods_labels ON gpu_pods USING gin (labels jsonb_path_ops);
