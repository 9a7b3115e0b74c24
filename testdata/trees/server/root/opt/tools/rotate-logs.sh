#!/bin/sh
# Compress application logs older than a week.
find /var/log/myapp -name '*.log.[0-9]*' -mtime +7 -exec gzip -9 {} \;
