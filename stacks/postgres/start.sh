#!/bin/sh
# Start PostgreSQL 15 and make the role the tests use: `intercede` (LOGIN, CREATEDB) with the password $PG_PASSWORD,
# owner of the database `intercede`. Then wait forever: the server runs as a daemon, so `pg-ctl stop` / `pg-ctl start`
# stop and start it without ending the container.
set -eu
: "${PG_PASSWORD:?set PG_PASSWORD}"
pg_ctlcluster 15 main start
# The password comes through the environment, not argv (ps would show it); psql reads it as a variable.
su postgres -c "psql -v ON_ERROR_STOP=1 -q -v pw=\"\$PG_PASSWORD\"" <<'SQL'
CREATE ROLE intercede LOGIN CREATEDB PASSWORD :'pw';
CREATE DATABASE intercede OWNER intercede;
SQL
echo "start-postgres: ready" >&2
exec sleep infinity
