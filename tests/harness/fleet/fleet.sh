#!/usr/bin/env bash
# A fleet of Raspberry-Pi-like hosts on one machine, for Molecule, end-to-end tests and the demo.
# Each host is a Debian bookworm root filesystem booted with systemd as PID 1 under
# systemd-nspawn (no Docker, no VM), sharing the machine's network namespace; its sshd
# listens on its own loopback address 127.0.1.N. Nothing here ever uses a non-loopback address.
#
#   fleet.sh deps [--arch amd64|arm64]     apt-get install what is missing (no-op when complete)
#   fleet.sh rootfs [--arch amd64|arm64]   build the cached base root filesystem (no-op when current)
#   fleet.sh up N [--arch A] [--prefix P] [--base B]
#                                          boot <P>1..<P>N at 127.0.1.(B+i) and wait until each
#                                          answers SSH and systemd says running/degraded.
#                                          Default prefix pi; default base 0 (amd64), 100 (arm64).
#                                          Idempotent: a host already up is left alone.
#   fleet.sh down [--purge] [HOST...]      stop hosts (default: all in the state dir), by PID,
#                                          with a deadline; --purge also deletes their root fs
#   fleet.sh stop HOST                     stop one whole host (keeps its disk)
#   fleet.sh start HOST                    boot a stopped host again (same disk, same address)
#   fleet.sh status                        one line per host; exit 0
#   fleet.sh ssh HOST [CMD...]             ssh to a host as root (strict host key checking); like
#                                          ssh, CMD is joined into one string for the remote shell
#   fleet.sh reboot HOST                   `systemctl reboot` inside HOST and wait until it is back
#   fleet.sh wait HOST                     wait until a running HOST answers SSH and systemd is up
#
# Every host has, as on Raspberry Pi OS, a user `pi` with passwordless sudo, reached with the
# fleet's key: hosts.ini and ssh_config connect as pi (Ansible becomes root where a task needs
# it); root over SSH stays for the harness itself (`fleet.sh ssh`). The user is added to the
# host's own disk each time it starts, never to the cached root filesystem.
#
# Environment:
#   HWPC_FLEET_DIR      state dir (default <repo>/build/fleet)
#   HWPC_FLEET_CACHE    rootfs cache (default /var/cache/hw-picollector/fleet), kept across clones
#   HWPC_FLEET_MIRROR   Debian mirror for mmdebstrap and the hosts (default http://deb.debian.org/debian)
#   HWPC_FLEET_TIMEOUT  boot deadline in seconds (default 120 amd64, 600 arm64)
#   HWPC_FLEET_DISK     overlay (default: an overlayfs over the cached rootfs, instant) or copy
#                       (cp -a of the cached rootfs); used when a host's disk is created
#
# Cache layout (<cache> = HWPC_FLEET_CACHE):
#   rootfs-<arch>            symlink to the current build
#   rootfs-<arch>-<id>/      a complete build (id = hash of its stamp: package list, revision,
#                            CA bundle, pip index); never modified; /etc/hwpc-fleet/stamp inside
#   rootfs-<arch>.tmp.<pid>  a build in progress (renamed when complete, removed if interrupted)
#
# State layout (<state> = HWPC_FLEET_DIR):
#   id_ed25519{,.pub}   the fleet's SSH key (generated once)
#   known_hosts         every host's ed25519 host key, keyed by IP and name (strict checking)
#   hosts.ini           Ansible inventory (groups: fleet, <prefix>, fleet_<arch>), as user pi
#   ssh_config          `ssh -F <state>/ssh_config pi1` works (as pi; `sudo` for root)
#   hosts/<host>/       the host's root filesystem (overlay mount point while up, or a full copy)
#   disks/<host>/       upper and work dirs of the host's overlay: everything the host changed
#   <host>.conf         HOST= ARCH= IP= DISK= LOWER= of the host
#   <host>.host_key.pub the host's ed25519 host key
#   <host>.pid          PID of the host's current systemd-nspawn (rewritten after a reboot)
#   <host>.supervisor.pid  PID of the loop that restarts nspawn when the host reboots (exit 133)
#   <host>.log          console log (all boots since the last `up`/`start`)
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$HARNESS_DIR/../../.." && pwd)"
SELF="$HARNESS_DIR/$(basename "${BASH_SOURCE[0]}")"
STATE="${HWPC_FLEET_DIR:-$REPO_DIR/build/fleet}"
CACHE="${HWPC_FLEET_CACHE:-/var/cache/hw-picollector/fleet}"
MIRROR="${HWPC_FLEET_MIRROR:-http://deb.debian.org/debian}"
STATE="$(realpath -m "$STATE")"
CACHE="$(realpath -m "$CACHE")"
SUITE=bookworm
# Bump when the customisation below changes, so cached root filesystems are rebuilt.
ROOTFS_REVISION=3
ROOTFS_PACKAGES=systemd,systemd-sysv,dbus,libpam-systemd,python3,python3-venv,python3-apt,openssh-server,sudo,ca-certificates,iproute2,procps,curl,less
HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
STOP_WAIT=30
# The SSH user of Raspberry Pi OS (what Ansible connects as); see ensure_fleet_user.
FLEET_USER=pi

say() { printf 'fleet: %s\n' "$*"; }
warn() { printf 'fleet: WARNING: %s\n' "$*" >&2; }
die() { printf 'fleet: ERROR: %s\n' "$*" >&2; exit 1; }
now() { printf '%s' "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap, systemd-nspawn)"

check_arch() {
  case "$1" in
    amd64|arm64) ;;
    *) die "unsupported --arch '$1' (amd64 or arm64)" ;;
  esac
}

native_arch() { dpkg --print-architecture; }

# ---------------------------------------------------------------- deps
deps_for() {
  local pkgs="mmdebstrap systemd-container openssh-client util-linux"
  if [ "$1" != "$(native_arch)" ]; then pkgs="$pkgs qemu-user-static binfmt-support arch-test"; fi
  printf '%s\n' "$pkgs"
}

ensure_deps() { # arch
  local missing=() p
  for p in $(deps_for "$1"); do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if [ "$1" != "$(native_arch)" ]; then ensure_binfmt "$1"; fi
}

qemu_name() { case "$1" in arm64) echo qemu-aarch64 ;; *) die "no qemu mapping for $1" ;; esac; }

ensure_binfmt() { # arch
  local q entry
  q="$(qemu_name "$1")"
  entry=/proc/sys/fs/binfmt_misc/$q
  if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc"
  fi
  if [ ! -e "$entry" ]; then
    update-binfmts --enable "$q" >/dev/null || die "update-binfmts --enable $q failed"
  fi
  grep -qx enabled "$entry" || die "$entry is not enabled"
  # F (fix binary): the interpreter is opened now, so it works inside any chroot/container.
  grep -q '^flags:.*F' "$entry" || die "$entry lacks the F flag; qemu would not be found inside the container"
}

cmd_deps() {
  local arch
  arch="$(native_arch)"
  while [ $# -gt 0 ]; do
    case "$1" in
      --arch) arch="${2:?}"; shift 2 ;;
      *) die "deps: unknown argument $1" ;;
    esac
  done
  check_arch "$arch"
  ensure_deps "$arch"
  say "deps complete for $arch: $(deps_for "$arch" | tr '\n' ' ')"
}

# ---------------------------------------------------------------- rootfs
rootfs_dir() { printf '%s/rootfs-%s' "$CACHE" "$1"; }

ca_sum() { if [ -f "$HOST_CA_BUNDLE" ]; then sha256sum "$HOST_CA_BUNDLE" | cut -d' ' -f1; else echo none; fi; }

# pip settings of this machine that a host must share to reach the same package index.
host_pip_setting() { # key
  local v=""
  if command -v pip3 >/dev/null 2>&1; then v="$(pip3 config get "global.$1" 2>/dev/null || true)"; fi
  if [ -z "$v" ]; then
    case "$1" in
      index-url) v="${PIP_INDEX_URL:-}" ;;
      extra-index-url) v="${PIP_EXTRA_INDEX_URL:-}" ;;
      trusted-host) v="${PIP_TRUSTED_HOST:-}" ;;
    esac
  fi
  printf '%s' "$v"
}

rootfs_stamp() { # arch
  printf 'revision=%s\nsuite=%s\narch=%s\nmirror=%s\npackages=%s\nca=%s\nindex-url=%s\nextra-index-url=%s\n' \
    "$ROOTFS_REVISION" "$SUITE" "$1" "$MIRROR" "$ROOTFS_PACKAGES" "$(ca_sum)" \
    "$(host_pip_setting index-url)" "$(host_pip_setting extra-index-url)"
}

rootfs_current() { # arch
  local stamp
  stamp="$(rootfs_dir "$1")/etc/hwpc-fleet/stamp"
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(rootfs_stamp "$1")" ]
}

# Certificates as one base64 line each, for comparing bundles.
pem_lines() { awk '/-----BEGIN CERTIFICATE-----/ { c = ""; on = 1; next }
                   /-----END CERTIFICATE-----/ { if (on) print c; on = 0; next }
                   on { c = c $0 }' "$1"; }

mask_units() { # root unit...
  local root="$1" u
  shift
  for u in "$@"; do ln -sfn /dev/null "$root/etc/systemd/system/$u"; done
}

customise_rootfs() { # dir arch
  local r="$1" arch="$2"
  install -d "$r/etc/hwpc-fleet"

  # apt inside a host: same mirror, plus updates and security, like Raspberry Pi OS.
  cat >"$r/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb ${MIRROR%/debian}/debian-security $SUITE-security main
EOF
  # Mirrors served from a snapshot have expired Release files; this machine accepts them, so must a host.
  if apt-config dump 2>/dev/null | grep -q '^Acquire::Check-Valid-Until "false"'; then
    printf 'Acquire::Check-Valid-Until "false";\n' >"$r/etc/apt/apt.conf.d/99hwpc-fleet"
  fi
  printf 'LANG=C.UTF-8\n' >"$r/etc/default/locale"

  # Trust the same CAs as this machine: certificates missing from Debian's bundle become local
  # CAs (so they survive ca-certificates upgrades), and pip is pointed at the system bundle.
  if [ -f "$HOST_CA_BUNDLE" ]; then
    local extra n=0 line
    extra="$(mktemp)"
    sort -u <(pem_lines "$HOST_CA_BUNDLE") >"$extra.host"
    sort -u <(pem_lines "$r/etc/ssl/certs/ca-certificates.crt") >"$extra.guest"
    comm -23 "$extra.host" "$extra.guest" >"$extra"
    install -d "$r/usr/local/share/ca-certificates"
    while IFS= read -r line; do
      n=$((n + 1))
      { echo '-----BEGIN CERTIFICATE-----'; printf '%s\n' "$line" | fold -w 64; echo '-----END CERTIFICATE-----'; } \
        >"$r/usr/local/share/ca-certificates/hwpc-fleet-$n.crt"
    done <"$extra"
    rm -f "$extra" "$extra.host" "$extra.guest"
    # Under emulation update-ca-certificates takes minutes: the bundle is copied below instead.
    if [ "$n" -gt 0 ] && [ "$arch" = "$(native_arch)" ]; then
      chroot "$r" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed in $r"
    fi
    # Every certificate this machine trusts must now be in the host's bundle.
    if [ -n "$(comm -23 <(pem_lines "$HOST_CA_BUNDLE" | sort -u) <(pem_lines "$r/etc/ssl/certs/ca-certificates.crt" | sort -u))" ]; then
      cp "$HOST_CA_BUNDLE" "$r/etc/ssl/certs/ca-certificates.crt"
    fi
    say "rootfs: added $n CA certificate(s) of this machine to the host trust store"
  fi
  local idx extra_idx trusted
  idx="$(host_pip_setting index-url)"
  extra_idx="$(host_pip_setting extra-index-url)"
  trusted="$(host_pip_setting trusted-host)"
  {
    echo '[global]'
    echo 'cert = /etc/ssl/certs/ca-certificates.crt'
    echo 'disable-pip-version-check = true'
    echo 'timeout = 180'
    [ -z "$idx" ] || echo "index-url = $idx"
    [ -z "$extra_idx" ] || echo "extra-index-url = $extra_idx"
    [ -z "$trusted" ] || echo "trusted-host = $trusted"
  } >"$r/etc/pip.conf"

  # Units that cannot work or only slow a container down. apt-daily* would also take the dpkg
  # lock in the middle of a test run; getty has no terminal to serve.
  mask_units "$r" apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
    console-getty.service getty@tty1.service getty.target serial-getty@.service \
    systemd-networkd-wait-online.service e2scrub_all.timer e2scrub_reap.service fstrim.timer \
    man-db.timer dpkg-db-backup.timer

  # Per-host identity is made when a host is created: no shared host keys or machine-id.
  rm -f "$r"/etc/ssh/ssh_host_*
  : >"$r/etc/machine-id"
  rm -f "$r/var/lib/dbus/machine-id"
  rm -f "$r"/var/cache/apt/archives/*.deb
  rm -rf "$r/var/log/journal"
}

rootfs_id() { rootfs_stamp "$1" | sha256sum | cut -c1-12; }

# Point rootfs-<arch> at a complete versioned build (atomic: a symlink renamed over the old one).
link_rootfs() { # arch dir
  local link
  link="$(rootfs_dir "$1")"
  if [ -d "$link" ] && [ ! -L "$link" ]; then mv "$link" "$link-old.$$"; fi # layout of an older harness
  ln -sfn "$(basename "$2")" "$link.new.$$"
  mv -T "$link.new.$$" "$link"
}

# Remove builds that are neither current nor the lower layer of a mounted host (a stopped
# overlay host whose build is gone is recreated by its next `up`).
gc_rootfs() { # arch
  local link cur d
  link="$(rootfs_dir "$1")"
  cur="$(readlink -f "$link")"
  for d in "$link"-*; do
    [ -d "$d" ] && [ ! -L "$d" ] || continue
    [ "$(readlink -f "$d")" != "$cur" ] || continue
    if grep -qF -- "$d" /proc/self/mountinfo; then continue; fi
    say "rootfs: removing old build $d"
    rm -rf --one-file-system "$d"
  done
}

# Remove a directory tree that an interrupted build may have left mounts in (/proc, /sys of the target).
remove_tree() { # dir
  local m
  for m in $(findmnt -rn -o TARGET | grep -F -- "$1/" | sort -r); do umount -l "$m" || true; done
  rm -rf --one-file-system "$1"
}

build_rootfs() { # arch
  local arch="$1" link dest tmp t0
  link="$(rootfs_dir "$arch")"
  dest="$link-$(rootfs_id "$arch")"
  # Leftovers of an interrupted build are never used; remove them.
  for tmp in "$link".tmp.*; do [ ! -e "$tmp" ] || remove_tree "$tmp"; done
  tmp="$link.tmp.$$"
  trap 'remove_tree "'"$tmp"'"' EXIT
  t0="$(now)"
  say "rootfs: mmdebstrap $SUITE $arch into $tmp (packages: $ROOTFS_PACKAGES)"
  # mmdebstrap, not debootstrap: apt fetches in parallel and dpkg configures every package in
  # one run, which is what costs under qemu-user emulation (arm64: 6.9 min with debootstrap).
  # Documentation, manual pages and translations are never unpacked (a host has no reader).
  local opts=(--variant=minbase --arch="$arch" --include="$ROOTFS_PACKAGES" --mode=root
              --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
              --dpkgopt='path-include=/usr/share/doc/*/copyright'
              --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*')
  # Mirrors served from a snapshot have expired Release files; accept them where this machine does.
  if apt-config dump 2>/dev/null | grep -q '^Acquire::Check-Valid-Until "false"'; then
    opts+=(--aptopt='Acquire::Check-Valid-Until "false"')
  fi
  if ! mmdebstrap "${opts[@]}" "$SUITE" "$tmp" "$MIRROR" >"$CACHE/mmdebstrap-$arch.log" 2>&1; then
    tail -n 30 "$CACHE/mmdebstrap-$arch.log" >&2
    die "mmdebstrap failed (log: $CACHE/mmdebstrap-$arch.log)"
  fi
  say "rootfs: mmdebstrap done in $(since "$t0") s"
  customise_rootfs "$tmp" "$arch"
  rootfs_stamp "$arch" >"$tmp/etc/hwpc-fleet/stamp"
  sync -f "$tmp/etc/hwpc-fleet/stamp"
  mv -T "$tmp" "$dest"
  trap - EXIT
  link_rootfs "$arch" "$dest"
  say "rootfs: built $dest in $(since "$t0") s ($(du -sh "$dest" | cut -f1))"
}

ensure_rootfs() { # arch
  local arch="$1" link dest
  link="$(rootfs_dir "$arch")"
  dest="$link-$(rootfs_id "$arch")"
  install -d "$CACHE"
  exec 8>"$CACHE/.lock-$arch"
  flock 8
  if rootfs_current "$arch"; then
    say "rootfs: $link -> $(basename "$(readlink -f "$link")") is current"
  elif [ -f "$dest/etc/hwpc-fleet/stamp" ] && [ "$(cat "$dest/etc/hwpc-fleet/stamp")" = "$(rootfs_stamp "$arch")" ]; then
    link_rootfs "$arch" "$dest"
    say "rootfs: $link -> $(basename "$dest") (an earlier complete build)"
  else
    [ ! -e "$link" ] || say "rootfs: $link is stale (stamp differs); rebuilding"
    build_rootfs "$arch"
  fi
  gc_rootfs "$arch"
  exec 8>&-
}

cmd_rootfs() {
  local arch
  arch="$(native_arch)"
  while [ $# -gt 0 ]; do
    case "$1" in
      --arch) arch="${2:?}"; shift 2 ;;
      *) die "rootfs: unknown argument $1" ;;
    esac
  done
  check_arch "$arch"
  ensure_deps "$arch"
  ensure_rootfs "$arch"
}

# ---------------------------------------------------------------- hosts
host_dir() { printf '%s/hosts/%s' "$STATE" "$1"; }
host_conf() { printf '%s/%s.conf' "$STATE" "$1"; }
pid_file() { printf '%s/%s.pid' "$STATE" "$1"; }
sup_file() { printf '%s/%s.supervisor.pid' "$STATE" "$1"; }
log_file() { printf '%s/%s.log' "$STATE" "$1"; }
stop_flag() { printf '%s/%s.stopping' "$STATE" "$1"; }

load_conf() { # host -> HOST ARCH IP
  local f
  f="$(host_conf "$1")"
  [ -f "$f" ] || die "unknown host '$1' (no $f)"
  HOST="" ARCH="" IP="" DISK="" LOWER=""
  # shellcheck disable=SC1090
  . "$f"
  if [ "$HOST" != "$1" ] || [ -z "$ARCH" ] || [ -z "$IP" ] || [ -z "$DISK" ]; then die "corrupt $f"; fi
}

known_hosts_list() {
  local f
  for f in "$STATE"/*.conf; do
    [ -e "$f" ] || continue
    basename "$f" .conf
  done
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
read_pid() { [ -f "$1" ] && cat "$1" || true; }

# The exact command line tells our nspawn from anything else that happens to reuse the PID.
is_our_nspawn() { # pid host
  alive "$1" || return 1
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = systemd-nspawn ] || return 1
  { tr '\0' '\n' <"/proc/$1/cmdline"; } 2>/dev/null | grep -qx -- "--directory=$(host_dir "$2")"
}

host_running() { # host
  local pid
  pid="$(read_pid "$(pid_file "$1")")"
  is_our_nspawn "$pid" "$1" && return 0
  pid="$(read_pid "$(sup_file "$1")")"
  alive "$pid"
}

ssh_opts() {
  printf '%s\n' -i "$STATE/id_ed25519" -o IdentitiesOnly=yes -o BatchMode=yes \
    -o UserKnownHostsFile="$STATE/known_hosts" -o GlobalKnownHostsFile=/dev/null \
    -o StrictHostKeyChecking=yes -o ConnectTimeout=5 -o LogLevel=ERROR
}

ensure_key() {
  install -d -m 700 "$STATE"
  if [ ! -f "$STATE/id_ed25519" ]; then
    ssh-keygen -q -t ed25519 -N '' -C "hwpc-fleet@$(hostname)" -f "$STATE/id_ed25519"
  fi
}

cgroup_name() { # host: unique per state dir, so two clones never share a cgroup
  printf 'hwpc-fleet-%s/%s' "$(printf '%s' "$STATE" | sha256sum | cut -c1-8)" "$1"
}

# Cgroup hierarchies to give each host its own subtree in (this machine has no systemd: without
# this every container would share the root cgroup and their units would collide).
cgroup_roots() {
  if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    echo /sys/fs/cgroup
  else
    local d
    for d in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do
      [ -d "$d" ] && echo "$d"
    done
  fi
}

disk_dir() { printf '%s/disks/%s' "$STATE" "$1"; }
host_key_file() { printf '%s/%s.host_key.pub' "$STATE" "$1"; }

# DISK=overlay: hosts/<host> is an overlay of the cached build LOWER (read-only, shared) and
# disks/<host>/upper (this host's own changes), mounted while the host runs.
# DISK=copy: hosts/<host> is a full copy of the cached build.
mount_host() { # host (conf loaded)
  local dir
  dir="$(host_dir "$1")"
  [ "$DISK" = overlay ] || return 0
  if mountpoint -q "$dir"; then return 0; fi
  [ -d "$LOWER" ] || die "$1: its base build $LOWER is gone; \`up\` recreates the host"
  install -d "$dir"
  mount -t overlay "hwpc-fleet-$1" \
    -o "lowerdir=$LOWER,upperdir=$(disk_dir "$1")/upper,workdir=$(disk_dir "$1")/work" "$dir"
}

umount_host() { # host (conf loaded)
  local dir
  dir="$(host_dir "$1")"
  if [ "${DISK:-}" != overlay ] || ! mountpoint -q "$dir"; then return 0; fi
  umount "$dir" || warn "$1: cannot unmount $dir"
}

remove_host() { # host: its disk, conf and host key
  local h="$1"
  if [ -f "$(host_conf "$h")" ]; then
    load_conf "$h"
    umount_host "$h"
  fi
  if mountpoint -q "$(host_dir "$h")"; then die "$h: $(host_dir "$h") is still mounted"; fi
  rm -rf --one-file-system "$(host_dir "$h")" "$(disk_dir "$h")"
  rm -f "$(host_conf "$h")" "$(host_key_file "$h")"
}

# Whether a host's disk was made from the current build of its arch (only then `up` reuses it).
host_disk_current() { # host arch
  local cur
  cur="$(readlink -f "$(rootfs_dir "$2")")"
  [ -f "$(host_conf "$1")" ] || return 1
  load_conf "$1"
  [ "$ARCH" = "$2" ] && [ "$LOWER" = "$cur" ] || return 1
  case "$DISK" in
    overlay) [ -d "$(disk_dir "$1")/upper" ] ;;
    copy) [ -d "$(host_dir "$1")/etc" ] ;;
    *) return 1 ;;
  esac
}

# Under qemu-user, systemd cannot set up unit credentials (LoadCredential=/SetCredential= fail
# with 243/CREDENTIALS "Failed to set up credentials: Invalid argument"), which fails
# systemd-sysusers, systemd-tmpfiles-setup{,-dev} and others at boot. The cause: systemd builds
# the credential store in a child forked with clone(CLONE_NEWNS) ("(sd-mkdcreds)"); qemu-user
# emulates no namespace flag in clone() and returns EINVAL, and systemd falls back to a store
# without a mount namespace only on a permission or not-supported error. (PrivateUsers= fails
# too: qemu-user is multi-threaded, and the kernel refuses unshare(CLONE_NEWUSER) to a
# multi-threaded process.) Their credentials are optional, so an emulated host drops them; the
# collector role has hwpc_qemu_user_emulation for its own units.
emulation_dropins() { # root
  local root="$1" f u
  for f in "$root"/lib/systemd/system/*.service; do
    grep -qE '^(LoadCredential|SetCredential|ImportCredential)' "$f" || continue
    u="$(basename "$f")"
    install -d "$root/etc/systemd/system/$u.d"
    printf '# hw-picollector fleet harness: qemu-user cannot set up credentials\n[Service]\nLoadCredential=\nSetCredential=\n' \
      >"$root/etc/systemd/system/$u.d/hwpc-fleet-emulation.conf"
  done
}

make_host() { # host arch ip
  local h="$1" arch="$2" ip="$3" dir root t0 lower disk
  dir="$(host_dir "$h")"
  lower="$(readlink -f "$(rootfs_dir "$arch")")"
  if host_disk_current "$h" "$arch"; then
    return 0
  fi
  if [ -f "$(host_conf "$h")" ] || [ -e "$dir" ]; then
    say "$h: disk was made from another rootfs build; recreating"
    remove_host "$h"
  fi
  install -d "$STATE/hosts"
  t0="$(now)"
  disk="${HWPC_FLEET_DISK:-overlay}"
  case "$disk" in overlay|copy) ;; *) die "HWPC_FLEET_DISK must be overlay or copy" ;; esac
  if [ "$disk" = overlay ]; then
    install -d "$(disk_dir "$h")/upper" "$(disk_dir "$h")/work" "$dir"
    DISK=overlay LOWER="$lower"
    if ! mount_host "$h" 2>"$STATE/.mount-error"; then
      warn "$h: overlay mount failed ($(cat "$STATE/.mount-error")); copying the root filesystem instead"
      rm -rf --one-file-system "$(disk_dir "$h")" "$dir"
      disk=copy
    fi
    rm -f "$STATE/.mount-error"
  fi
  if [ "$disk" = copy ]; then
    root="$STATE/hosts/.$h.tmp"
    rm -rf --one-file-system "$root"
    cp -a --reflink=auto "$lower/." "$root"
  else
    root="$dir"
  fi
  # Guard: everything below writes into the new host's root, never into this machine's /.
  [ -n "$root" ] && [ "$root" != / ] && [ -d "$root/etc/ssh" ] || die "$h: bad root '$root'"
  echo "$h" >"$root/etc/hostname"
  printf '127.0.0.1\tlocalhost\n%s\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n' \
    "$ip" "$h" >"$root/etc/hosts"
  od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$root/etc/machine-id"
  echo >>"$root/etc/machine-id"
  ssh-keygen -q -t ed25519 -N '' -C "root@$h" -f "$root/etc/ssh/ssh_host_ed25519_key" </dev/null
  cp "$root/etc/ssh/ssh_host_ed25519_key.pub" "$(host_key_file "$h")"
  install -d -m 700 "$root/root/.ssh"
  install -m 600 "$STATE/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
  printf '%s\n' "# hw-picollector fleet harness: this host's own loopback address only." \
    "ListenAddress $ip" "PermitRootLogin prohibit-password" "PasswordAuthentication no" \
    "HostKey /etc/ssh/ssh_host_ed25519_key" "UseDNS no" >"$root/etc/ssh/sshd_config.d/hwpc-fleet.conf"
  if [ "$arch" != "$(native_arch)" ]; then emulation_dropins "$root"; fi
  if [ "$disk" = copy ]; then mv -T "$root" "$dir"; fi
  printf 'HOST=%s\nARCH=%s\nIP=%s\nDISK=%s\nLOWER=%s\n' "$h" "$arch" "$ip" "$disk" "$lower" >"$(host_conf "$h")"
  say "$h: disk ready ($disk of $(basename "$lower")) in $(since "$t0") s"
}

write_client_files() {
  local h kh="$STATE/known_hosts.tmp" ini="$STATE/hosts.ini.tmp" cfg="$STATE/ssh_config.tmp"
  local groups=() g
  : >"$kh"
  {
    echo "# Generated by tests/harness/fleet/fleet.sh; rewritten by every up/down --purge."
    echo "[fleet]"
  } >"$ini"
  {
    echo "# Generated by tests/harness/fleet/fleet.sh: ssh -F $STATE/ssh_config <host>"
  } >"$cfg"
  for h in $(known_hosts_list); do
    load_conf "$h"
    [ -f "$(host_key_file "$h")" ] || continue
    printf '%s,%s %s\n' "$IP" "$h" "$(cut -d' ' -f1-2 "$(host_key_file "$h")")" >>"$kh"
    printf '%s ansible_host=%s fleet_arch=%s\n' "$h" "$IP" "$ARCH" >>"$ini"
    printf 'Host %s\n  HostName %s\n  User %s\n  IdentityFile %s/id_ed25519\n  IdentitiesOnly yes\n  UserKnownHostsFile %s/known_hosts\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  HostKeyAlias %s\n\n' \
      "$h" "$IP" "$FLEET_USER" "$STATE" "$STATE" "$IP" >>"$cfg"
    groups+=("${h%%[0-9]*}:$h" "fleet_$ARCH:$h")
  done
  {
    echo
    echo "[fleet:vars]"
    echo "ansible_user=$FLEET_USER"
    echo "ansible_ssh_private_key_file=$STATE/id_ed25519"
    echo "ansible_ssh_common_args='-o UserKnownHostsFile=$STATE/known_hosts -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes'"
    echo "ansible_python_interpreter=/usr/bin/python3"
    for g in $(printf '%s\n' "${groups[@]}" | cut -d: -f1 | sort -u); do
      echo
      echo "[$g]"
      printf '%s\n' "${groups[@]}" | awk -F: -v g="$g" '$1 == g { print $2 }'
    done
  } >>"$ini"
  mv "$kh" "$STATE/known_hosts"
  mv "$ini" "$STATE/hosts.ini"
  mv "$cfg" "$STATE/ssh_config"
}

address_in_use() { # ip -> 0 if something already listens on ip:22
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/22" 2>/dev/null
}

# Runs in its own session (setsid), detached from the caller: boots the host and boots it again
# whenever systemd inside asks for a reboot (systemd-nspawn exits with 133 then).
cmd__supervise() {
  local h="$1" npid="" rc=0 cg root dir boots=0 killsig=()
  load_conf "$h"
  # systemd halts on SIGRTMIN+3 (what nspawn sends it on SIGTERM). qemu-user (7.2) keeps the
  # first two real-time signals for itself, so a guest sees host SIGRTMIN+n as SIGRTMIN+(n-2):
  # the halt would arrive as SIGRTMIN+1 (rescue mode). Host SIGRTMIN+6 arrives as SIGRTMIN+4,
  # poweroff.
  if [ "$ARCH" != "$(native_arch)" ]; then killsig=(--kill-signal=SIGRTMIN+6); fi
  dir="$(host_dir "$h")"
  cg="$(cgroup_name "$h")"
  trap 'touch "$(stop_flag "$h")"; alive "$npid" && kill -TERM "$npid"' TERM INT HUP
  while :; do
    [ ! -e "$(stop_flag "$h")" ] || break
    boots=$((boots + 1))
    echo "=== fleet: $(date -Is) boot #$boots of $h ($ARCH, $IP) ==="
    (
      for root in $(cgroup_roots); do
        mkdir -p "$root/$cg"
        echo "$BASHPID" >"$root/$cg/cgroup.procs"
      done
      exec systemd-nspawn --quiet --register=no --keep-unit --boot \
        --directory="$dir" --machine="$h" --link-journal=no \
        --resolv-conf=copy-host --console=read-only "${killsig[@]}"
    ) </dev/null &
    npid=$!
    echo "$npid" >"$(pid_file "$h")"
    rc=0
    wait "$npid" || rc=$?
    while alive "$npid"; do rc=0; wait "$npid" || rc=$?; done
    echo "=== fleet: $(date -Is) systemd-nspawn of $h exited with $rc ==="
    # A SIGKILLed nspawn leaves the container running without it: the host is only down when
    # nothing is left in its cgroup.
    if ! cgroup_empty "$h"; then
      echo "=== fleet: killing what is left of $h: $(cgroup_procs "$h" | tr '\n' ' ')==="
      kill_cgroup "$h"
    fi
    [ "$rc" -eq 133 ] || break
  done
  rm -f "$(pid_file "$h")" "$(sup_file "$h")"
}

# The user Raspberry Pi OS logs in with: pi, passwordless sudo (its /etc/sudoers.d/010_pi-nopasswd),
# the fleet's key. Written into the host's own disk (its overlay or copy) before it boots, or
# into a running host's disk: the cached build is never touched, so no rootfs rebuild. Idempotent:
# an existing pi is kept, and its key and sudoers entry are written again.
# (Under qemu-user, sudo cannot become root: binfmt_misc runs the emulator with the caller's
# credentials unless its entry has the C flag. The arm64 Molecule scenario connects as root.)
ensure_fleet_user() { # root
  local r="$1" u="$FLEET_USER" id home
  [ -n "$r" ] && [ "$r" != / ] && [ -f "$r/etc/passwd" ] && [ -d "$r/etc/sudoers.d" ] \
    || die "bad root '$r' for user $u"
  home="$r/home/$u"
  if ! grep -q "^$u:" "$r/etc/passwd"; then
    id=1000
    while cut -d: -f3 "$r/etc/passwd" "$r/etc/group" | grep -qx "$id"; do id=$((id + 1)); done
    printf '%s:x:%s:\n' "$u" "$id" >>"$r/etc/group"
    printf '%s:!::\n' "$u" >>"$r/etc/gshadow"
    printf '%s:x:%s:%s:%s:/home/%s:/bin/bash\n' "$u" "$id" "$id" "$u,,," "$u" >>"$r/etc/passwd"
    printf '%s:*::0:99999:7:::\n' "$u" >>"$r/etc/shadow"  # no password: key login only
  fi
  id="$(awk -F: -v u="$u" '$1 == u { print $3 ":" $4 }' "$r/etc/passwd")"
  [ -n "$id" ] || die "$r: no uid for $u"
  if [ ! -d "$home" ]; then
    install -d -m 700 -o "${id%%:*}" -g "${id##*:}" "$home"
    cp -a "$r/etc/skel/." "$home/" 2>/dev/null || true
    chown -R "$id" "$home"
    chmod 700 "$home"
  fi
  install -d -m 700 -o "${id%%:*}" -g "${id##*:}" "$home/.ssh"
  install -m 600 -o "${id%%:*}" -g "${id##*:}" "$STATE/id_ed25519.pub" "$home/.ssh/authorized_keys"
  printf '%s ALL=(ALL) NOPASSWD: ALL\n' "$u" >"$r/etc/sudoers.d/010_$u-nopasswd"
  chmod 440 "$r/etc/sudoers.d/010_$u-nopasswd"
}

start_host() { # host (conf and dir must exist)
  local h="$1" pid
  load_conf "$h"
  if ! cgroup_empty "$h"; then
    warn "$h: processes of an earlier run are left in its cgroup; killing them"
    kill_cgroup "$h"
  fi
  mount_host "$h"
  if address_in_use "$IP"; then
    die "$h: something already listens on $IP:22 (another fleet or host using this address?)"
  fi
  ensure_fleet_user "$(host_dir "$h")"
  rm -f "$(stop_flag "$h")"
  : >"$(log_file "$h")"
  # Close the lock descriptors: a supervisor inheriting them would hold the state lock forever.
  setsid "$SELF" _supervise "$h" </dev/null >>"$(log_file "$h")" 2>&1 8>&- 9>&- &
  pid=$!
  echo "$pid" >"$(sup_file "$h")"
}

wait_ready() { # host t0 -> prints boot time
  local h="$1" t0="$2" deadline out sup rem
  load_conf "$h"
  local limit="${HWPC_FLEET_TIMEOUT:-}"
  if [ -z "$limit" ]; then
    if [ "$ARCH" = "$(native_arch)" ]; then limit=120; else limit=600; fi
  fi
  deadline=$(( ${EPOCHSECONDS} + limit ))
  while :; do
    sup="$(read_pid "$(sup_file "$h")")"
    if ! alive "$sup" && ! is_our_nspawn "$(read_pid "$(pid_file "$h")")" "$h"; then
      tail -n 40 "$(log_file "$h")" >&2 || true
      die "$h: systemd-nspawn exited during boot (log: $(log_file "$h"))"
    fi
    [ "$EPOCHSECONDS" -lt "$deadline" ] || { tail -n 40 "$(log_file "$h")" >&2 || true; die "$h: not ready within $limit s (log: $(log_file "$h"))"; }
    if address_in_use "$IP"; then
      rem=$(( deadline - EPOCHSECONDS ))
      [ "$rem" -gt 0 ] || rem=1
      out="$(timeout "$rem" "$SELF" ssh "$h" systemctl is-system-running --wait 2>/dev/null || true)"
      case "$out" in
        running) break ;;
        degraded)
          warn "$h: systemd is degraded: $("$SELF" ssh "$h" systemctl --failed --plain --no-legend 2>/dev/null | awk '{print $1}' | tr '\n' ' ')"
          break ;;
      esac
    fi
    sleep 0.2
  done
  say "$h: up at $IP ($ARCH) in $(since "$t0") s from start to ssh + systemd $out"
}

parse_host_opts() {
  ARCH_OPT="$(native_arch)" PREFIX=pi BASE="" PURGE=0 ARGS=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --arch) ARCH_OPT="${2:?}"; shift 2 ;;
      --prefix) PREFIX="${2:?}"; shift 2 ;;
      --base) BASE="${2:?}"; shift 2 ;;
      --purge) PURGE=1; shift ;;
      --*) die "unknown option $1" ;;
      *) ARGS+=("$1"); shift ;;
    esac
  done
  check_arch "$ARCH_OPT"
  [[ "$PREFIX" =~ ^[a-z][a-z-]*$ ]] || die "--prefix must be lower-case letters (got '$PREFIX')"
  if [ -z "$BASE" ]; then
    if [ "$ARCH_OPT" = "$(native_arch)" ]; then BASE=0; else BASE=100; fi
  fi
}

lock_state() {
  install -d -m 700 "$STATE"
  exec 9>"$STATE/.lock"
  flock 9
}

boot_hosts() { # host...
  local h started=() t0s=() already=() i
  for h in "$@"; do
    if host_running "$h"; then
      say "$h: already up; left alone"
      load_conf "$h"
      ensure_fleet_user "$(host_dir "$h")" # (a host booted by an older harness lacks it)
      already+=("$h")
      continue
    fi
    t0s+=("$(now)")
    start_host "$h"
    started+=("$h")
  done
  for i in "${!started[@]}"; do
    wait_ready "${started[$i]}" "${t0s[$i]}"
  done
  for h in "${already[@]}"; do
    wait_ready "$h" "$(now)" >/dev/null
  done
}

cmd_up() {
  parse_host_opts "$@"
  [ "${#ARGS[@]}" -eq 1 ] && [[ "${ARGS[0]}" =~ ^[0-9]+$ ]] && [ "${ARGS[0]}" -ge 1 ] || die "usage: up N [--arch A] [--prefix P] [--base B]"
  local n="${ARGS[0]}" i h ip other
  [ $((BASE + n)) -le 254 ] || die "addresses 127.0.1.$((BASE + 1))..$((BASE + n)) exceed 127.0.1.254"
  ensure_deps "$ARCH_OPT"
  ensure_rootfs "$ARCH_OPT"
  lock_state
  ensure_key
  local hosts=()
  for i in $(seq 1 "$n"); do
    h="$PREFIX$i"
    ip="127.0.1.$((BASE + i))"
    for other in $(known_hosts_list); do
      [ "$other" != "$h" ] || continue
      if grep -qx "IP=$ip" "$(host_conf "$other")"; then
        die "$h: address $ip is already used by $other (use another --base, or down --purge $other)"
      fi
    done
    if [ -f "$(host_conf "$h")" ]; then
      load_conf "$h"
      if [ "$ARCH" != "$ARCH_OPT" ] || [ "$IP" != "$ip" ]; then
        host_running "$h" && die "$h is up as $ARCH at $IP; down --purge it first"
        say "$h: was $ARCH at $IP; recreating as $ARCH_OPT at $ip"
        remove_host "$h"
      fi
    fi
    if ! host_running "$h"; then make_host "$h" "$ARCH_OPT" "$ip"; fi
    hosts+=("$h")
  done
  write_client_files
  boot_hosts "${hosts[@]}"
  say "inventory: $STATE/hosts.ini  (ssh: $SELF ssh ${hosts[0]} CMD, or ssh -F $STATE/ssh_config ${hosts[0]})"
}

cmd_start() {
  [ $# -eq 1 ] || die "usage: start HOST"
  lock_state
  load_conf "$1"
  if [ "$DISK" = copy ]; then [ -d "$(host_dir "$1")" ] || die "$1 has no root filesystem; use up"; fi
  boot_hosts "$1"
}

# Reboot from inside (systemctl reboot) and wait until the host is back: the supervisor starts
# systemd-nspawn again, so <host>.pid changes; then SSH and systemd must be ready again.
cmd_reboot() {
  [ $# -eq 1 ] || die "usage: reboot HOST"
  local h="$1" old new deadline t0
  host_running "$h" || die "$h is not running"
  load_conf "$h"
  old="$(read_pid "$(pid_file "$h")")"
  t0="$(now)"
  timeout 20 "$SELF" ssh "$h" systemctl reboot >/dev/null 2>&1 || true
  deadline=$((EPOCHSECONDS + 120))
  while :; do
    new="$(read_pid "$(pid_file "$h")")"
    if [ -n "$new" ] && [ "$new" != "$old" ] && is_our_nspawn "$new" "$h"; then break; fi
    alive "$(read_pid "$(sup_file "$h")")" || die "$h: supervisor exited instead of rebooting (log: $(log_file "$h"))"
    [ "$EPOCHSECONDS" -lt "$deadline" ] || die "$h: did not restart within 120 s"
    sleep 0.1
  done
  wait_ready "$h" "$t0"
}

cmd_wait() {
  [ $# -eq 1 ] || die "usage: wait HOST"
  host_running "$1" || die "$1 is not running"
  wait_ready "$1" "$(now)"
}

cgroup_procs() { # host: every process in the host's cgroups (nspawn and the container)
  local cg root
  cg="$(cgroup_name "$1")"
  for root in $(cgroup_roots); do
    [ -d "$root/$cg" ] || continue
    find "$root/$cg" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

cgroup_empty() { [ -z "$(cgroup_procs "$1")" ]; }

# Kill every process left in a host's cgroups, by PID, and wait until they are gone.
kill_cgroup() { # host
  local p deadline=$((EPOCHSECONDS + 10))
  while ! cgroup_empty "$1" && [ "$EPOCHSECONDS" -lt "$deadline" ]; do
    for p in $(cgroup_procs "$1"); do kill -KILL "$p" 2>/dev/null || true; done
    sleep 0.1
  done
  cgroup_empty "$1" || warn "$1: processes left in its cgroup: $(cgroup_procs "$1" | tr '\n' ' ')"
}

remove_cgroup() { # host
  local cg root
  cg="$(cgroup_name "$1")"
  for root in $(cgroup_roots); do
    [ -d "$root/$cg" ] || continue
    find "$root/$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    rmdir "$(dirname "$root/$cg")" 2>/dev/null || true
  done
}

stop_host() { # host
  local h="$1" npid sup deadline t0
  load_conf "$h"
  npid="$(read_pid "$(pid_file "$h")")"
  sup="$(read_pid "$(sup_file "$h")")"
  touch "$(stop_flag "$h")"
  t0="$(now)"
  if is_our_nspawn "$npid" "$h"; then
    # nspawn passes SIGTERM on as a clean poweroff (for emulated hosts too: see --kill-signal in
    # the supervisor). A second SIGTERM would make nspawn SIGKILL the container: not sent.
    kill -TERM "$npid" 2>/dev/null || true
    deadline=$((EPOCHSECONDS + STOP_WAIT))
    while is_our_nspawn "$npid" "$h" && [ "$EPOCHSECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if is_our_nspawn "$npid" "$h"; then
      warn "$h: systemd-nspawn $npid still running after $(since "$t0") s; SIGKILL (console: $(log_file "$h"))"
      kill -KILL "$npid" 2>/dev/null || true
    fi
  fi
  # The supervisor ends by itself once nspawn exits (the stop flag prevents a restart).
  deadline=$((EPOCHSECONDS + 10))
  while alive "$sup" && [ "$EPOCHSECONDS" -lt "$deadline" ]; do sleep 0.1; done
  if alive "$sup"; then kill -KILL "$sup" 2>/dev/null || true; fi
  kill_cgroup "$h"
  remove_cgroup "$h"
  rm -f "$(pid_file "$h")" "$(sup_file "$h")" "$(stop_flag "$h")"
  load_conf "$h"
  umount_host "$h"
  say "$h: down in $(since "$t0") s"
}

# nspawn processes of this state dir (or of the given hosts), whether or not a pid file names them.
our_nspawns() { # [host...]
  local p pat="^--directory=$STATE/hosts/[^/]*\$" h
  if [ $# -gt 0 ]; then
    pat=""
    for h in "$@"; do pat="$pat${pat:+|}^--directory=$STATE/hosts/$h\$"; done
  fi
  for p in $(pgrep -x systemd-nspawn || true); do
    { tr '\0' '\n' <"/proc/$p/cmdline"; } 2>/dev/null | grep -Eq -- "$pat" && echo "$p"
  done
  return 0
}

cmd_down() {
  parse_host_opts "$@"
  lock_state
  local hosts=("${ARGS[@]}") h p left
  [ "${#hosts[@]}" -gt 0 ] || mapfile -t hosts < <(known_hosts_list)
  local known=() jobs=()
  for h in "${hosts[@]}"; do
    if [ -f "$(host_conf "$h")" ]; then known+=("$h"); else warn "unknown host $h"; fi
  done
  # Stop in parallel: each host powers off by itself.
  for h in "${known[@]}"; do
    if host_running "$h" || [ -f "$(pid_file "$h")" ] || [ -f "$(sup_file "$h")" ] || ! cgroup_empty "$h"; then
      stop_host "$h" &
      jobs+=("$!")
    fi
  done
  for p in "${jobs[@]}"; do wait "$p" || true; done
  for h in "${known[@]}"; do
    if host_running "$h" || ! cgroup_empty "$h"; then
      die "$h: still running after down (pid $(read_pid "$(pid_file "$h")")); not touching its disk"
    fi
    remove_cgroup "$h"
    load_conf "$h"
    umount_host "$h"
    if [ "$PURGE" -eq 1 ]; then
      remove_host "$h"
      rm -f "$(log_file "$h")"
      say "$h: purged"
    fi
  done
  if [ "${#ARGS[@]}" -eq 0 ]; then
    # Orphans (pid file lost): ours by their --directory, stopped by PID.
    for p in $(our_nspawns); do
      warn "orphan systemd-nspawn $p ($({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null)); SIGTERM"
      kill -TERM "$p" 2>/dev/null || true
    done
    local deadline=$((EPOCHSECONDS + STOP_WAIT))
    while [ -n "$(our_nspawns)" ] && [ "$EPOCHSECONDS" -lt "$deadline" ]; do sleep 0.2; done
    for p in $(our_nspawns); do kill -KILL "$p" 2>/dev/null || true; done
    # Empty cgroups left by hosts that died or were purged (rmdir fails on populated ones).
    for p in $(cgroup_roots); do
      [ -d "$p/$(dirname "$(cgroup_name x)")" ] || continue
      find "$p/$(dirname "$(cgroup_name x)")" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
  fi
  [ -d "$STATE" ] && write_client_files
  left="$(our_nspawns "${ARGS[@]}")"
  [ -z "$left" ] || die "systemd-nspawn still running: $(echo $left)"
  left="$(comm -23 <(pgrep -x systemd-nspawn | sort) <(our_nspawns | sort))"
  [ -z "$left" ] || [ "${#ARGS[@]}" -gt 0 ] || warn "systemd-nspawn processes not from $STATE still running: $(echo $left)"
  return 0
}

cmd_stop() {
  [ $# -eq 1 ] || die "usage: stop HOST"
  cmd_down "$1"
}

cmd_status() {
  local h state sys
  printf '%-10s %-14s %-6s %-8s %-9s %s\n' HOST ADDRESS ARCH STATE SYSTEMD PID
  for h in $(known_hosts_list); do
    load_conf "$h"
    sys=-
    if host_running "$h"; then
      state=up
      sys="$(timeout 15 "$SELF" ssh "$h" systemctl is-system-running 2>/dev/null || true)"
      [ -n "$sys" ] || sys=no-ssh
    elif ! cgroup_empty "$h"; then
      state=orphaned # processes without nspawn; `down HOST` or `start HOST` kills them
    else
      state=down
    fi
    printf '%-10s %-14s %-6s %-8s %-9s %s\n' "$h" "$IP" "$ARCH" "$state" "$sys" "$(read_pid "$(pid_file "$h")")"
  done
}

cmd_ssh() {
  [ $# -ge 1 ] || die "usage: ssh HOST [CMD...]"
  local h="$1"
  shift
  load_conf "$h"
  local opts
  mapfile -t opts < <(ssh_opts)
  if [ $# -eq 0 ]; then
    exec ssh "${opts[@]}" -o BatchMode=yes -t "root@$IP"
  fi
  exec ssh "${opts[@]}" "root@$IP" -- "$@"
}

usage() { sed -n '2,/^set -euo/p' "$SELF" | sed '$d' | sed 's/^# \{0,1\}//'; }

main() {
  local cmd="${1:-}"
  [ $# -eq 0 ] || shift
  case "$cmd" in
    deps) cmd_deps "$@" ;;
    rootfs) cmd_rootfs "$@" ;;
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    stop) cmd_stop "$@" ;;
    start) cmd_start "$@" ;;
    wait) cmd_wait "$@" ;;
    reboot) cmd_reboot "$@" ;;
    status) cmd_status "$@" ;;
    ssh) cmd_ssh "$@" ;;
    _supervise) cmd__supervise "$@" ;;
    -h|--help|help|"") usage ;;
    *) die "unknown command '$cmd' (try --help)" ;;
  esac
}

# One line: bash reads a script as it runs it, and the supervisor runs for hours; nothing after
# main may be read from a file that was edited meanwhile.
main "$@"; exit $?
