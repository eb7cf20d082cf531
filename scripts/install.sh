#!/usr/bin/env bash
# Install what anycast-lab needs on Debian 12 / Ubuntu 22.04+: Debian packages and a
# virtual environment with the pinned Python packages. Safe to run again: it skips
# what is already there. Run as root.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ANYCAST_LAB_VENV:-$here/.venv}"
packages=(bird2 unbound bind9-dnsutils dnsperf wrk nftables iproute2 iputils-ping procps curl jq
          util-linux python3 python3-venv python3-pip graphviz)

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 3; }

[ "$(uname -s)" = Linux ] || die "anycast-lab needs Linux network namespaces; this is $(uname -s): use a Linux VM."
[ "$(id -u)" -eq 0 ] || die "run as root (e.g. sudo make lab-up): installing packages and creating namespaces need it."
[ -e /proc/self/ns/net ] || die "this kernel has no network namespace support (/proc/self/ns/net is missing)."
command -v apt-get >/dev/null || die "this installer needs apt (Debian 12 or Ubuntu 22.04+); install ${packages[*]} by hand."

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  # Do not start the packages' own services (bird, unbound) on the host: the lab runs
  # its own instances inside namespaces and never touches the host's networking.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1
  fi
  trap '[ $created_policy -eq 1 ] && rm -f "$policy"' EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    for svc in bird unbound; do
      for p in "${missing[@]}"; do
        if [ "$p" = "$svc" ] || [ "$p" = "${svc}2" ]; then
          systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
          say "disabled the host's $svc.service (the lab runs its own in namespaces)"
        fi
      done
    done
  fi
else
  say "Debian packages already installed"
fi

stamp="$venv/.anycast-lab-installed"
want="$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  say "Python environment up to date ($venv)"
else
  say "creating the Python environment in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  "$venv/bin/pip" install -q -e "$here[dev]"
  echo "$want" > "$stamp"
fi
say "ready: $venv/bin/anycast-lab"
