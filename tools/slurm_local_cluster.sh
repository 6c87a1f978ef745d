#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for testing the workflow through sbatch (docs/cluster.md).
#   tools/slurm_local_cluster.sh [up]   install munge + SLURM from Debian packages if missing, write the config,
#                                       start munged, slurmctld and slurmd unless running, wait for the node
#   tools/slurm_local_cluster.sh down   stop the daemons this script started (others are left alone)
# Idempotent: a re-run with everything up only checks (under a second). Needs root and apt-get (Debian/Ubuntu).
# The node is `hostname -s` with partitions cpu (default) and gpu, and a fake GPU (gres gpu:1 backed by /dev/null):
# jobs get CUDA_VISIBLE_DEVICES but no device. No accounting database (jobs are recorded in $JOBCOMP), so
# Snakemake's SLURM plugin needs --slurm-status-command squeue; MinJobAge=600 keeps finished jobs visible to it.
set -euo pipefail

CMD=${1:-up}
PACKAGES=(munge slurmctld slurmd slurm-client)
ETC=/etc/slurm
RUN=/run/slurm
STATE=/run/autointerp-slurm  # pid markers of the daemons this script started (what `down` may stop)
JOBCOMP=/var/log/slurm/jobcomp.log
NODE=$(hostname -s)
T0=$SECONDS

die() { echo "slurm_local_cluster: $*" >&2; exit 1; }

case $CMD in up | down) ;; *) die "unknown command '$CMD': use 'up' (default) or 'down'" ;; esac
[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons): sudo $0 $CMD"

# pid from a daemon's pid file if that process is alive and is that daemon
pid_of() { # name pidfile
  local pid
  pid=$(cat "$2" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && echo "$pid"
}
# start a daemon and remember its pid as ours
start() { # name pidfile command...
  local name=$1 pidfile=$2
  shift 2
  "$@" 9>&-  # the daemon must not inherit (and hold) our lock
  for _ in $(seq 50); do pid_of "$name" "$pidfile" >"$STATE/$name.pid" && return 0; sleep 0.1; done
  rm -f "$STATE/$name.pid"
  die "$name did not start: see its log under /var/log/slurm/ or /var/log/munge/"
}
# running: by our pid file, or started by someone else (e.g. systemd) under the same name
running() { pid_of "$1" "$2" >/dev/null || pgrep -x "$1" >/dev/null; }

if [ "$CMD" = down ]; then
  mkdir -p "$STATE"
  for name in slurmd slurmctld munged; do  # slurmd first: stopped while slurmctld is down it may ignore SIGTERM
    pid=$(pid_of "$name" "$STATE/$name.pid") || { rm -f "$STATE/$name.pid"; continue; }
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$STATE/$name.pid"
    echo "slurm_local_cluster: stopped $name ($pid)"
  done
  exit 0
fi

# -- packages ----------------------------------------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null ||
    die "apt-get not found: install ${missing[*]} with this system's package manager, then re-run"
  export DEBIAN_FRONTEND=noninteractive
  # Post-install scripts may fail to start the services (no systemd, policy-rc.d): harmless, we start them below.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
    die "apt-get install ${missing[*]} failed: run it by hand to see why (package mirror reachable?)"
fi

mkdir -p "$STATE" "$ETC" "$RUN" /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm \
  /run/munge /var/log/munge /var/lib/munge
exec 9>"$STATE/lock"
flock 9  # two concurrent `up`s would start the daemons twice
chown slurm:slurm /var/lib/slurm/slurmctld /var/log/slurm
chown munge:munge /run/munge /var/log/munge /var/lib/munge

# -- munge -------------------------------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  (umask 077 && dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none)
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
if ! running munged /run/munge/munged.pid; then
  start munged /run/munge/munged.pid runuser -u munge -- /usr/sbin/munged
fi
munge -n | unmunge >/dev/null || die "munge does not work: see /var/log/munge/munged.log"

# -- configuration -----------------------------------------------------------------------------------------------
CPUS=$(nproc)
TOTAL_MB=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
# Headroom for the OS and the submitting Snakemake: slurmd drains a node that reports less than RealMemory.
MEM_MB=$((TOTAL_MB - (TOTAL_MB / 8 > 2048 ? TOTAL_MB / 8 : 2048)))
write_if_changed() { # file: content on stdin; returns 0 when the file changed
  local tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
  mv "$tmp" "$1" && chmod 644 "$1"
}
changed=0
write_if_changed "$ETC/slurm.conf" <<EOF && changed=1
# Written by tools/slurm_local_cluster.sh: a single-node test cluster without cgroups or accounting database.
ClusterName=autointerp
SlurmctldHost=$NODE
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# No cgroups in containers: CPU and memory limits are requested and scheduled, not enforced.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without it a job that gives no --mem gets the whole node.
DefMemPerCPU=2000
# Finished jobs stay in squeue for 10 min (Snakemake's plugin needs >= 120 s to use squeue for status).
MinJobAge=600
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP
GresTypes=gpu
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP
EOF
write_if_changed "$ETC/gres.conf" <<EOF && changed=1
AutoDetect=off
NodeName=$NODE Name=gpu File=/dev/null
EOF

# -- daemons -----------------------------------------------------------------------------------------------------
wait_for() { # seconds description command...
  local n=$(($1 * 5)) what=$2
  shift 2
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "$what not ready after $1 s: see /var/log/slurm/ and /var/log/munge/"
}
ctld_up() { scontrol ping | grep -q "is UP"; }
if ! running slurmctld "$RUN/slurmctld.pid"; then
  start slurmctld "$RUN/slurmctld.pid" /usr/sbin/slurmctld
elif [ $changed = 1 ]; then
  scontrol reconfigure
fi
wait_for 30 slurmctld ctld_up
running slurmd "$RUN/slurmd.pid" || start slurmd "$RUN/slurmd.pid" /usr/sbin/slurmd
node_ready() {
  local state
  state=$(sinfo -h -n "$NODE" -o %t | head -1)
  case $state in
    idle | mix | alloc | comp) return 0 ;;
    down | drain | drng | fail) scontrol update NodeName="$NODE" State=RESUME ;;  # e.g. left drained by a reboot
  esac
  return 1
}
wait_for 60 "node $NODE" node_ready
echo "slurm_local_cluster: ready: node $NODE ($CPUS CPUs, ${MEM_MB} MB, gres gpu:1), partitions cpu (default)" \
  "and gpu, no accounting (jobs in $JOBCOMP), $((SECONDS - T0)) s"
