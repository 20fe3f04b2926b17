#!/usr/bin/env bash
# The Python packages the GPU machine (Python 3.12, no network) lacks, downloaded here into .whl/ and
# carried by the device tool. One list, so every GPU run installs the same set. .whl/ is git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(pydantic==2.13.4 pydantic_core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.5
      openai==3.57.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 jiter==0.19.0 distro==1.9.0
      sniffio==1.3.1 tenacity==9.2.1 idna==3.20 h11==0.16.0 pyseccomp==0.1.2)
PLAT=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 any; do
  PLAT+=(--platform "$p")
done
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLAT[@]}" -d .whl "${PKGS[@]}"
ls .whl
