-- gpu_cost looks up the pods seen in each window (last_seen >= window start): without this
-- index that lookup scans every pod of the retention period, every minute.
CREATE INDEX gpu_pods_last_seen ON gpu_pods (cluster, last_seen);
