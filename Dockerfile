# Sluice: one image for every mode, chosen by flag (the `sluice` entry point):
#   controller   sluice --mode=controller   (runs as non-root: see deploy/)
#   node plugin  sluice --mode=node         (privileged: mounts, /dev, cgroups)
#   target agent sluice --mode=agent        (privileged: configfs, LVM)
# Build stage: wheels of Sluice and its dependencies.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY csi_driver ./csi_driver
COPY nvme_target ./nvme_target
COPY sluice_common ./sluice_common
COPY proto ./proto
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: the host tools the node plugin and the target agent drive.
FROM python:3.11-slim-bookworm
# Debian bookworm's own versions of the tools (security updates arrive with a rebuild)
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      nvme-cli e2fsprogs xfsprogs util-linux mount lvm2 thin-provisioning-tools kmod udev libblkid1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
 && groupadd --gid 65532 sluice && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin sluice
# root by default: the node plugin and the agent need it; the controller's pod sets
# runAsUser 65532 (deploy/base/11-controller.yaml)
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["sluice"]
CMD ["--help"]
