#!/usr/bin/env bash
# A real one-node Slurm cluster (Debian's slurm-wlm with munge) for the tests, run as root
# without systemd; everything lives under $SLURM_DIR (default target/slurm).
#
#   eval "$(bash scripts/slurm.sh start)"   # prints `export SLURM_CONF=… FLOW_TEST_SLURM=1`
#   bash scripts/slurm.sh stop
#
# `start` installs the packages when they are missing (apt-get, about 15 s) and waits until the
# node is idle. The node offers 8 CPUs whatever the machine has, and jobs get 512 MiB per CPU
# unless they ask, so that the tests' jobs, which mostly sleep, never queue behind each other.
# Not root, or no apt-get: it says so and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
D=$(realpath -m "${SLURM_DIR:-target/slurm}")
export SLURM_CONF=$D/slurm.conf

stop() {
  local pids="" alive="" p
  for f in "$D/slurmd.pid" "$D/slurmctld.pid"; do
    [ -f "$f" ] && pids="$pids $(cat "$f")"
  done
  [ -n "$pids" ] || return 0
  kill $pids 2>/dev/null || true
  # slurmd may ignore SIGTERM; daemons re-parented to PID 1 can linger as zombies, which count
  # as stopped.
  for _ in $(seq 50); do
    alive=""
    for p in $pids; do
      case "$(ps -o stat= -p "$p" 2>/dev/null | cut -c1)" in "" | Z) ;; *) alive="$alive $p" ;; esac
    done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  [ -z "$alive" ] || kill -9 $alive 2>/dev/null || true
  rm -f "$D/slurmd.pid" "$D/slurmctld.pid"
}

start() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "Slurm is not installed and installing it needs root" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge >&2 \
      || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge >&2; }
  fi
  stop
  rm -rf "$D"
  mkdir -p "$D/state" "$D/spool" "$D/log"
  local host mem
  host=$(hostname -s)
  mem=$(slurmd -C | head -1 | grep -o 'RealMemory=[0-9]*')
  cat >"$SLURM_CONF" <<CONF
ClusterName=flowtest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
ReturnToService=2
MinJobAge=600
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmdParameters=config_overrides
NodeName=$host CPUs=8 $mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  # pgrep would count zombies: ask munge itself whether it answers.
  if ! munge -n >/dev/null 2>&1; then runuser -u munge -- /usr/sbin/munged; fi
  munge -n | unmunge >/dev/null || { echo "munge does not work" >&2; exit 1; }
  slurmctld -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF"
  for _ in $(seq 1 300); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^idle'; then
      echo "export SLURM_CONF=$SLURM_CONF FLOW_TEST_SLURM=1"
      return 0
    fi
    sleep 0.1
  done
  echo "the Slurm node did not become idle; see $D/log" >&2
  sinfo >&2 || true
  exit 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
