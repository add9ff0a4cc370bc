#!/usr/bin/env bash
# Database restore (the specification's scripts/restore_database.sh), a thin wrapper over
# `digital-employee restore`, which checks the file, asks for confirmation, restores with
# the matching tool (pg_restore for custom-format dumps, a file swap for SQLite) and
# checks the schema version.
#
#   restore_database.sh                 list the backups in $BACKUP_DIR
#   restore_database.sh FILE [--yes]    restore FILE (a name in $BACKUP_DIR or a path)
#
# Environment:
#   BACKUP_DIR      where backups are (/backups)
#   APP_STOP_CMD    optional command that stops the application first
#                   (e.g. "kubectl -n digital-employee scale deploy/digital-employee-app --replicas=0")
#   APP_START_CMD   optional command that starts it again afterwards
#   DIGITAL_EMPLOYEE_BIN  the binary (digital-employee on PATH)
#   plus the database settings the binary reads (DATABASE_URL or DB_*).
set -euo pipefail

BIN=${DIGITAL_EMPLOYEE_BIN:-digital-employee}
BACKUP_DIR=${BACKUP_DIR:-/backups}

if [ "$#" -eq 0 ]; then
    echo "usage: $0 BACKUP_FILE [--yes]" >&2
    echo "backups in $BACKUP_DIR (oldest first):" >&2
    if compgen -G "$BACKUP_DIR/db_backup_*" >/dev/null; then
        ls -ltr "$BACKUP_DIR"/db_backup_* >&2
    else
        echo "  (none)" >&2
    fi
    exit 1
fi

file=$1
shift
if [ ! -e "$file" ] && [ -e "$BACKUP_DIR/$file" ]; then
    file="$BACKUP_DIR/$file"
fi
if [ ! -f "$file" ]; then
    echo "no such backup file: $file" >&2
    exit 1
fi

if [ -n "${APP_STOP_CMD:-}" ]; then
    echo "stopping the application: $APP_STOP_CMD"
    bash -c "$APP_STOP_CMD"
fi
status=0
"$BIN" restore "$file" "$@" || status=$?
if [ -n "${APP_START_CMD:-}" ]; then
    echo "starting the application: $APP_START_CMD"
    bash -c "$APP_START_CMD"
fi
exit "$status"
