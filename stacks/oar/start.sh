#!/bin/sh
# Start PostgreSQL, declare the node's cores as OAR resources (first start only), start OAR's own sshd (port 6667,
# how the server reaches its nodes), the OAR server (Almighty) and the tests' sshd; then wait forever.
#   SSHD_PORT=22   port the tests' sshd listens on inside the container
#   OAR_CORES=8    resources (one per core) of the one node, oarhost
set -e
wait_until() {  # wait_until <what> <command...>: poll for up to 60 s
  what=$1; shift
  for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "start.sh: $what did not come up" >&2; exit 1
}
install -d -m 755 /etc/ssh/intercede /run/sshd
install -m 600 /keys/hostkey /etc/ssh/intercede/hostkey
install -m 644 /keys/authorized_keys /etc/ssh/intercede/authorized_keys
pg_ctlcluster 15 main start
wait_until postgresql su postgres -c 'psql -q -d oar -c "select 1"'
if [ -z "$(oarnodes -s 2>/dev/null)" ]; then  # first start of this container: one resource per core
  for i in $(seq "${OAR_CORES:-8}"); do
    oarnodesetting -a -h oarhost -p host=oarhost -p core="$i" -p cpuset=$((i - 1)) >/dev/null
  done
fi
# The packages' init scripts start both daemons with `start_daemon -n -20`, which fails without CAP_SYS_NICE (the
# node's sshd then never starts): start them directly. /etc/oar/sshd_config's UsePrivilegeSeparation only warns.
/usr/sbin/sshd -f /etc/oar/sshd_config -o PidFile=/run/oar-node_sshd.pid 2>/dev/null
/usr/sbin/oar-server
wait_until Almighty pgrep -f /usr/lib/oar/Almighty
wait_until "the node's resources" sh -c '[ "$(oarnodes -s | grep -c ": Alive")" -eq "${OAR_CORES:-8}" ]'
/usr/sbin/sshd -p "${SSHD_PORT:-22}" -E /var/log/sshd.log
echo "oar started"
exec sleep infinity
