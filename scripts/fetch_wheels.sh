#!/usr/bin/env bash
# What the GPU machine (Python 3.12, Ubuntu, no network) lacks, downloaded here into .whl/ and carried by the
# device tool: Python wheels, Debian's bubblewrap (.deb, unpacked there by scripts/gpu_suite.sh when `bwrap`
# is missing), and .oldrev/1dc3a4c.tar.gz (`git archive` of the commit the `evalrate` step compares with:
# the device gets a copy of the working tree, not .git). One list, so every GPU run installs the same set.
# .whl/ and .oldrev/ are git-ignored. Ray is not carried: its wheel alone passes the 64 MiB a call may carry,
# and the batch's default local backend needs none.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(pydantic==2.13.4 pydantic_core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.5
      openai==3.57.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 jiter==0.19.0 distro==1.9.0
      sniffio==1.3.1 tenacity==9.2.1 idna==3.20 h11==0.16.0 pyseccomp==0.1.2 ncu-report==2026.3.1)
PLAT=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_25_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 any; do
  PLAT+=(--platform "$p")
done
mkdir -p .whl .oldrev
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLAT[@]}" -d .whl "${PKGS[@]}"
# bubblewrap for amd64 whatever this machine's architecture; a failure leaves the sandbox's reduced mode.
APT=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64-lists)
mkdir -p /tmp/amd64-lists/partial
if apt-get "${APT[@]}" update >/dev/null 2>&1; then
  (cd .whl && apt-get "${APT[@]}" download bubblewrap) || echo "warning: bubblewrap .deb not downloaded"
else
  echo "warning: apt-get update failed: bubblewrap .deb not downloaded"
fi
OLD=${OLD_COMMIT:-1dc3a4c}
git archive --format=tar.gz -o ".oldrev/$OLD.tar.gz" "$OLD"
git rev-parse HEAD > .oldrev/HEAD  # the commit measured, printed by the env step
ls .whl .oldrev
du -sh .whl .oldrev
