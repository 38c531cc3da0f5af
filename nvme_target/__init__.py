"""Sluice storage node: thin volumes and their NVMe/TCP exports, and the target agent."""
