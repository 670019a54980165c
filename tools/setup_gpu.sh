#!/usr/bin/env bash
# Give this machine a GPU accelerator for LiteRT, with or without a GPU.
#
# LiteRT's GPU accelerator (ML Drift over WebGPU/Dawn) runs on any Vulkan driver. On a machine
# without a GPU that is Mesa's lavapipe (the CPU runs the shaders: the delegate's op rules and
# numerics are real, its timings are CPU emulation and never GPU figures). Dawn refuses
# Mesa 22.3 (Debian 12's main suite: "shaderUniform*ArrayDynamicIndexing required"), so on
# Debian 12 Mesa >= 24 comes from bookworm-backports. Machines with a real GPU and its
# Vulkan driver need nothing from here: LiteRT picks the GPU's adapter.
#
# Usage (root, or through sudo):  tools/setup_gpu.sh        # idempotent
# Check:                          mobilekit delegates some.tflite --delegate gpu
set -euo pipefail

need_root() { [ "$(id -u)" -eq 0 ] || { echo "tools/setup_gpu.sh: run as root (sudo)" >&2; exit 2; }; }

mesa_major() {
  dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | sed -E 's/^([0-9]+:)?([0-9]+).*/\2/'
}

if ! command -v apt-get >/dev/null; then
  echo "tools/setup_gpu.sh: no apt-get here; install a Vulkan loader (libvulkan.so.1) and a" \
       "Vulkan driver (Mesa >= 24 lavapipe, or your GPU's) with your package manager" >&2
  exit 2
fi
major=$(mesa_major || true)
if [ -n "$major" ] && [ "$major" -ge 24 ] && dpkg-query -W libvulkan1 >/dev/null 2>&1; then
  echo "GPU set-up: mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers) and libvulkan1 present"
  exit 0
fi
need_root
export DEBIAN_FRONTEND=noninteractive
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
target=()
if [ "$codename" = bookworm ]; then
  list=/etc/apt/sources.list.d/mobilekit-bookworm-backports.sources
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    cat > "$list" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  target=(-t bookworm-backports)
fi
apt-get update -qq
apt-get install -y -qq "${target[@]}" mesa-vulkan-drivers libvulkan1 >/dev/null
echo "GPU set-up: installed mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
