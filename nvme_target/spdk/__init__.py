"""The SPDK backend: thin lvols in an lvstore, exported by SPDK's nvmf_tgt, driven
through SPDK's own Python JSON-RPC client."""
