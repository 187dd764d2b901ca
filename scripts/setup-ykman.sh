#!/usr/bin/env bash
# Installs yubikey-manager (ykman) with pytest and the test dependencies of
# Yubico's device tests in a venv, every package pinned and hashed
# (scripts/ykman-requirements.txt, scripts/ykman-build-requirements.txt),
# and unpacks the tests/ that yubikey-manager's source distribution ships
# (with its pyproject.toml, which makes pytest load tests/conftest.py and
# its --reader/--device options) next to it:
#
#   $YKMAN_VENV (default ${XDG_CACHE_HOME:-$HOME/.cache}/virtual-piv/ykman-venv)
#     bin/ykman, bin/python
#     yubikey_manager-5.9.2/{pyproject.toml,tests/}
#
# tests/tests/ykman.rs looks in the same place. Fast when done: a stamp
# (the hash of this script and the two requirement files) says the venv is
# complete. Needs python3-venv, python3-dev, gcc and libpcsclite-dev
# (scripts/setup-pcsc.sh) to build pyscard, and network access to PyPI.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=5.9.2
venv=${YKMAN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/virtual-piv/ykman-venv}
requirements="$here/ykman-requirements.txt"
build_requirements="$here/ykman-build-requirements.txt"
stamp="$venv/.virtual-piv-setup"
src="$venv/yubikey_manager-$version"

want=$(cat "$here/setup-ykman.sh" "$requirements" "$build_requirements" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
  [ -f "$src/tests/device/test_piv.py" ] && "$venv/bin/python" -c '' 2>/dev/null; then
  echo "ykman $version and its device tests are ready in $venv"
  exit 0
fi

# Debian's python3 (what scripts/setup-pcsc.sh installs python3-venv and
# python3-dev for), not whatever python3 comes first on PATH.
python=/usr/bin/python3
[ -x "$python" ] || python=$(command -v python3)
echo "setting up ykman $version in $venv"
if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
  echo "$venv exists and is not a venv: remove it or set YKMAN_VENV" >&2
  exit 1
fi
mkdir -p "$(dirname "$venv")"
# --clear: an incomplete or outdated venv is rebuilt from scratch.
"$python" -m venv --clear "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input)
# The build tools first (hashed), then everything else with them and
# without build isolation, so nothing unhashed is fetched to build pyscard
# or to read the sdist's metadata. pyscard's build runs the venv's swig.
export PATH="$venv/bin:$PATH"
"${pip[@]}" install -q --require-hashes --no-deps -r "$build_requirements"
"${pip[@]}" install -q --require-hashes --no-build-isolation -r "$requirements"

# The sdist, for its tests/ (the wheel has none): the same pin, its hash
# among those of the yubikey-manager entry of the requirements.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed -n '/^yubikey-manager==/,/^ *#/p' "$requirements" | grep -v '^ *#' >"$tmp/sdist.txt"
"${pip[@]}" download -q --require-hashes --no-deps --no-build-isolation \
  --no-binary yubikey-manager -d "$tmp" -r "$tmp/sdist.txt"
tar -xzf "$tmp/yubikey_manager-$version.tar.gz" -C "$venv" \
  "yubikey_manager-$version/pyproject.toml" "yubikey_manager-$version/tests"

"$venv/bin/ykman" --version
echo "$want" >"$stamp"
echo "ykman $version and its device tests are ready in $venv"
