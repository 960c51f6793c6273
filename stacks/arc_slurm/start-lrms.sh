#!/bin/sh
# Start munged, slurmctld and slurmd, wait until the node is idle, then hand over to stacks/arc's start.sh (test CA,
# credentials, token issuer, arched).
set -e
sed -i "s/NODE/$(hostname -s)/g" /etc/slurm/slurm.conf
mkdir -p /run/munge /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
chown munge:munge /run/munge
chown slurm:slurm /var/lib/slurm/slurmctld /var/log/slurm
su -s /bin/sh munge -c /usr/sbin/munged
slurmctld
slurmd
for _ in $(seq 600); do sinfo -h -o %t 2>/dev/null | grep -qx idle && break; sleep 0.2; done
sinfo -h -o %t | grep -qx idle || { echo "start-lrms.sh: slurm node not idle" >&2; exit 1; }
exec /usr/local/bin/start.sh
