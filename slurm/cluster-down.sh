#!/usr/bin/env bash
# Stop the daemons that slurm/cluster-up.sh started, by their pid files only (never by process name).
# VIDCAP_SLURM_CANCEL_JOBS=1 (default) cancels every job first, so that no job processes outlive slurmd.
set -uo pipefail

stop_pid() {  # stop_pid PIDFILE NAME
  local f=$1 name=$2 p
  if [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
    p=$(cat "$f"); kill "$p"
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then kill -9 "$p"; echo "killed -9 $name ($p)"; else echo "stopped $name ($p)"; fi
  else
    echo "$name not running"
  fi
}

exec 9>/run/vidcap-cluster.lock
flock 9

if [ "${VIDCAP_SLURM_CANCEL_JOBS:-1}" = 1 ] && [ -s /run/slurm/slurmctld.pid ] \
   && kill -0 "$(cat /run/slurm/slurmctld.pid)" 2>/dev/null; then
  jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    timeout 10 scancel $jobs || true
    for _ in $(seq 100); do [ -z "$(timeout 5 squeue -h 2>/dev/null)" ] && break; sleep 0.2; done
  fi
fi
stop_pid /run/slurm/slurmd.pid slurmd
stop_pid /run/slurm/slurmctld.pid slurmctld
stop_pid /run/slurm/slurmdbd.pid slurmdbd
stop_pid /run/mysqld/mysqld.pid mariadbd
stop_pid /run/munge/munged.pid munged
