#!/bin/sh
# Nightly HR database dump. Credentials come from /var/backups/.pgpass.
set -eu
export PGPASSFILE=/var/backups/.pgpass
STAMP=$(date +%Y%m%d)
pg_dump -h db.internal -U hr_app -Fc hr > "/var/backups/hr-$STAMP.dump"
find /var/backups -name 'hr-*.dump' -mtime +14 -delete
