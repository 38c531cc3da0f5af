"""Node-side host adapters: NVMe/TCP fabrics, devices by UUID, filesystems, mounts,
staging records. Each module talks to one part of the host; node.service composes them."""
