#!/usr/bin/env bash
# Database backup (the specification's scripts/backup_database.sh), a thin wrapper over
# `digital-employee backup`, which does the work: SQLite through VACUUM INTO, PostgreSQL
# through pg_dump --format=custom; verification; db_backup_YYYYmmdd_HHMMSS names;
# retention clean-up; a line in $BACKUP_DIR/backup.log; upload when AWS_S3_BUCKET is set.
#
# Environment (with the specification's defaults):
#   DB_HOST, DB_PORT (5432), DB_NAME (digital_employee), DB_USER (user), DB_PASSWORD
#       or DATABASE_URL: the database, read by the binary itself
#   BACKUP_DIR      where backups go (/backups)
#   RETENTION_DAYS  backups older than this are deleted (7)
#   AWS_S3_BUCKET   optional upload target (needs the aws CLI)
#   DIGITAL_EMPLOYEE_BIN  the binary (digital-employee on PATH)
# Exit status: 0 on success, 1 on failure.
set -euo pipefail

BIN=${DIGITAL_EMPLOYEE_BIN:-digital-employee}
BACKUP_DIR=${BACKUP_DIR:-/backups}
RETENTION_DAYS=${RETENTION_DAYS:-7}
export BACKUP_DIR RETENTION_DAYS

if ! "$BIN" backup --output-dir "$BACKUP_DIR" --retention-days "$RETENTION_DAYS" "$@"; then
    echo "backup failed; see $BACKUP_DIR/backup.log" >&2
    exit 1
fi
