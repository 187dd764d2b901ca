#!/usr/bin/env bash
# Installs the Linux PC/SC stack and the real clients the tests drive
# (Debian 12, as root, no systemd needed). Fast when everything is already
# there. Rust itself comes from the machine's rustup toolchain. python3-venv
# and python3-dev (with gcc and libpcsclite-dev) are for the ykman venv of
# scripts/setup-ykman.sh, which builds pyscard from source.
set -euo pipefail
packages=(pcscd vsmartcard-vpcd libpcsclite-dev pcsc-tools opensc opensc-pkcs11
  yubico-piv-tool openssh-client openssh-server openssl procps iproute2
  vsmartcard-vpicc python3-pycryptodome
  python3-venv python3-dev
  gcc libc6-dev pkg-config libssl-dev curl ca-certificates valgrind)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is required (the machine's rustup toolchain)" >&2; exit 1; }
