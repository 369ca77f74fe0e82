#!/usr/bin/env bash
# Installs the system packages the build and the tests need on a fresh Debian
# machine that has only Rust: OpenCV and libclang for the `opencv` crate (the
# webcam client), Xvfb and xauth for the window tests, Chromium for the browser
# tests (the web client, driven headless), ImageMagick's `import` to capture the
# native window for the README's screenshot, iproute2's `ip` for the cluster test
# (network namespaces; Debian's minimal images lack it). Does nothing when they are all there
# already. TLS (rustls with ring) and JPEG (zune-jpeg, jpeg-encoder)
# are Rust crates: ring's C parts build with the compiler installed here.
# OpenH264 (the WebRTC door's H.264) builds from the `openh264` crate's own C++
# source with g++, and its SIMD assembly with nasm (without nasm it builds, slower).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(libopencv-dev clang libclang-dev xvfb xauth chromium imagemagick iproute2 g++ nasm)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}"
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -q
$SUDO apt-get install -y -q "${missing[@]}" </dev/null
