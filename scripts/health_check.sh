#!/usr/bin/env bash
# Health check (the specification's scripts/health_check.py), a thin wrapper over
# `digital-employee health-check`: application, database, Redis, AI providers, system
# resources and disk, concurrently; JSON on stdout; exit 1 when anything is unhealthy.
#
# Environment:
#   APP_URL   base URL of the instance (http://localhost:8000)
#   DIGITAL_EMPLOYEE_BIN  the binary (digital-employee on PATH)
#   plus what the binary reads: DATABASE_URL or DB_*, REDIS_URL, OPENAI_API_KEY,
#   CLAUDE_API_KEY, DATA_DIR.
# Extra arguments are passed on, e.g. `--format table` or `--only app,db`.
set -euo pipefail

BIN=${DIGITAL_EMPLOYEE_BIN:-digital-employee}
exec "$BIN" health-check --url "${APP_URL:-http://localhost:8000}" "$@"
