#!/usr/bin/env bash
# A one-node Slurm cluster on this machine for tests and CI: .ci/slurm.sh start|stop|status|env
#
# Needs root and Debian's packages: apt-get install -y slurmctld slurmd slurm-client munge
# Everything it creates lives in $LAMP_SLURM_DIR (default /tmp/lamp-bench-slurm): its own munge key
# and socket, slurm.conf, state, spool, logs and pid files. `stop` ends only the daemons named by
# those pid files. Clients find the cluster through SLURM_CONF (`eval "$(.ci/slurm.sh env)"`); when
# the system has no /etc/slurm/slurm.conf, `start` links ours there so a plain `sinfo` works too.
set -euo pipefail

DIR="${LAMP_SLURM_DIR:-/tmp/lamp-bench-slurm}"
CTLD_PORT="${LAMP_SLURM_PORT:-6817}"  # slurmd listens on the next port
CONF="$DIR/slurm.conf"
ETC_CONF=/etc/slurm/slurm.conf
HOST="$(hostname -s)"
export SLURM_CONF="$CONF"

die() { echo "slurm.sh: $*" >&2; exit 1; }

alive() {  # alive NAME: the pid file names a live process running that program
    local pidfile="$DIR/$1.pid" pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(<"$pidfile")"
    [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$1"
}

wait_for() {  # wait_for SECONDS CMD...: retry CMD until it succeeds
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

node_idle() { [[ "$(sinfo -h -N -n "$HOST" -o %t 2>/dev/null)" == idle* ]]; }

write_conf() {
    local cpus mem_mb
    cpus="$(nproc)"
    # A little under the physical total: slurmd drains a node that reports less than RealMemory.
    mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 * 95 / 100 ))
    cat >"$CONF" <<EOF
# Written by .ci/slurm.sh: a one-node test cluster. Not for production use.
ClusterName=lampbench
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
AuthType=auth/munge
CredType=cred/munge
# cred_expire also delays a requeued job's restart (default 120 s): keep requeue tests quick.
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Backfill passes every 5 s (default 30 s) start a requeued job soon after its begin time.
SchedulerParameters=bf_interval=5
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# Requeue: submitit's checkpointing calls 'scontrol requeue' from the job on --signal=USR2@delay.
JobRequeue=1
# Fast turn-around for tests: short grace between SIGTERM and SIGKILL, quick scheduling passes.
KillWait=5
MinJobAge=600
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    alive munged && return 0
    mkdir -p "$DIR/munge"
    chown munge:munge "$DIR/munge"
    chmod 0711 "$DIR/munge"  # clients need to reach the socket
    if [[ ! -s "$DIR/munge/munge.key" ]]; then
        mungekey -c -k "$DIR/munge/munge.key"
    fi
    chown munge:munge "$DIR/munge/munge.key"
    chmod 0600 "$DIR/munge/munge.key"
    # munged refuses to run as root; the pid file lives where the munge user may write it.
    runuser -u munge -- munged \
        --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
        --seed-file="$DIR/munge/munged.seed"
    ln -sf "$DIR/munge/munged.pid" "$DIR/munged.pid"
    wait_for 10 munge -S "$DIR/munge/munge.socket" -n || die "munged did not start: see $DIR/munge/munged.log"
}

start() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        || die "Slurm or munge is not installed: apt-get install -y slurmctld slurmd slurm-client munge"
    [[ $EUID -eq 0 ]] || die "must run as root (slurmd starts jobs as their submitting user)"
    if alive slurmctld && alive slurmd && node_idle_or_busy; then
        echo "slurm.sh: already running (SLURM_CONF=$CONF)"
        return 0
    fi
    stop_daemons
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    write_conf
    start_munge
    # -c: start from a clean state (no jobs recovered from an earlier run of this test cluster).
    slurmctld -c -f "$CONF"
    wait_for 30 scontrol ping || die "slurmctld did not start: see $DIR/log/slurmctld.log"
    slurmd -f "$CONF"
    if ! wait_for 60 node_idle; then
        sinfo -N -l >&2 || true
        die "node $HOST did not become idle: see $DIR/log/slurmd.log and $DIR/log/slurmctld.log"
    fi
    if [[ ! -e "$ETC_CONF" ]]; then
        mkdir -p "$(dirname "$ETC_CONF")"
        ln -s "$CONF" "$ETC_CONF"
    fi
    echo "slurm.sh: started one-node cluster on $HOST (SLURM_CONF=$CONF)"
    sinfo
}

node_idle_or_busy() {
    local state
    state="$(sinfo -h -N -n "$HOST" -o %t 2>/dev/null)" || return 1
    [[ "$state" == idle* || "$state" == mix* || "$state" == alloc* ]]
}

stop_pid() {  # stop_pid NAME: SIGTERM the process its pid file names, SIGKILL after 10 s
    local pidfile="$DIR/$1.pid" pid
    if alive "$1"; then
        pid="$(<"$pidfile")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

stop_daemons() {
    stop_pid slurmd
    stop_pid slurmctld
    stop_pid munged
}

stop() {
    if alive slurmctld; then
        # End our jobs first: slurmd leaves a running job's slurmstepd behind when it exits.
        scancel --full --quiet "--user=$(id -un)" 2>/dev/null || true
        wait_for 15 bash -c '[[ -z "$(squeue -h -t running,completing 2>/dev/null)" ]]' || true
    fi
    stop_daemons
    if [[ -L "$ETC_CONF" && "$(readlink "$ETC_CONF")" == "$CONF" ]]; then
        rm -f "$ETC_CONF"
    fi
    echo "slurm.sh: stopped"
}

status() {
    local ok=0
    for d in munged slurmctld slurmd; do
        if alive "$d"; then echo "$d: running (pid $(<"$DIR/$d.pid"))"; else echo "$d: not running"; ok=1; fi
    done
    if ((ok == 0)); then
        sinfo -N -l
    fi
    return $ok
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) die "usage: $0 start|stop|status|env" ;;
esac
