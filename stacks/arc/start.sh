#!/bin/sh
# ARC CE container entrypoint: a fresh test CA, a host certificate valid for localhost, the container's hostname and
# its own address (clients on the bridge network verify it), a user certificate + 7-day proxy for `tester`, a token
# issuer on https://localhost:8444 (A-REX fetches its keys), then ONE arched process running the job manager and the
# HTTPS/REST interface on :8443. Everything a client needs is copied to /export.
set -e
rm -f /etc/arc.conf.d/*.conf            # drop postinst-generated testCA snippets (they map to nobody)
cd /tmp
ADDR=$(hostname -i | cut -d' ' -f1)
CA=/etc/grid-security/certificates/ARC-TestCA-ci
arcctl test-ca --ca-id ci init --force
# The host certificate by hand (arcctl's has no IP subjectAltName): the client checks the address it dials.
cat > host.ext <<EXT
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:localhost,DNS:$(hostname),IP:$ADDR,IP:127.0.0.1
EXT
openssl req -new -newkey rsa:2048 -nodes -keyout host-key.pem -out host.csr \
  -subj "/DC=org/DC=nordugrid/DC=ARC/O=TestCA/CN=localhost" 2>/dev/null
openssl x509 -req -in host.csr -CA $CA.pem -CAkey $CA-key.pem -CAcreateserial -days 30 -sha256 \
  -extfile host.ext -out host-cert.pem 2>/dev/null
install -m 644 host-cert.pem /etc/grid-security/testCA-hostcert.pem
install -m 600 host-key.pem  /etc/grid-security/testCA-hostkey.pem
arcctl test-ca --ca-id ci usercert -n tester -i tester --force    # also adds DN to testCA.allowed-subjects
su tester -s /bin/sh -c 'arcproxy -c validityPeriod=7d' >/dev/null   # -> /tmp/x509up_u2000
# The token issuer: its own signing key, TLS with the host certificate (A-REX trusts the test CA).
mkdir -p /etc/issuer && openssl genrsa -out /etc/issuer/signing.pem 2048 2>/dev/null
python3 /usr/local/bin/issuer.py serve >/var/log/issuer.log 2>&1 &
mkdir -p /export
cp ~tester/.globus/usercert.pem ~tester/.globus/userkey.pem /tmp/x509up_u2000 $CA.pem /export/
chmod 644 /export/*
mkdir -p /var/log/arc /var/spool/arc/jobstatus /var/spool/arc/sessiondir
/usr/lib/arc/arcconfig-parser --config /etc/arc.conf --runconfig /run/arched-arex.cfg --save
# arched runs under this loop so a test can stop and start it (ARCStack.arex_stop/arex_start: /run/arex.paused)
# while the container, its jobs and their state stay.
while :; do
  [ -e /run/arex.paused ] || /usr/sbin/arched -f -c /etc/arc/arex.xml
  sleep 0.5
done
