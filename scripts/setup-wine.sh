#!/usr/bin/env bash
# Installs what the Windows build of winscard-shim needs on Debian 12: the
# mingw cross toolchain, Wine to run the result, and the Windows Rust
# targets (gnu to build and run here, msvc for Windows users' builds,
# i686 gnu so CI keeps the 32-bit DLL
# buildable). Safe to run again.
set -euo pipefail

need_apt=()
command -v wine >/dev/null 2>&1 || need_apt+=(wine wine64)
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || need_apt+=(gcc-mingw-w64-x86-64)
# ring (the TLS link's crypto) compiles C for the 32-bit check too.
command -v i686-w64-mingw32-gcc >/dev/null 2>&1 || need_apt+=(gcc-mingw-w64-i686)
if [ ${#need_apt[@]} -gt 0 ]; then
  # wine (32-bit parts) wants i386; wine64 alone is enough for our x86_64 programs.
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_apt[@]}"
fi

installed=$(rustup target list --installed)
for t in x86_64-pc-windows-gnu x86_64-pc-windows-msvc i686-pc-windows-gnu; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done

command -v wine >/dev/null || { echo "setup-wine: wine missing after install" >&2; exit 1; }
command -v x86_64-w64-mingw32-gcc >/dev/null || { echo "setup-wine: mingw gcc missing after install" >&2; exit 1; }
echo "setup-wine: ok ($(wine --version 2>/dev/null || echo wine), $(x86_64-w64-mingw32-gcc --version | head -1))"
