#!/usr/bin/env bash
# Debian packages the demo and the tests need; installs only what is missing (no-op when
# complete). The fleet harness adds its own (mmdebstrap, systemd-container) when it runs.
set -euo pipefail
PKGS="openssl make iproute2 openjdk-17-jdk-headless maven python3-venv openssh-client"
need=()
for pkg in $PKGS; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing Debian packages: ${need[*]} (run as root, or apt-get install them)" >&2
  exit 1
fi
echo "deps: installing ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
