# Shared by scripts/run, scripts/test and scripts/bench: paths, packages,
# building. Source it; do not run it.

SX_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SX_BUILD="$SX_ROOT/build"

# Debian packages needed to build and run the relay.
SX_BUILD_PACKAGES=(build-essential cmake pkg-config openssl
  libzmq3-dev libprotobuf-c-dev protobuf-c-compiler liblmdb-dev libconfig-dev libssl-dev
  libcmocka-dev libmicrohttpd-dev libjansson-dev libc-ares-dev libcurl4-openssl-dev)

sx_log() { printf '%s\n' "$*" >&2; }

# Install whichever of the given Debian packages are missing (only those).
sx_install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  sx_log "installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Build into $1 (default build/) with extra CMake arguments after it.
sx_build() {
  local dir=${1:-$SX_BUILD}
  shift || true
  cmake -S "$SX_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j"$(nproc)" -- --no-print-directory >/dev/null
}
