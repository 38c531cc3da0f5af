"""Where kubelet puts a pod's cgroup, for both cgroup drivers and every QoS class, and
what Sluice refuses as a pod UID (the real files are exercised in tests/lab/test_qos.py)."""

from __future__ import annotations

import pytest

from csi_driver.node.cgroups import pod_cgroup_candidates
from sluice_common.errors import InvalidArgument

UID = "0b0e5c1e-1234-4000-8000-00000000beef"


def test_every_layout_kubelet_uses_is_tried():
    assert pod_cgroup_candidates(UID) == [
        "kubepods.slice/kubepods-pod0b0e5c1e_1234_4000_8000_00000000beef.slice",
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b0e5c1e_1234_4000_8000_00000000beef.slice",
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0b0e5c1e_1234_4000_8000_00000000beef.slice",
        f"kubepods/pod{UID}",
        f"kubepods/burstable/pod{UID}",
        f"kubepods/besteffort/pod{UID}",
    ]


@pytest.mark.parametrize("uid", ["../../etc", "pod/../x", "", "a b", "x" * 65])
def test_a_uid_that_is_not_a_pod_uid_is_invalid(uid):
    with pytest.raises(InvalidArgument, match="pod.uid"):
        pod_cgroup_candidates(uid)
