#!/bin/sh
# Start sshd on 127.0.0.1:$SSHD_PORT with the keys from /keys (stacks/keys.py make_keys), and restart it whenever it
# exits: `pkill -x "sshd|sshd-session|sshd-auth"` inside the container drops every connection and brings a fresh
# sshd up (the reconnect tests; stacks/ssh_stack.py restart_sshd). Works for OpenSSH 9.2 (bookworm) to 10.x (sid).
set -eu
: "${SSHD_PORT:?set SSHD_PORT}"
# Copies owned by root with the modes sshd wants, whatever the owner and modes of the mounted folder.
install -m 0600 /keys/hostkey /etc/ssh/intercede/hostkey
install -m 0644 /keys/hostkey.pub /etc/ssh/intercede/hostkey.pub
install -m 0644 /keys/authorized_keys /etc/ssh/intercede/authorized_keys
/usr/sbin/sshd -t -o "ListenAddress=127.0.0.1:$SSHD_PORT"
while :; do
  /usr/sbin/sshd -D -e -o "ListenAddress=127.0.0.1:$SSHD_PORT" || true
  echo "start-sshd: sshd exited; restarting" >&2
  sleep 0.1
done
