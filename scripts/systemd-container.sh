#!/usr/bin/env bash
# Real systemd 252 as PID 1 of a systemd-nspawn container, for integration tests.
# Works on Debian 12 hosts whose PID 1 is not systemd (cgroup v1 hybrid or v2), as root.
# First sd_setup: ~45 s (debootstrap); later boots ~0.5 s, clean shutdown ~2 s.
# Usage: source this file, then: sd_setup; sd_boot; sd systemctl ...; sd_shutdown (also on EXIT trap).
set -euo pipefail

SD_ROOTFS=${SD_ROOTFS:-/var/tmp/sdci-rootfs}        # cached between runs if the dir survives
SD_MACHINE=${SD_MACHINE:-sdci}
SD_BIND=${SD_BIND:-$PWD/target/debug}               # host-built binaries, visible read-only at /opt/under-test
# the Debian mirror this machine's apt already uses (first URIs:/deb line of its sources)
sd_apt_mirror() {
  { grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
    grep -h '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}'; } |
    grep -v security | head -1 || true
}
SD_MIRROR=${SD_MIRROR:-$(sd_apt_mirror)}
SD_LOG=${SD_LOG:-/tmp/$SD_MACHINE-console.log}
SD_NSPAWN_PID=; SD_LEADER=

sd_setup() {   # ~10 s apt + ~45 s debootstrap (first time only)
  export DEBIAN_FRONTEND=noninteractive
  command -v systemd-nspawn >/dev/null && command -v debootstrap >/dev/null || {
    apt-get update -q && apt-get install -y -q systemd-container debootstrap; }
  if [ ! -x "$SD_ROOTFS/lib/systemd/systemd" ]; then
    rm -rf "$SD_ROOTFS.tmp"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps \
      bookworm "$SD_ROOTFS.tmp" "$SD_MIRROR"
    mv "$SD_ROOTFS.tmp" "$SD_ROOTFS"
  fi
}

sd_boot() {    # ~0.4 s to "running"
  mkdir -p "$SD_BIND"
  # --register=no --keep-unit: host has no systemd/machined. --volatile=overlay: rootfs stays pristine (tmpfs upper).
  systemd-nspawn -q --register=no --keep-unit -D "$SD_ROOTFS" -M "$SD_MACHINE" -b --console=passive \
      --volatile=overlay --bind-ro="$SD_BIND":/opt/under-test >"$SD_LOG" 2>&1 &
  SD_NSPAWN_PID=$!
  local i st
  for i in $(seq 200); do       # wait for the container's PID 1 (a child of nspawn whose comm is "systemd")
    for SD_LEADER in $(pgrep -P "$SD_NSPAWN_PID" || true); do
      [ "$(cat /proc/$SD_LEADER/comm 2>/dev/null)" = systemd ] && break 2
    done; SD_LEADER=; sleep 0.05
  done
  [ -n "$SD_LEADER" ] || { echo "nspawn failed:"; cat "$SD_LOG"; return 1; }
  for i in $(seq 600); do       # up to 60 s
    st=$(nsenter -t "$SD_LEADER" -a systemctl is-system-running 2>/dev/null || true)
    case "$st" in running) return 0;; degraded) sd systemctl --failed --no-pager; return 0;; esac
    sleep 0.1
  done
  echo "container did not finish booting (state=$st)"; cat "$SD_LOG"; return 1
}

sd() { nsenter -t "$SD_LEADER" -a "$@"; }           # run a command inside the container (its PID/mount/net/... ns)

sd_shutdown() {   # ~2 s clean poweroff; SIGKILL fallback
  [ -n "${SD_NSPAWN_PID:-}" ] || return 0
  kill -TERM "$SD_NSPAWN_PID" 2>/dev/null || true     # nspawn turns this into SIGRTMIN+3 = poweroff
  local i; for i in $(seq 150); do kill -0 "$SD_NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$SD_NSPAWN_PID" 2>/dev/null && kill -KILL "$SD_NSPAWN_PID" 2>/dev/null || true
  wait "$SD_NSPAWN_PID" 2>/dev/null || true
  SD_NSPAWN_PID=; SD_LEADER=
}
# Full cleanup (end of CI): sd_shutdown; rm -rf "$SD_ROOTFS" /run/systemd/nspawn

# ---------------------------------------------------------------- example test (run: bash systemd-container.sh demo)
if [ "${1:-}" = demo ]; then
  trap sd_shutdown EXIT
  SD_BIND=/tmp/sdci-demo-bin
  mkdir -p "$SD_BIND"
  cat >"$SD_BIND/svc.sh" <<'EOS'
#!/bin/bash
echo "env WATCHDOG_USEC=$WATCHDOG_USEC NOTIFY_SOCKET=$NOTIFY_SOCKET"
printf 'MESSAGE=demo spawned child\nDEMO_EVENT=spawn\nDEMO_CHILD=w1\nPRIORITY=5\n' | logger --journald
sleep 0.3; systemd-notify --ready --status=up
n=0; while :; do n=$((n+1)); [ "${STOP_PET:-}" ] && [ $n -gt 2 ] && sleep 1000; systemd-notify WATCHDOG=1; sleep 0.5; done
EOS
  chmod +x "$SD_BIND/svc.sh"
  t0=$(date +%s.%N); sd_setup; t1=$(date +%s.%N); sd_boot; t2=$(date +%s.%N)
  echo "setup $(echo "$t1-$t0"|bc)s boot $(echo "$t2-$t1"|bc)s"
  sd systemd-run -q --unit=demo -p Type=notify -p NotifyAccess=all -p WatchdogSec=2 \
       -p Restart=on-failure -p RestartSec=0.5 -p Environment=STOP_PET=1 /opt/under-test/svc.sh
  [ "$(sd systemctl show demo -p StatusText --value)" = up ] && echo "PASS notify READY/STATUS"
  sleep 5
  nr=$(sd systemctl show demo -p NRestarts --value); echo "NRestarts=$nr"; [ "$nr" -ge 1 ] && echo "PASS watchdog->restart"
  sd journalctl -o json --no-pager DEMO_EVENT=spawn | python3 -c '
import json,sys; rows=[json.loads(l) for l in sys.stdin]; print(len(rows),"json rows; first:",{k:rows[0].get(k) for k in ("MESSAGE","DEMO_CHILD","PRIORITY")})'
  j=$(sd journalctl -u demo -o json --no-pager)   # capture first: 'cmd | grep -q' + pipefail = flaky SIGPIPE
  grep -q '"UNIT_RESULT":"watchdog"' <<<"$j" && echo "PASS journal UNIT_RESULT=watchdog"
  sd journalctl -u demo -o cat --no-pager | head -12
  sd_shutdown; echo "shutdown done; leftover mounts: $(mount | grep -c nspawn || true)"
fi
