#!/bin/sh
# Start sge_qmaster, configure the cell (queue all.q with $SGE_SLOTS slots, PE smp, fast scheduling, accounting
# written at once), start sge_execd and sshd; then wait forever (the container's main process).
#   SSHD_PORT=22   port sshd listens on inside the container
#   SGE_SLOTS=8    slots of the one queue instance
set -e
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
wait_until() {  # wait_until <what> <command...>: poll for up to 30 s
  what=$1; shift
  for _ in $(seq 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "start.sh: $what did not come up" >&2; exit 1
}
edit() {  # edit <qconf option> <sed script>: change a configuration in place through $EDITOR
  SGE_EDIT=$2 EDITOR=/usr/local/bin/sge-edit qconf "$1" >/dev/null
}
install -d -m 755 /etc/ssh/intercede /run/sshd
install -m 600 /keys/hostkey /etc/ssh/intercede/hostkey
install -m 644 /keys/authorized_keys /etc/ssh/intercede/authorized_keys
/etc/init.d/gridengine-master start >/dev/null
wait_until sge_qmaster qconf -sh
if ! qconf -sql >/dev/null 2>&1; then  # first start of this container: configure the cell
  qconf -as sgehost >/dev/null
  printf 'group_name @allhosts\nhostlist sgehost\n' > /tmp/allhosts && qconf -Ahgrp /tmp/allhosts >/dev/null
  printf '%s\n' 'pe_name smp' 'slots 999' 'user_lists NONE' 'xuser_lists NONE' 'start_proc_args NONE' \
    'stop_proc_args NONE' 'allocation_rule $pe_slots' 'control_slaves FALSE' 'job_is_first_task TRUE' \
    'urgency_slots min' 'accounting_summary FALSE' 'qsort_args NONE' > /tmp/smp && qconf -Ap /tmp/smp >/dev/null
  # load_thresholds NONE: the test machine's load must not put the queue in alarm state (jobs would never start).
  edit -aq "s/^qname .*/qname all.q/
s/^hostlist .*/hostlist @allhosts/
s/^slots .*/slots ${SGE_SLOTS:-8}/
s/^load_thresholds .*/load_thresholds NONE/
s/^pe_list .*/pe_list smp/
s|^shell .*|shell /bin/sh|
s/^shell_start_mode .*/shell_start_mode unix_behavior/"
  # Schedule every second (default 15 s) and on every submit/finish; write accounting at once (qacct -j).
  edit -msconf "s/^schedule_interval .*/schedule_interval 0:0:1/
s/^flush_submit_sec .*/flush_submit_sec 1/
s/^flush_finish_sec .*/flush_finish_sec 1/"
  # reporting_params spans continuation lines ('\\' at the end): replace the whole entry.
  edit -mconf '/^reporting_params/,/[^\\]$/c reporting_params accounting=true reporting=false flush_time=00:00:01 joblog=false sharelog=00:00:00 accounting_flush_time=00:00:00' 
fi
/etc/init.d/gridengine-exec start >/dev/null
wait_until sge_execd sh -c 'qhost -h sgehost | grep -q "lx-amd64.*[0-9]"'
/usr/sbin/sshd -p "${SSHD_PORT:-22}" -E /var/log/sshd.log
echo "sge started"
exec sleep infinity
