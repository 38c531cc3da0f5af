# Sluice: one image for every mode, chosen by flag (the `sluice` entry point):
#   controller   sluice --mode=controller   (runs as non-root: see deploy/)
#   node plugin  sluice --mode=node         (privileged: mounts, /dev, cgroups)
#   target agent sluice --mode=agent        (privileged: configfs, LVM)
# Sluice and its Python dependencies live in a virtualenv (/opt/sluice), never in the
# base's own Python: the same Dockerfile builds on the registry's python:3.11-slim-bookworm
# (CPython in /usr/local) and on the stand-in `make image` builds locally when no registry
# is reachable (a debootstrapped bookworm with Debian's python3 3.11, which is
# externally managed, PEP 668). See lab/image.sh.
ARG BASE=python:3.11-slim-bookworm

# Build stage: the virtualenv with Sluice installed.
FROM ${BASE} AS build
WORKDIR /src
RUN python3 -m venv /opt/sluice
# The dependencies first, from pyproject.toml alone: a layer that a change to Sluice's
# code does not invalidate. A build behind a TLS-inspecting proxy passes its CA bundle as
# the build secret pip-ca (lab/image.sh does); used for these steps only, never stored.
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && /opt/sluice/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' >requirements.txt \
 && /opt/sluice/bin/pip install --no-cache-dir --disable-pip-version-check -r requirements.txt "setuptools>=68" wheel
COPY README.md ./
COPY csi_driver ./csi_driver
COPY nvme_target ./nvme_target
COPY sluice_common ./sluice_common
COPY proto ./proto
RUN /opt/sluice/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation .

# Runtime stage: the host tools the node plugin and the target agent drive.
FROM ${BASE}
# Debian bookworm's own versions of the tools (security updates arrive with a rebuild)
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      nvme-cli e2fsprogs xfsprogs util-linux mount lvm2 thin-provisioning-tools kmod udev libblkid1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 sluice && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin sluice
COPY --from=build /opt/sluice /opt/sluice
# root by default: the node plugin and the agent need it; the controller's pod sets
# runAsUser 65532 (deploy/base/11-controller.yaml)
ENV PATH=/opt/sluice/bin:$PATH PYTHONUNBUFFERED=1
ENTRYPOINT ["sluice"]
CMD ["--help"]
