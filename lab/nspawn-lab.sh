#!/usr/bin/env bash
# pyserf's multi-host lab on one machine: systemd-nspawn containers booting real systemd on a
# host bridge, reached over SSH. Needs root; works without systemd as PID 1 on the host and
# without machined.
#
#   nspawn-lab.sh deps             apt-get install what the lab needs on the host (if missing)
#   nspawn-lab.sh base             build the cached base rootfs (debootstrap bookworm minbase +
#                                  systemd, sshd, python3, iptables...), only if missing
#   nspawn-lab.sh start NAME IP    boot one container with address IP/24 on the bridge
#   nspawn-lab.sh stop NAME...     orderly halt (in parallel), unmount the overlays
#   nspawn-lab.sh up [N]           base + boot lab1..labN (default 3) at 10.213.0.11..
#   nspawn-lab.sh down             stop every lab container, close ssh masters, drop the bridge
#   nspawn-lab.sh status           one line per container: name, pids, address, systemd state
#   nspawn-lab.sh inventory FILE   write an Ansible INI inventory (group "pyserf") of the
#                                  running containers, reached over SSH as root
#   nspawn-lab.sh ssh NAME [CMD]   ssh into a container (with the lab key and control master)
#   nspawn-lab.sh purge            down, then delete the cached base and key
#
# Environment: PYSERF_LAB_DIR (below), PYSERF_LAB_BRIDGE (br-lab), PYSERF_LAB_NET (10.213.0),
# PYSERF_LAB_MIRROR, PYSERF_LAB_BOOT_TIMEOUT (60 s), PYSERF_LAB_APT_LISTS (fresh|stale).
# Containers reach each other and the host over the bridge, nothing beyond it (no NAT/route).
#
# Layout under $PYSERF_LAB_DIR (default /var/lib/pyserf-lab):
#   base/            read-only lower layer shared by every container
#   id_lab{,.pub}    the ssh key root in every container accepts
#   ssh_config       Host entries for every running container (ssh -F ssh_config lab1)
#   cm/              ssh ControlPath sockets (cm/%C)
#   m/NAME/          per container: upper/ work/ root/ (overlay), nspawn.pid, leader.pid,
#                    address, console.log
#
# Every container is a kernel overlayfs over base, so one base serves any number of
# containers and a boot to "running" takes well under a second. Processes are only ever
# signalled through the PID files written here, after checking they are still our nspawn.
set -euo pipefail

LAB=${PYSERF_LAB_DIR:-/var/lib/pyserf-lab}
BRIDGE=${PYSERF_LAB_BRIDGE:-br-lab}
NET=${PYSERF_LAB_NET:-10.213.0}          # a /24: .1 is the host side, containers from .11
SUITE=${PYSERF_LAB_SUITE:-bookworm}
MIRROR=${PYSERF_LAB_MIRROR:-http://deb.debian.org/debian}
BOOT_TIMEOUT=${PYSERF_LAB_BOOT_TIMEOUT:-60}   # seconds per container, boot + sshd
KEY=$LAB/id_lab
CM=$LAB/cm
# The base is rebuilt when this changes (or when it is missing or incomplete).
BASE_PACKAGES=systemd,systemd-sysv,dbus,python3,python3-venv,python3-apt,iproute2,iptables,openssh-server,procps,ca-certificates
BASE_STAMP="v1 $SUITE $BASE_PACKAGES"

log() { printf '%s nspawn-lab: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

[ "$(id -u)" -eq 0 ] || die "must run as root"

# ---- host dependencies ---------------------------------------------------------------------

cmd_deps() {
  local need=() pair cmd pkg
  for pair in debootstrap:debootstrap systemd-nspawn:systemd-container ssh:openssh-client \
              ssh-keygen:openssh-client ip:iproute2 nsenter:util-linux mountpoint:util-linux \
              ps:procps flock:util-linux; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
  done
  [ -r /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
  [ ${#need[@]} -eq 0 ] && return 0
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  log "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# ---- base rootfs ---------------------------------------------------------------------------

base_ok() { [ -f "$LAB/base/.pyserf-lab-base" ] && [ "$(cat "$LAB/base/.pyserf-lab-base")" = "$BASE_STAMP" ]; }

cmd_base() {
  cmd_deps
  mkdir -p "$LAB" "$CM"
  chmod 700 "$CM"
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C pyserf-lab -f "$KEY"
  # one builder at a time; the lock fd is closed again before any container starts
  exec 9>"$LAB/.base.lock"
  flock -w 900 9 || die "timed out waiting for another base build"
  build_base
  # a regenerated lab key (id_lab deleted by hand) goes into the base as well
  if ! cmp -s "$KEY.pub" "$LAB/base/root/.ssh/authorized_keys"; then
    [ -z "$(ls -A "$LAB/m" 2>/dev/null)" ] || die "lab key changed while containers run; run: $0 down"
    install -m 600 "$KEY.pub" "$LAB/base/root/.ssh/authorized_keys"
  fi
  exec 9>&-
}

build_base() {
  if base_ok; then return 0; fi
  if [ -n "$(ls -A "$LAB/m" 2>/dev/null)" ]; then
    die "base needs a rebuild but containers use it; run: $0 down"
  fi
  local t0; t0=$(now_ms)
  rm -rf "$LAB/base" "$LAB/base.new"
  mkdir -p "$LAB/debs"
  log "debootstrap $SUITE (minbase + $BASE_PACKAGES) from $MIRROR"
  if ! debootstrap --variant=minbase --cache-dir="$LAB/debs" --include="$BASE_PACKAGES" \
        "$SUITE" "$LAB/base.new" "$MIRROR" >"$LAB/debootstrap.log" 2>&1; then
    tail -n 30 "$LAB/debootstrap.log" >&2
    rm -rf "$LAB/base.new"
    die "debootstrap failed (log: $LAB/debootstrap.log)"
  fi
  local b=$LAB/base.new
  chroot "$b" apt-get clean
  # root logs in with the lab key only
  install -d -m 700 "$b/root/.ssh"
  install -m 600 "$KEY.pub" "$b/root/.ssh/authorized_keys"
  # host keys are made per container at start, so no two containers share one
  rm -f "$b"/etc/ssh/ssh_host_*
  # static address via networkd (the .network file is written per container)
  mkdir -p "$b/etc/systemd/system/multi-user.target.wants" "$b/etc/systemd/network"
  ln -sf /lib/systemd/system/systemd-networkd.service \
    "$b/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
  # each boot takes its machine id from nspawn --uuid; debootstrap leaves a real file in
  # /var/lib/dbus/machine-id that systemd would fall back to, giving every clone one id
  : >"$b/etc/machine-id"
  ln -sfn /etc/machine-id "$b/var/lib/dbus/machine-id"
  # nothing to do on a console nobody reads
  ln -sf /dev/null "$b/etc/systemd/system/getty@tty1.service"
  ln -sf /dev/null "$b/etc/systemd/system/console-getty.service"
  : >"$b/etc/resolv.conf"
  echo "$BASE_STAMP" >"$b/.pyserf-lab-base"
  mv "$b" "$LAB/base"
  log "base built in $(( ($(now_ms) - t0) / 1000 )) s ($(du -sh "$LAB/base" | cut -f1))"
}

# ---- bridge --------------------------------------------------------------------------------

ensure_bridge() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    : >"$LAB/bridge.ours"            # only a bridge we made is deleted again
    ip addr add "$NET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
  fi
  # With br_netfilter on, bridged traffic crosses the host FORWARD chain; if that drops by
  # default (Docker does that), let lab traffic through. Removed again with the bridge.
  if [ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null)" = 1 ] \
      && command -v iptables >/dev/null 2>&1 \
      && ! iptables -C FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment pyserf-lab -j ACCEPT 2>/dev/null; then
    iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment pyserf-lab -j ACCEPT 2>/dev/null || true
  fi
}

drop_bridge() {
  if command -v iptables >/dev/null 2>&1; then
    while iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment pyserf-lab -j ACCEPT 2>/dev/null; do :; done
  fi
  if [ -f "$LAB/bridge.ours" ]; then
    if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; fi
    rm -f "$LAB/bridge.ours"
  fi
  return 0
}

# ---- containers ----------------------------------------------------------------------------

# our_nspawn DIR: print the nspawn PID recorded in DIR if that process is still our nspawn
our_nspawn() {
  local dir=$1 pid
  [ -f "$dir/nspawn.pid" ] || return 1
  pid=$(cat "$dir/nspawn.pid")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "systemd-nspawn .*-D $dir/root " || return 1
  echo "$pid"
}

proc_start() {  # start time of a process (clock ticks since boot): PID + this = identity
  sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20
}

# our_leader DIR: print the container's PID 1 recorded in DIR if it is still that process
our_leader() {
  local pid start
  [ -f "$1/leader.pid" ] || return 1
  read -r pid start <"$1/leader.pid" || return 1
  [ -n "$pid" ] && [ -n "$start" ] && [ "$(proc_start "$pid")" = "$start" ] || return 1
  echo "$pid"
}

leader_of() {  # the container's PID 1 = the only child of nspawn
  ps --ppid "$1" -o pid= 2>/dev/null | head -1 | tr -d ' '
}

tcp_open() {  # host port: is something accepting connections?
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

write_ssh_config() {
  local dir name
  {
    echo "# written by nspawn-lab.sh; use: ssh -F $LAB/ssh_config NAME"
    for dir in "$LAB"/m/*; do
      [ -f "$dir/address" ] || continue
      name=$(basename "$dir")
      printf 'Host %s\n  HostName %s\n' "$name" "$(cat "$dir/address")"
    done
    cat <<EOF
Host *
  User root
  IdentityFile $KEY
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  ControlMaster auto
  ControlPath $CM/%C
  ControlPersist 60
  ConnectTimeout 10
EOF
  } >"$LAB/ssh_config.new"
  mv "$LAB/ssh_config.new" "$LAB/ssh_config"
}

close_master() {  # ask a persisted ssh master for ADDR to exit (ControlPath $CM/%C)
  local addr=$1
  ssh -o ControlPath="$CM/%C" -o LogLevel=QUIET -O exit "root@$addr" >/dev/null 2>&1 || true
}

valid_name() {  # container names double as directory names under $LAB/m
  [[ $1 =~ ^[a-zA-Z0-9][a-zA-Z0-9-]{0,30}$ ]] || die "bad container name: $1"
}

cmd_start() {
  local name=${1:?usage: start NAME IP} addr=${2:?usage: start NAME IP}
  local dir=$LAB/m/$name np leader state t0 deadline
  valid_name "$name"
  [[ $addr =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ && $addr == "$NET".* && $addr != "$NET.1" ]] \
    || die "bad address: $addr (use $NET.2-254)"
  base_ok || die "no base rootfs; run: $0 base"
  if np=$(our_nspawn "$dir"); then
    [ "$(cat "$dir/address")" = "$addr" ] || die "$name already runs with address $(cat "$dir/address")"
    log "$name already up (nspawn $np)"
    return 0
  fi
  # a stale directory (crash, kill): start from a clean upper layer
  cleanup_dir "$dir"
  local other
  for other in "$LAB"/m/*; do
    [ -f "$other/address" ] && [ "$(cat "$other/address")" = "$addr" ] \
      && die "address $addr is used by $(basename "$other")"
  done
  ensure_bridge
  mkdir -p "$dir/upper" "$dir/work" "$dir/root"
  echo "$addr" >"$dir/address"
  mount -t overlay overlay -o "lowerdir=$LAB/base,upperdir=$dir/upper,workdir=$dir/work" "$dir/root"
  local r=$dir/root
  printf '[Match]\nName=host0\n[Network]\nAddress=%s/24\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n' \
    "$addr" >"$r/etc/systemd/network/10-host0.network"
  echo "$name" >"$r/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$name" >"$r/etc/hosts"
  ssh-keygen -q -t ed25519 -N '' -C "root@$name" -f "$r/etc/ssh/ssh_host_ed25519_key"
  # Lab hosts have no route to a Debian mirror. By default their apt lists count as just
  # updated (as on a host that has just run apt-get update), so a cache_valid_time check does
  # not try a refresh that cannot work; "stale" dates them a day back (an air-gapped host).
  case ${PYSERF_LAB_APT_LISTS:-fresh} in
    fresh) touch "$r/var/lib/apt/lists" ;;
    stale) touch -d '1 day ago' "$r/var/lib/apt/lists" ;;
    *) die "PYSERF_LAB_APT_LISTS must be fresh or stale" ;;
  esac
  t0=$(now_ms)
  # --keep-unit: no "Failed to open system bus" without systemd on the host; --register=no:
  # no machined. setsid: the container outlives the shell that started it.
  setsid nohup systemd-nspawn -q --register=no --keep-unit -D "$dir/root" -M "$name" \
    --uuid="$(cat /proc/sys/kernel/random/uuid)" --network-bridge="$BRIDGE" -b \
    >"$dir/console.log" 2>&1 </dev/null 9>&- &
  np=$!
  echo "$np" >"$dir/nspawn.pid"
  deadline=$(( $(now_ms) + BOOT_TIMEOUT * 1000 ))
  state=
  while :; do
    if ! kill -0 "$np" 2>/dev/null; then
      tail -n 20 "$dir/console.log" >&2
      cmd_stop "$name"
      die "$name: systemd-nspawn exited during boot"
    fi
    leader=$(leader_of "$np" || true)
    if [ -n "$leader" ]; then
      state=$(nsenter -t "$leader" -a systemctl is-system-running 2>/dev/null || true)
      case $state in running|degraded) tcp_open "$addr" 22 && break ;; esac
    fi
    if [ "$(now_ms)" -gt "$deadline" ]; then
      log "$name: not up after ${BOOT_TIMEOUT}s (state=${state:-none}); stopping it"
      cmd_stop "$name"
      exit 1
    fi
    sleep 0.1
  done
  echo "$leader $(proc_start "$leader")" >"$dir/leader.pid"
  write_ssh_config
  log "$name up: $addr nspawn=$np leader=$leader state=$state in $(( $(now_ms) - t0 )) ms"
}

cleanup_dir() {  # unmount and remove a container directory whose nspawn is gone
  local dir=$1 leader
  [ -d "$dir" ] || return 0
  # nspawn gone but the container's PID 1 still alive (nspawn was SIGKILLed): killing a PID
  # namespace's init kills every process in it
  if leader=$(our_leader "$dir"); then
    log "$(basename "$dir"): nspawn gone, killing the container's init $leader"
    kill -KILL "$leader" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$leader" 2>/dev/null || break; sleep 0.1; done
  fi
  if mountpoint -q "$dir/root"; then
    umount "$dir/root" 2>/dev/null || umount -l "$dir/root"
  fi
  rm -rf "$dir"
}

halt() {  # ask our nspawn in DIR to halt the container (SIGTERM => orderly systemd shutdown)
  local np
  if np=$(our_nspawn "$1"); then kill -TERM "$np" 2>/dev/null || true; fi
  return 0
}

cmd_stop() {  # stop NAME...: halt them all at once, then reap each one
  [ $# -ge 1 ] || die "usage: stop NAME..."
  local name dir np t0 deadline
  t0=$(now_ms)
  for name in "$@"; do
    valid_name "$name"
    dir=$LAB/m/$name
    [ -d "$dir" ] || continue
    [ -f "$dir/address" ] && close_master "$(cat "$dir/address")"
    halt "$dir"
  done
  deadline=$(( t0 + 20000 ))
  for name in "$@"; do
    dir=$LAB/m/$name
    [ -d "$dir" ] || continue
    if np=$(our_nspawn "$dir"); then
      while kill -0 "$np" 2>/dev/null && [ "$(now_ms)" -lt "$deadline" ]; do sleep 0.1; done
      if kill -0 "$np" 2>/dev/null; then
        log "$name: no orderly halt in 20 s; killing nspawn $np"
        kill -KILL "$np" 2>/dev/null || true
        sleep 0.5
      fi
    fi
    cleanup_dir "$dir"
    log "$name down ($(( $(now_ms) - t0 )) ms)"
  done
  write_ssh_config
  # the last container out removes the bridge
  if [ -z "$(ls -A "$LAB/m" 2>/dev/null)" ]; then
    drop_bridge
    rm -f "$LAB/ssh_config"
  fi
  return 0
}

cmd_up() {
  local n=${1:-3} i
  if ! [[ $n =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt 200 ]; then die "up: N must be 1..200"; fi
  cmd_base
  for i in $(seq 1 "$n"); do cmd_start "lab$i" "$NET.$((10 + i))"; done
}

cmd_down() {
  local names=() dir
  for dir in "$LAB"/m/*; do [ -d "$dir" ] && names+=("$(basename "$dir")"); done
  [ ${#names[@]} -gt 0 ] && cmd_stop "${names[@]}"
  drop_bridge
  rm -f "$LAB/ssh_config"
  return 0
}

cmd_status() {
  local dir np leader state
  for dir in "$LAB"/m/*; do
    [ -d "$dir" ] || continue
    if np=$(our_nspawn "$dir"); then
      leader=$(leader_of "$np" || true)
      state=$(nsenter -t "$leader" -a systemctl is-system-running 2>/dev/null || true)
      printf '%-12s %-15s nspawn=%-7s leader=%-7s %s\n' "$(basename "$dir")" \
        "$(cat "$dir/address" 2>/dev/null)" "$np" "$leader" "${state:-unknown}"
    else
      printf '%-12s %-15s stale (nspawn gone; "stop %s" cleans up)\n' "$(basename "$dir")" \
        "$(cat "$dir/address" 2>/dev/null)" "$(basename "$dir")"
    fi
  done
  ip -br addr show "$BRIDGE" 2>/dev/null || echo "bridge $BRIDGE: absent"
}

cmd_inventory() {
  local out=${1:?usage: inventory FILE} dir tmp
  tmp=$(mktemp "$out.XXXXXX")
  {
    echo "# written by nspawn-lab.sh inventory; the running lab containers"
    echo "[pyserf]"
    for dir in "$LAB"/m/*; do
      our_nspawn "$dir" >/dev/null || continue
      echo "$(basename "$dir") ansible_host=$(cat "$dir/address")"
    done
    echo
    echo "[pyserf:vars]"
    echo "ansible_user=root"
    echo "ansible_ssh_private_key_file=$KEY"
    echo "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o ControlMaster=auto -o ControlPersist=60s -o ControlPath=$CM/%C'"
    echo "ansible_python_interpreter=/usr/bin/python3"
  } >"$tmp"
  chmod 644 "$tmp"
  mv "$tmp" "$out"
}

cmd_ssh() {
  local name=${1:?usage: ssh NAME [CMD...]}
  shift
  [ -f "$LAB/ssh_config" ] || die "no containers"
  exec ssh -F "$LAB/ssh_config" "$name" "$@"
}

cmd_purge() {
  cmd_down
  rm -rf "$LAB/base" "$LAB/base.new" "$LAB/debs" "$LAB/m" "$KEY" "$KEY.pub" "$LAB/.base.lock"
}

case ${1:-} in
  deps) cmd_deps ;;
  base) cmd_base ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  inventory) shift; cmd_inventory "$@" ;;
  ssh) shift; cmd_ssh "$@" ;;
  purge) cmd_purge ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
