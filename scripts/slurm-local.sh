#!/usr/bin/env bash
# A single-node Slurm for trying and testing `vidtune sweep --backend slurm` on one machine: munged,
# slurmctld and slurmd started by hand (no systemd) with a minimal configuration and all their state in
# DIR, and stopped again. Needs Debian's slurm-wlm and munge (`./dev.sh test` installs them), and root or
# a user who may run the daemons.
#
#   scripts/slurm-local.sh start DIR   starts them; prints `export SLURM_CONF=DIR/slurm.conf`
#   scripts/slurm-local.sh stop DIR    stops the daemons started in DIR (by their pid files, nothing else)
#
# Ports: SLURM_LOCAL_PORT (default 16817) for slurmctld and the next one for slurmd.
set -euo pipefail
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

stop() {
  local p pid
  for p in slurmd slurmctld munge/munged; do
    [ -f "$dir/$p.pid" ] || continue
    pid=$(cat "$dir/$p.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$dir/$p.pid"
  done
}

case "$cmd" in
  stop) stop ;;
  start)
    for tool in munged mungekey slurmctld slurmd sinfo sbatch; do
      command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin"
      command -v "$tool" >/dev/null 2>&1 || { echo "slurm-local: $tool is not installed (Debian: slurm-wlm and munge)" >&2; exit 1; }
    done
    mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
    dir=$(cd "$dir" && pwd)
    chmod 700 "$dir/munge"
    stop
    [ -f "$dir/munge/munge.key" ] || mungekey -c -k "$dir/munge/munge.key" -f
    chmod 600 "$dir/munge/munge.key"
    munged --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.sock" --pid-file="$dir/munge/munged.pid" \
      --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" --force
    port=${SLURM_LOCAL_PORT:-16817}
    host=$(hostname -s)
    user=$(id -un)
    cat >"$dir/slurm.conf" <<EOF
ClusterName=vidtune-local
SlurmctldHost=$host
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.sock
CredType=cred/munge
SlurmUser=$user
SlurmdUser=$user
SlurmctldPort=$port
SlurmdPort=$((port + 1))
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
KillWait=5
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF=$dir/slurm.conf
    slurmctld -c
    slurmd
    for _ in $(seq 100); do
      if sinfo -h -o %T 2>/dev/null | grep -q idle; then
        echo "export SLURM_CONF=$SLURM_CONF"
        exit 0
      fi
      sleep 0.2
    done
    echo "slurm-local: the node did not come up within 20 s; the logs:" >&2
    tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" "$dir/munge/munged.log" >&2 || true
    stop
    exit 1
    ;;
  *) echo "slurm-local: unknown command $cmd (start or stop)" >&2; exit 2 ;;
esac
