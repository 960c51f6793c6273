#!/bin/sh
# Start sshd (if /keys is mounted) and the HTCondor pool; then stay in the foreground as condor_master.
# Environment: SSHD_PORT=22  port sshd listens on inside the container.
set -e
if [ -f /keys/hostkey ]; then
  # /keys is the host's 0700 key folder: sshd reads authorized_keys as the user logging in, so copy the keys out.
  install -d -m 755 /etc/ssh/intercede /run/sshd
  install -m 600 /keys/hostkey /etc/ssh/intercede/hostkey
  install -m 644 /keys/authorized_keys /etc/ssh/intercede/authorized_keys
  /usr/sbin/sshd -p "${SSHD_PORT:-22}" -E /var/log/sshd.log
fi
exec /usr/sbin/condor_master -f
