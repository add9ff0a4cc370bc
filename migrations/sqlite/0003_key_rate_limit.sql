-- Per-key rate-limit override (requests per window; NULL = RATE_LIMIT_REQUESTS).
ALTER TABLE api_keys ADD COLUMN rate_limit INTEGER;
CREATE INDEX api_keys_tenant_id ON api_keys (tenant_id, id DESC);
