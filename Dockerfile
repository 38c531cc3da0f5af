# Sluice: one image for every mode (controller, node, target agent), chosen by flag.
# Build stage: a wheel of Sluice and its dependencies.
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
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      nvme-cli e2fsprogs xfsprogs util-linux lvm2 thin-provisioning-tools kmod udev \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# The entry point (`python -m csi_driver --mode ...`) is added with the CSI services.
