#!/usr/bin/env bash
# The .deb packages of vmvpn and bulletin (cargo-deb), in target/debian/: release
# binaries, the systemd units (installed, not enabled or started), shell completions and
# man pages generated from the binaries. Installs cargo-deb when missing.
#   bash scripts/package.sh
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
prepare
command -v dpkg-deb >/dev/null 2>&1 || { echo "package: dpkg-deb is missing (Debian's dpkg)" >&2; exit 1; }
if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "package: installing cargo-deb (a few minutes, once)"
  cargo install cargo-deb --locked --quiet
fi
cargo build --release --locked --quiet -p vmvpn --bin vmvpn -p bulletin --bin bulletin
target="${CARGO_TARGET_DIR:-target}/release"
mkdir -p "$target/pkg"
for b in vmvpn bulletin; do
  "$target/$b" completions bash >"$target/pkg/$b.bash"
  "$target/$b" completions fish >"$target/pkg/$b.fish"
  "$target/$b" completions zsh >"$target/pkg/_$b"
  "$target/$b" man >"$target/pkg/$b.1"
  cargo deb --no-build --locked --strip -p "$b" --quiet
done
ls "${CARGO_TARGET_DIR:-target}"/debian/*.deb
