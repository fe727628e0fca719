# Shared set-up for ./train and ./test (sourced, not run): installs the
# missing Debian packages, prepares the KJV corpus once (prepare_kjv.sh),
# configures build/ once and builds what changed.
# Set KBIT_BUILD_DIR to build elsewhere, KBIT_CMAKE_ARGS to pass options.

KBIT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KBIT_BUILD_DIR="${KBIT_BUILD_DIR:-$KBIT_ROOT/build}"

KBIT_PACKAGES=(
  g++ cmake ninja-build pkg-config
  libeigen3-dev libyaml-cpp-dev doctest-dev zlib1g-dev
  libopenblas-dev libopenblas0-openmp libdnnl-dev libbenchmark-dev
  dataset-fashion-mnist bible-kjv
  python3 python3-numpy python3-matplotlib
)

kbit_log() { printf 'kbit: %s\n' "$*" >&2; }

kbit_install_packages() {
  local missing=() p
  for p in "${KBIT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local line="apt-get install -y -o DPkg::Lock::Timeout=300 ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    kbit_log "missing Debian packages: ${missing[*]}"
    kbit_log "run as root: $line"
    exit 1
  fi
  kbit_log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -o DPkg::Lock::Timeout=300 -qq >&2 || {
    kbit_log "apt-get update failed"; exit 1; }
  $line -qq >&2 || { kbit_log "failed: $line"; exit 1; }
}

kbit_build() {  # kbit_build [TARGET...]
  if [ -f "$KBIT_BUILD_DIR/CMakeCache.txt" ] &&
     [ ! -f "$KBIT_BUILD_DIR/build.ninja" ]; then
    kbit_log "$KBIT_BUILD_DIR was configured with another CMake generator;" \
      "remove it, or set KBIT_BUILD_DIR to another folder"
    exit 1
  fi
  if [ ! -f "$KBIT_BUILD_DIR/build.ninja" ]; then
    kbit_log "configuring $KBIT_BUILD_DIR"
    cmake -S "$KBIT_ROOT" -B "$KBIT_BUILD_DIR" -G Ninja \
      -DCMAKE_BUILD_TYPE=Release ${KBIT_CMAKE_ARGS:-} >&2 || {
      kbit_log "cmake configure failed"; exit 1; }
  fi
  cmake --build "$KBIT_BUILD_DIR" -- "$@" >&2 || {
    kbit_log "build failed"; exit 1; }
}

# The default GPT corpus (scripts/prepare_kjv.sh): a no-op once its stamp
# exists. A failure is reported, not fatal: only kjv runs need the corpus,
# and they say how to prepare it.
kbit_prepare_corpora() {
  local stamp="${KBIT_CACHE:-$HOME/.cache/kbit}/kjv/stamp"
  [ -f "$stamp" ] && return 0
  "$KBIT_ROOT/scripts/prepare_kjv.sh" ||
    kbit_log "could not prepare the KJV corpus; kjv runs will refuse to start"
}

kbit_setup() {  # kbit_setup [TARGET...]
  kbit_install_packages
  kbit_prepare_corpora
  kbit_build "$@"
}
