#!/bin/sh
# Start munged, mariadb + slurmdbd, slurmctld, slurmd and sshd; then wait forever (the container's main process).
#
#   start.sh --prepare   at image build time: munge key, database, schema, cluster/account/user (so starting is fast)
#   start.sh             at container start. Environment:
#     SSHD_PORT=22            port sshd listens on inside the container
#     SLURM_MIN_JOB_AGE=300   seconds a finished job stays in squeue before only sacct knows it
#     SLURM_CPUS=4            CPUs of the one node
set -e
mkdir -p /run/munge /run/mysqld /run/sshd /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
chown munge:munge /run/munge
chown mysql:mysql /run/mysqld
chown slurm:slurm /var/lib/slurm/slurmctld /var/log/slurm

wait_until() {  # wait_until <what> <command...>: poll for up to 30 s
  what=$1; shift
  for _ in $(seq 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "start.sh: $what did not come up" >&2; exit 1
}

start_accounting() {
  mysqld_safe --skip-syslog >/dev/null 2>&1 &
  wait_until mariadb mysqladmin ping
  slurmdbd
  wait_until slurmdbd sacctmgr -n show cluster
}

if [ "${1:-}" = --prepare ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  su -s /bin/sh munge -c /usr/sbin/munged
  mysqld_safe --skip-syslog >/dev/null 2>&1 &
  wait_until mariadb mysqladmin ping
  mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  slurmdbd
  wait_until slurmdbd sacctmgr -n show cluster
  sacctmgr -i add cluster test
  sacctmgr -i add account test Description=tests Organization=intercede
  sacctmgr -i add user tester,root DefaultAccount=test
  kill "$(cat /run/slurmdbd.pid)"; mysqladmin shutdown; pkill -x munged
  for d in slurmdbd mariadbd mysqld munged; do while pgrep -x "$d" >/dev/null; do sleep 0.2; done; done
  rm -f /run/slurmdbd.pid /var/log/slurm/*.log
  exit 0
fi

sed -i -e "s/^MinJobAge=.*/MinJobAge=${SLURM_MIN_JOB_AGE:-300}/" \
       -e "s/^NodeName=slurmhost CPUs=[0-9]*/NodeName=slurmhost CPUs=${SLURM_CPUS:-4}/" /etc/slurm/slurm.conf
su -s /bin/sh munge -c /usr/sbin/munged
# /keys is the host's 0700 key folder: sshd reads authorized_keys as the user logging in, so copy the keys out.
install -d -m 755 /etc/ssh/intercede
install -m 600 /keys/hostkey /etc/ssh/intercede/hostkey
install -m 644 /keys/authorized_keys /etc/ssh/intercede/authorized_keys
/usr/sbin/sshd -p "${SSHD_PORT:-22}" -E /var/log/sshd.log
start_accounting
slurmctld
slurmd
echo "slurm started"
exec sleep infinity
