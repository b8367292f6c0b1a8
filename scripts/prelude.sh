# Sourced by the other scripts: work from the repository root, install what is missing,
# put Rust on PATH. `need_root NAME` stops a script that needs namespaces and TAPs.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_root() {
  [ "$(id -u)" = 0 ] || { echo "$1: run as root (network namespaces and TAP devices need it)" >&2; exit 1; }
}

# `prepare --demo` installs only what the demo and the lab need.
prepare() {
  bash scripts/deps.sh "$@"
  if [ -d "$HOME/.cargo/bin" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
}
