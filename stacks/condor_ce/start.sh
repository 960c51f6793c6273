#!/bin/sh
# Start the SciTokens issuer, the local pool (condor_master with /etc/condor) and then the CE instance
# (condor_master with /etc/condor-ce); stay in the foreground with the CE's master.
set -e
# The issuer: a CA the CE trusts, a TLS certificate for issuer.intercede.test and an ES256 signing key.
d=/etc/condor-ce/issuer
install -d -m 755 "$d"
if [ ! -f "$d/signing.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=intercede test CA" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=issuer.intercede.test" \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  printf "subjectAltName=DNS:issuer.intercede.test\n" >"$d/san.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 30 \
    -extfile "$d/san.ext" -out "$d/server.crt" 2>/dev/null
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/signing.pem" 2>/dev/null
  cp "$d/ca.crt" /usr/local/share/ca-certificates/intercede-test-ca.crt
  update-ca-certificates >/dev/null 2>&1
fi
# The CE's host certificate (SciTokens travel over TLS): for its address, signed by the same test CA.
if [ ! -f "$d/host.crt" ]; then
  ip=$(hostname -I | cut -d' ' -f1)
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$ip" \
    -keyout "$d/host.key" -out "$d/host.csr" 2>/dev/null
  printf "subjectAltName=IP:%s,DNS:%s\n" "$ip" "$(hostname)" >"$d/host.ext"
  openssl x509 -req -in "$d/host.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 30 \
    -extfile "$d/host.ext" -out "$d/host.crt" 2>/dev/null
  chown condor:condor "$d/host.key"
fi
grep -q issuer.intercede.test /etc/hosts || echo "127.0.0.1 issuer.intercede.test" >>/etc/hosts
python3 /usr/local/bin/issuer.py serve >/var/log/issuer.log 2>&1 &

install -d -o condor -g condor /run/condor-ce
/usr/sbin/condor_master
for _ in $(seq 100); do condor_status -schedd -af Name 2>/dev/null | grep -q . && break; sleep 0.2; done
export CONDOR_CONFIG=/etc/condor-ce/condor_config
exec /usr/sbin/condor_master -f
