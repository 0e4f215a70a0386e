#!/usr/bin/env bash
# Builds the C runtime directory that rustc's armv7-unknown-linux-musleabihf target links
# against: musl's crt files and libc.a from Debian's musl-dev:armhf (downloaded with a private
# apt state, so dpkg's architectures stay untouched), plus crtbegin/crtend and libgcc from
# gcc-arm-linux-gnueabihf. rustup has no prebuilt std for this target, so std is built with
# -Z build-std against this directory.
#
# Usage: .ci/armhf-musl-sysroot.sh [DEST]   (default: target/armhf-musl-sysroot)
set -euo pipefail
dest=$(realpath -m "${1:-target/armhf-musl-sysroot}")
if [ -f "$dest/libc.a" ]; then
  echo "$dest ready"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$dest"
opts=(-o APT::Architecture=armhf -o APT::Architectures::=armhf -o "Dir::State::Lists=$work/lists"
      -o "Dir::Cache=$work/cache" -o Dir::State::status=/dev/null)
apt-get "${opts[@]}" update -qq || echo "apt-get update reported errors (trying the download anyway)"
(cd "$work" && apt-get "${opts[@]}" download musl-dev)
dpkg -x "$work"/musl-dev_*_armhf.deb "$work/x"
cp "$work"/x/usr/lib/arm-linux-musleabihf/{crt1.o,rcrt1.o,Scrt1.o,crti.o,crtn.o,libc.a,libm.a,libpthread.a,libdl.a,librt.a,libutil.a} "$dest/"
for f in crtbegin.o crtbeginS.o crtend.o crtendS.o libgcc.a libgcc_eh.a; do
  cp "$(arm-linux-gnueabihf-gcc -print-file-name=$f)" "$dest/"
done
# std's unwind crate asks for -lunwind on musl with crt-static; libgcc_eh and libgcc provide it.
printf 'INPUT(libgcc_eh.a libgcc.a)\n' > "$dest/libunwind.a"
echo "$dest ready"
