"""Checkpoint formats, 19->20 extension, clear errors, and refusal of code-running pickles."""

import os
import zipfile

import pytest
import torch

from pebal_core.models import build_model
from pebal_core.models import checkpoint as ck


@pytest.fixture(scope="module")
def wrn38_19():
    torch.manual_seed(0)
    return build_model("wrn38", num_classes=19)


@pytest.fixture(scope="module")
def nvidia_file(tmp_path_factory, wrn38_19):
    """A cityscapes_best.pth as NVIDIA semantic-segmentation writes it (real key names, 19 classes)."""
    sd = {f"module.{k}": v for k, v in wrn38_19.state_dict().items()}
    sd["module.criterion.nll_loss.weight"] = torch.ones(19)
    sd["module.dsn.0.weight"] = torch.randn(512, 1024, 3, 3)
    sd["module.final2.0.weight"] = torch.randn(19, 256, 1, 1)
    path = tmp_path_factory.mktemp("nv") / "cityscapes_best.pth"
    torch.save({"state_dict": sd, "epoch": 175, "mean_iu": 0.81}, path)
    return path


def test_nvidia_cityscapes_checkpoint_extends_19_to_20(nvidia_file, wrn38_19):
    model = ck.load_model(nvidia_file, arch="wrn38", seed=3)
    meta = model.checkpoint_metadata
    assert meta["source_format"] == "nvidia-cityscapes"
    assert set(meta["dropped_keys"]) == {"criterion.nll_loss.weight", "dsn.0.weight", "final2.0.weight"}
    w_new = model.state_dict()["final.6.weight"]
    w_old = wrn38_19.state_dict()["final.6.weight"]
    assert w_new.shape == (20, 256, 1, 1)
    assert torch.equal(w_new[:19], w_old)
    # row 19: Kaiming normal with fan-in 256 -> std sqrt(2/256)
    assert abs(w_new[19].std().item() - (2 / 256) ** 0.5) < 0.2 * (2 / 256) ** 0.5
    assert abs(w_new[19].mean().item()) < 0.03
    for key, value in wrn38_19.state_dict().items():
        if key != "final.6.weight":
            assert torch.equal(model.state_dict()[key], value), key


def test_extension_is_deterministic_per_seed(nvidia_file):
    a = ck.load_model(nvidia_file, arch="wrn38", seed=1).final[6].weight[19]
    b = ck.load_model(nvidia_file, arch="wrn38", seed=1).final[6].weight[19]
    c = ck.load_model(nvidia_file, arch="wrn38", seed=2).final[6].weight[19]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_pebal_reference_checkpoint_loads_exactly(tmp_path):
    model = build_model("wrn38")
    sd = {f"module.branch1.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path / "best_ad_ckpt.pth"
    torch.save({"model": sd, "epoch": 19, "optimizer": {}}, path)
    loaded = ck.load_model(path, arch="wrn38")
    assert loaded.checkpoint_metadata["source_format"] == "pebal-reference"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_project_format_roundtrip_with_metadata(tmp_path, suffix):
    model = build_model("resnet18", width=0.25)
    path = ck.save_checkpoint(model, tmp_path / f"m{suffix}", score_threshold=-4.25, train_config={"lr": 1e-5})
    loaded = ck.load_model(path)
    meta = loaded.checkpoint_metadata
    assert meta["arch"] == "resnet18" and meta["arch_kwargs"] == {"width": 0.25}
    assert meta["num_classes"] == 20 and meta["score_threshold"] == -4.25
    assert meta["train_config"] == {"lr": 1e-5}
    assert meta["normalization"]["mean"] == pytest.approx([0.485 * 255, 0.456 * 255, 0.406 * 255])
    assert meta["pebal_version"] and meta["source_format"] == "pebal" and len(meta["sha256"]) == 64
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_half_precision_file_is_smaller_and_close(tmp_path):
    model = build_model("resnet18", width=0.25)
    full = ck.save_checkpoint(model, tmp_path / "f.safetensors")
    half = ck.save_checkpoint(model, tmp_path / "h.safetensors", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = ck.load_model(half)
    w, w16 = model.final[6].weight, loaded.final[6].weight
    assert w16.dtype == torch.float32
    torch.testing.assert_close(w16, w, rtol=1e-3, atol=1e-4)


def test_bare_state_dict_and_safetensors_without_metadata(tmp_path):
    from safetensors.torch import save_file

    model = build_model("resnet18", width=0.25)
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "bare.pth")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "bare.safetensors"))
    for name in ("bare.pth", "bare.safetensors"):
        loaded = ck.load_model(tmp_path / name, arch="resnet18", width=0.25)
        assert loaded.checkpoint_metadata["source_format"] == "state_dict"
        assert torch.equal(loaded.final[6].weight, model.final[6].weight)
    with pytest.raises(ck.CheckpointError, match="does not say which architecture"):
        ck.load_model(tmp_path / "bare.pth")


def test_wrong_architecture_names_offending_keys(tmp_path):
    ck.save_checkpoint(build_model("resnet18", width=0.25), tmp_path / "r18.pt")
    sd = build_model("resnet18", width=0.25).state_dict()
    torch.save(sd, tmp_path / "bare.pth")
    with pytest.raises(ck.CheckpointError, match="holds architecture 'resnet18', not 'resnet50'"):
        ck.load_model(tmp_path / "r18.pt", arch="resnet50")
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_model(tmp_path / "bare.pth", arch="resnet50")
    text = str(err.value)
    assert "does not fit architecture 'resnet50'" in text
    assert "missing keys" in text and "layer1.0.conv3.weight" in text
    assert "shape mismatches" in text and "file (" in text


def test_missing_key_and_shape_mismatch_are_named(tmp_path):
    sd = build_model("resnet18", width=0.25).state_dict()
    del sd["bot_fine.weight"]
    sd["final.0.weight"] = torch.zeros(3, 3, 3, 3)
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_model(tmp_path / "broken.pth", arch="resnet18", width=0.25)
    text = str(err.value)
    assert "missing keys (1): bot_fine.weight" in text
    assert "unexpected keys (1): extra.weight" in text
    assert "final.0.weight: file (3, 3, 3, 3) vs model (128, 160, 3, 3)" in text


class _Payload:
    """Unpickling this runs os.system: exactly what weights_only loading must refuse."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_executing_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Payload(marker)}, path)
    with pytest.raises(ck.CheckpointError, match="refusing to load .*evil.pth.*could execute code"):
        ck.read_checkpoint(path)
    assert not marker.exists(), "the pickle's payload ran"


def test_truncated_and_missing_files(tmp_path):
    model = build_model("resnet18", width=0.25)
    good = ck.save_checkpoint(model, tmp_path / "m.pt")
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ck.CheckpointError, match="truncated or not a checkpoint"):
        ck.read_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(ck.CheckpointError, match="cannot read .* as safetensors"):
        ck.read_checkpoint(tmp_path / "cut.safetensors")
    with pytest.raises(ck.CheckpointError, match="not found"):
        ck.read_checkpoint(tmp_path / "nope.pt")


def test_failed_save_leaves_previous_file_intact(tmp_path, monkeypatch):
    model = build_model("resnet18", width=0.25)
    path = ck.save_checkpoint(model, tmp_path / "m.safetensors")
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_safetensors", crash)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"], "temporary file left behind"


def _broken_files(tmp_path) -> dict[str, tuple]:
    """Each way a checkpoint file breaks in practice, with the words its error must contain."""
    from safetensors.torch import save_file

    good = ck.save_checkpoint(build_model("resnet18", width=0.25), tmp_path / "good.pt")
    data = good.read_bytes()
    files = {}
    (tmp_path / "empty.pt").write_bytes(b"")
    files["empty.pt"] = ("empty (0 bytes)",)
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    files["cut.pt"] = ("zip archive", "truncated")
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(tmp_path / "badpickle.pt", "w") as zout:
        for name in zin.namelist():  # a well-formed archive whose pickle is cut in the middle
            body = zin.read(name)
            zout.writestr(name, body[: len(body) // 2] if name.endswith("data.pkl") else body)
    files["badpickle.pt"] = ("EOFError", "truncated")
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)) * 8)  # neither zip nor pickle
    files["noise.pt"] = ("pickled data is corrupt",)
    save_file({"w": torch.zeros(1)}, str(tmp_path / "badjson.safetensors"), metadata={"pebal": "{arch: resnet18"})
    files["badjson.safetensors"] = ("not valid JSON", "header key 'pebal'")
    return files


def test_every_broken_file_is_one_checkpoint_error_naming_file_and_cause(tmp_path):
    for name, words in _broken_files(tmp_path).items():
        with pytest.raises(ck.CheckpointError) as err:
            ck.read_checkpoint(tmp_path / name)
        text = str(err.value)
        assert str(tmp_path / name) in text, text
        assert all(w in text for w in words), (name, text)
        assert "could execute code" not in text, (name, text)  # only the unsafe pickle says so


def test_code_executing_legacy_pickle_is_refused_as_unsafe(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_legacy.pth"
    torch.save({"payload": _Payload(marker)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(ck.CheckpointError, match=r"imports posix\.system.*could execute code"):
        ck.read_checkpoint(path)
    assert not marker.exists(), "the pickle's payload ran"


@pytest.mark.parametrize("command", ["info", "predict"])
def test_cli_reports_a_broken_checkpoint_in_one_line(tmp_path, capsys, command):
    from pebal_core import cli

    files = _broken_files(tmp_path)
    image = tmp_path / "img.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(image), np.zeros((16, 16, 3), np.uint8))
    for name, words in files.items():
        path = tmp_path / name
        argv = ["checkpoint", "info", str(path)] if command == "info" else ["predict", "--model", str(path), str(image)]
        assert cli.main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("pebal: error:") and err.count("\n") == 1, err
        assert str(path) in err and all(w in err for w in words), err
