"""The DH-HMAC-CHAP part of the Backend contract (nvme_target/dhchap.py), run against
every backend beside BackendContract: a publish with `auth` makes well-formed secrets
for that host (a controller secret too for bidirectional), a new publish after an
unpublish makes new ones, only hosts the volume is exported to have credentials, and
a bad mode is INVALID_ARGUMENT naming the field. Connecting with them is proven on the
real kernel (tests/lab/test_dhchap.py)."""

from __future__ import annotations

import pytest

from nvme_target.dhchap import well_formed
from sluice_common.errors import InvalidArgument, NotFound
from tests.contract.backend_contract import HOST_A, HOST_B, MiB


class AuthContract:
    def test_a_publish_makes_the_hosts_secrets(self, backend):
        vol = backend.create_volume("pvc-auth", 32 * MiB)
        backend.add_host(vol.id, HOST_A, auth="bidirectional")
        backend.add_host(vol.id, HOST_B, auth="unidirectional")
        a, b = backend.host_credentials(vol.id, HOST_A), backend.host_credentials(vol.id, HOST_B)
        assert a.mode == "bidirectional" and well_formed(a.secret) and well_formed(a.ctrl_secret)
        assert b.mode == "unidirectional" and well_formed(b.secret) and b.ctrl_secret == ""
        assert len({a.secret, a.ctrl_secret, b.secret}) == 3
        assert a.secret not in repr(a) and a.secret not in repr(backend.get_export(vol.id))
        backend.unexport_volume(vol.id)

    def test_none_means_no_secrets(self, backend):
        vol = backend.create_volume("pvc-noauth", 32 * MiB)
        backend.add_host(vol.id, HOST_A)
        creds = backend.host_credentials(vol.id, HOST_A)
        assert (creds.mode, creds.secret, creds.ctrl_secret) == ("none", "", "")
        backend.unexport_volume(vol.id)

    def test_a_new_publish_replaces_the_secrets(self, backend):
        vol = backend.create_volume("pvc-reauth", 32 * MiB)
        backend.add_host(vol.id, HOST_A, auth="bidirectional")
        first = backend.host_credentials(vol.id, HOST_A)
        backend.remove_host(vol.id, HOST_A)
        with pytest.raises(NotFound):
            backend.host_credentials(vol.id, HOST_A)
        backend.add_host(vol.id, HOST_A, auth="bidirectional")
        again = backend.host_credentials(vol.id, HOST_A)
        assert again.secret != first.secret and again.ctrl_secret != first.ctrl_secret
        backend.unexport_volume(vol.id)
        with pytest.raises(NotFound):
            backend.host_credentials(vol.id, HOST_A)

    def test_only_exported_hosts_have_credentials(self, backend):
        vol = backend.create_volume("pvc-who", 32 * MiB)
        with pytest.raises(NotFound):
            backend.host_credentials(vol.id, HOST_A)
        backend.add_host(vol.id, HOST_A, auth="unidirectional")
        with pytest.raises(NotFound):
            backend.host_credentials(vol.id, HOST_B)
        backend.unexport_volume(vol.id)

    def test_a_bad_mode_is_refused_naming_the_field(self, backend):
        vol = backend.create_volume("pvc-badauth", 32 * MiB)
        with pytest.raises(InvalidArgument, match="auth"):
            backend.add_host(vol.id, HOST_A, auth="chap")
        assert backend.get_export(vol.id) is None or HOST_A not in backend.get_export(vol.id).hosts
