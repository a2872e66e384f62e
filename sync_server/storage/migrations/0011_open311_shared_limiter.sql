-- Open311 API keys now count their per-minute budget in the shared `rate_limits` table (migration 0010, one
-- limiter for addresses, devices and keys); the per-key table of migration 0009 is no longer used.
DROP TABLE api_key_usage;
