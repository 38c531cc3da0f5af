"""The in-memory fake holds to the Backend contract (as KernelBackend does in the lab)."""

import pytest

from tests.contract.auth_contract import AuthContract
from tests.contract.backend_contract import BackendContract, GroupSnapshotContract
from tests.fakes.memory_backend import MemoryBackend


class TestMemoryBackend(BackendContract, GroupSnapshotContract, AuthContract):
    @pytest.fixture
    def backend(self):
        return MemoryBackend()
