import json

import pytest

from segedge.core.artifacts import ArtifactDir, atomic_path, atomic_write_json, config_hash, sha256_file
from segedge.core.errors import ArtifactError


def test_atomic_path_renames_only_on_success(tmp_path):
    final = tmp_path / "a.bin"
    final.write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half-writ")
            raise RuntimeError("crash mid-write")
    assert final.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]  # no temp file left behind
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"new")
    assert final.read_bytes() == b"new"


def test_atomic_path_refuses_an_empty_result(tmp_path):
    with pytest.raises(ArtifactError, match="no data"):
        with atomic_path(tmp_path / "x.onnx"):
            pass
    assert not (tmp_path / "x.onnx").exists()


def test_config_hash_is_order_independent_and_sensitive():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_reusable_stage_requires_same_config_and_intact_file(tmp_path):
    art = ArtifactDir(tmp_path)
    f = tmp_path / "model.onnx"
    f.write_bytes(b"onnx")
    manifest = {"stages": {"onnx": {"file": "model.onnx", "sha256": sha256_file(f), "config": {"k": 1}}}}
    assert art.reusable_stage(manifest, "onnx", {"k": 1})
    assert art.reusable_stage(manifest, "onnx", {"k": 2}) is None
    f.write_bytes(b"tampered")
    assert art.reusable_stage(manifest, "onnx", {"k": 1}) is None


def test_corrupt_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable.*delete"):
        ArtifactDir(tmp_path).read_manifest()


def test_atomic_write_json_roundtrip(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": [1, 2]}


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=["022", "002", "077"])
def test_atomic_writes_follow_the_umask(tmp_path, umask):
    """A store shared by a team: files end as 0666 & ~umask, as open() would make them, not mkstemp's 0600."""
    import os
    import stat

    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "model.onnx") as tmp:
            tmp.write_bytes(b"graph")
        atomic_write_json(tmp_path / "manifest.json", {"a": 1})
    finally:
        os.umask(old)
    for name in ("model.onnx", "manifest.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
