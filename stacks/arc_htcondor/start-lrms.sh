#!/bin/sh
# Start the HTCondor pool, wait until its schedd and a slot answer, then hand over to stacks/arc's start.sh (test CA,
# credentials, token issuer, arched).
set -e
/usr/sbin/condor_master
for _ in $(seq 600); do
  condor_status -schedd -af Name 2>/dev/null | grep -q . && condor_status -af Name 2>/dev/null | grep -q . && break
  sleep 0.2
done
condor_status -af Name | grep -q . || { echo "start-lrms.sh: the HTCondor pool did not come up" >&2; exit 1; }
exec /usr/local/bin/start.sh
