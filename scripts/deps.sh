#!/usr/bin/env bash
# Install what vmvpn's build, demo, lab and tests need on Debian. Idempotent: installs only
# what is missing, so a second run touches nothing. Needs root when something is missing.
#   bash scripts/deps.sh          everything the test suite needs
#   bash scripts/deps.sh --demo   only what the demo and the lab need
set -euo pipefail
demo_only=false
[ "${1:-}" = --demo ] && demo_only=true

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v bridge >/dev/null 2>&1 || need+=(iproute2)
# The demo's TCP stream between two VMs.
command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
# The bulletin's etcd store: etcd-client compiles etcd's protobuf API with protoc.
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -e /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
if ! $demo_only; then
# The flooding tests run a DHCP server (no system service) and client inside VM namespaces.
{ command -v dnsmasq || [ -x /usr/sbin/dnsmasq ]; } >/dev/null 2>&1 || need+=(dnsmasq-base)
command -v busybox >/dev/null 2>&1 || need+=(busybox)
# CI lints a live metrics scrape with the real promtool (package prometheus; no service runs).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# The alarm tests push to a real Alertmanager.
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
# ... and mail to an SMTP sink (Debian's own interpreter runs it).
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || need+=(python3-aiosmtpd)
# ... over STARTTLS, with a test CA made by openssl.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The dashboard test loads the page in a real headless Chromium, driven by chromedriver
# through Selenium (Debian's, under Debian's own interpreter), with a font to render it.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
/usr/bin/python3 -c 'import selenium' >/dev/null 2>&1 || need+=(python3-selenium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
# The export tests hand our sFlow and IPFIX to real collectors (pmacct, nfdump), decode
# them with tshark, and write the live state to a Redis server the test starts itself.
command -v tshark >/dev/null 2>&1 || need+=(tshark)
{ command -v sfacctd || [ -x /usr/sbin/sfacctd ]; } >/dev/null 2>&1 || need+=(pmacct)
command -v nfcapd >/dev/null 2>&1 || need+=(nfdump)
# Several bulletins on one registry: the tests start Debian's etcd (no system service).
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
# The packaging test checks the units with systemd-analyze verify.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# VM names come from libvirt through virsh; the tests use its test:/// driver (no daemon).
command -v virsh >/dev/null 2>&1 || need+=(libvirt-clients)
# A test turns checksum offload off on a VM port, so merged frames get checksummed in software.
{ command -v ethtool || [ -x /usr/sbin/ethtool ]; } >/dev/null 2>&1 || need+=(ethtool)
# The MTU tests make a router link that drops large packets, IP fragments and ICMP.
{ command -v nft || [ -x /usr/sbin/nft ]; } >/dev/null 2>&1 || need+=(nftables)
# The NAT test flushes the NAT routers' connection tracking mid-transfer.
{ command -v conntrack || [ -x /usr/sbin/conntrack ]; } >/dev/null 2>&1 || need+=(conntrack)
# The hardening test limits a daemon's open files with prlimit (util-linux).
command -v prlimit >/dev/null 2>&1 || need+=(util-linux)
fi
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: ${need[*]} missing; run as root to install them" >&2
    exit 1
  fi
  echo "deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Rust: the toolchain's own installer, when none is present (Debian's rustc is too old).
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: installing Rust with rustup"
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
  export PATH="$HOME/.cargo/bin:$PATH"
fi
ver=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n1.88.0\n' "$ver" | sort -V | head -n1)" != 1.88.0 ]; then
  echo "deps: rustc $ver is older than 1.88; run \`rustup update stable\`" >&2
  exit 1
fi

# TAP devices need /dev/net/tun.
if [ ! -c /dev/net/tun ] && [ "$(id -u)" = 0 ]; then
  modprobe tun 2>/dev/null || true
  [ -c /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; }
fi
