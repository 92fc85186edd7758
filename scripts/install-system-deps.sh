#!/usr/bin/env bash
# Install the Debian packages nonstop's demo and tests need. Idempotent: when
# everything is present it only runs dpkg-query and returns in well under a second.
set -euo pipefail

# One package per line, with the reason it is needed.
PACKAGES=(
  gcc                 # compiles C test fixtures and patch objects
  make                # drives set-up and fixture builds
  libc6-dev           # headers for the C fixtures
  python3-venv        # `python3 -m venv` on a Debian system Python
  python3.11-minimal  # userspace engine tests: a real Debian program (/usr/bin/python3.11) ...
  libexpat1           # ... with a real Debian library (libexpat.so.1) to patch live
  zlib1g              # userspace engine tests: a library the fixture program does not map
  qemu-system-x86     # kernel tests boot Debian's own kernel in a QEMU guest (TCG)
  busybox-static      # the kernel test guest's initramfs (/init, insmod, mount)
  cpio                # packs that initramfs
  libelf1             # objtool from linux-kbuild, run when building livepatch modules
  binutils            # strip: livepatch modules ship without debug info
  patch               # the userspace builder applies the fixes of a recipe
  dpkg-dev            # dpkg-source: the Debian builder unpacks the source packages apt fetches
  gpgv                # the Debian builder checks the signature of a .dsc taken from the pool ...
  debian-keyring      # ... against the keys of Debian's uploaders
  gnupg               # the pool tests sign .dsc files with keys of their own
  libxml2-dev         # headers of the C driver the Debian builder's libxml2 tests patch live
  postgresql          # server tests and bench/fleet.py run a private PostgreSQL cluster (initdb)
  openscap-scanner    # oscap evaluates the OVAL that nonstop exports for scanners (tests/cve)
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "install-system-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi
echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Third-party repositories configured on a machine may be unreachable; Debian's own suffice.
apt-get update -qq || echo "install-system-deps: apt-get update reported errors; continuing" >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}"
