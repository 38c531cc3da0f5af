"""The committed stubs are exactly what grpcio-tools generates from proto/."""

from sluice_proto import _generate


def test_regenerating_the_stubs_changes_nothing(tmp_path):
    fresh = _generate.generate(tmp_path)
    committed = _generate.generated_files()
    assert [p.name for p in fresh] == [p.name for p in committed]
    for new, old in zip(fresh, committed, strict=True):
        assert new.read_bytes() == old.read_bytes(), (
            f"{old} is stale: run `make proto` and commit the result"
        )
