import pytest

from editpersist.errors import InputError
from editpersist.io import atomic_dir, atomic_path, load_tensors, save_tensors, write_json


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in target.iterdir()] == ["a"]


def test_tensors_roundtrip_and_corruption_names_file(tmp_path):
    import torch

    path = tmp_path / "delta.safetensors"
    save_tensors(path, {"w": torch.arange(6.0).reshape(2, 3)})
    assert torch.equal(load_tensors(path)["w"], torch.arange(6.0).reshape(2, 3))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(InputError, match="delta.safetensors: not a readable safetensors file"):
        load_tensors(path)
    with pytest.raises(InputError, match="missing.safetensors: file not found"):
        load_tensors(tmp_path / "missing.safetensors")


def test_write_json_is_sorted_and_complete(tmp_path):
    write_json(tmp_path / "x.json", {"b": 1, "a": 2})
    assert (tmp_path / "x.json").read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
