"""Never a wrong number in silence: the probe's silent wrong results (issue "Never a wrong number in silence",
causes 1, 2, 5 and 6), each reproduced at a tiny size. Every test failed on the code before its fix.

- a rerun resumes a row only when the model file, the evaluation data, the preprocessing and the profile's
  content are the same (not merely the model's name and the data's path);
- a model whose classes are not the data's is refused, whatever the data (the built-in scenes included);
- a stage file swapped after export is refused where it would run (predict, bench --artifact);
- NaN anywhere (a weight, a reference's scores) fails by name, and a zero or non-finite std is refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from segedge.cli.main import main
from segedge.core.results import ResultsStore

SIZE = 32
PROFILE = """
name = "{name}"
description = "tiny"
backend = "onnxruntime"
precisions = ["fp32"]
input_size = [32, 32]
threads = 1
warmup_runs = 1
min_runs = 3
min_seconds = 0.0
[tolerance]
fp32 = {tolerance}
"""


def conv_onnx(path: Path, classes: int = 2, seed: int = 0, nan: bool = False) -> Path:
    """A 1x1 conv from RGB to ``classes`` scores at a fixed 32x32, written with onnx.helper as other tools do."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((classes, 3, 1, 1)).astype(np.float32)
    if nan:
        weight[0, 0, 0, 0] = np.nan
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "theirs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes, SIZE, SIZE])],
        initializer=[numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def folder(root: Path, classes: int = 2, seed: int = 0, images: int = 8) -> Path:
    """A folder dataset with split lists: images whose red channel says the class, labels to score against."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(images):
        mask = rng.integers(0, classes, (SIZE, SIZE)).astype(np.uint8)
        rgb = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
        Image.fromarray(rgb).save(root / "images" / f"im{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
        names.append(f"im{i}")
    (root / "splits" / "train.txt").write_text("\n".join(names[: images // 2]) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(names[images // 2:]) + "\n")
    (root / "classes.txt").write_text("\n".join(f"c{c}" for c in range(classes)) + "\n")
    return root


def bench(tmp_path: Path, *extra: str, profile: str = "cpu") -> int:
    return main(["bench", "--profile", profile, "--precisions", "fp32", "--quick", "--quiet",
                 "--results", str(tmp_path / "results.sqlite"), "--out", str(tmp_path / "export"), *extra])


def rows(tmp_path: Path) -> list[dict]:
    with ResultsStore(tmp_path / "results.sqlite") as store:
        return store.rows()


# 1. a row's identity ---------------------------------------------------------------------------------------

def test_a_rerun_on_other_data_at_the_same_path_measures_again(tmp_path, capsys):
    model = conv_onnx(tmp_path / "a.onnx")
    data = folder(tmp_path / "data", seed=0)
    assert bench(tmp_path, "--onnx", f"x={model}", "--data", f"folder:{data}") == 0
    shutil.rmtree(data)
    folder(tmp_path / "data", seed=1)  # the user swaps the dataset under the same path
    capsys.readouterr()
    assert bench(tmp_path, "--onnx", f"x={model}", "--data", f"folder:{data}") == 0
    assert "resumed" not in capsys.readouterr().err
    first, second = rows(tmp_path)
    assert first["data_fingerprint"] != second["data_fingerprint"]
    assert first["miou"] != second["miou"]


def test_a_rerun_with_another_model_file_or_another_dataset_measures_again(tmp_path, capsys):
    a, b = conv_onnx(tmp_path / "a.onnx", seed=0), conv_onnx(tmp_path / "b.onnx", seed=1)
    data_a, data_b = folder(tmp_path / "A", seed=0), folder(tmp_path / "B", seed=1)
    for model, data in ((a, data_a), (a, data_b), (b, data_b)):
        assert bench(tmp_path, "--onnx", f"x={model}", "--data", f"folder:{data}") == 0
        assert "resumed" not in capsys.readouterr().err
    assert bench(tmp_path, "--onnx", f"x={b}", "--data", f"folder:{data_b}") == 0  # the same again: resumed
    assert "resumed" in capsys.readouterr().err
    stored = rows(tmp_path)
    assert len(stored) == 3 and len({r["identity"] for r in stored}) == 3
    with ResultsStore(tmp_path / "results.sqlite") as store:
        latest = store.latest_rows()
    assert {r["data"] for r in latest} == {f"folder:{data_a}", f"folder:{data_b}"}  # each row names its data
    from segedge.flows.report import render

    table = render(latest)
    assert f"folder:{data_a} #{stored[0]['data_fingerprint'][:8]}" in table and f"folder:{data_b}" in table
    on_b = next(r for r in latest if r["data"] == f"folder:{data_b}")
    assert on_b["model_fingerprint"] == stored[2]["model_fingerprint"]  # the newest model on B, not a's row


def test_other_preprocessing_measures_again(tmp_path, capsys):
    model, data = conv_onnx(tmp_path / "a.onnx"), folder(tmp_path / "data")
    assert bench(tmp_path, "--onnx", f"x={model}", "--data", f"folder:{data}") == 0
    capsys.readouterr()
    assert bench(tmp_path, "--onnx", f"x={model}", "--data", f"folder:{data}", "--mean", "0", "--std", "1") == 0
    assert "resumed" not in capsys.readouterr().err
    assert len(rows(tmp_path)) == 2


def test_a_custom_profile_named_like_a_shipped_one_is_not_served_its_rows(tmp_path, capsys):
    model, data = conv_onnx(tmp_path / "a.onnx"), folder(tmp_path / "data")
    strict = tmp_path / "strict.toml"
    strict.write_text(PROFILE.format(name="cpu", tolerance=0.0))
    loose = tmp_path / "loose.toml"
    loose.write_text(PROFILE.format(name="cpu", tolerance=50.0))
    assert bench(tmp_path, "--onnx", f"x={model}", "--data", f"folder:{data}", profile=str(strict)) == 0
    capsys.readouterr()
    assert bench(tmp_path, "--onnx", f"x={model}", "--data", f"folder:{data}", profile=str(loose)) == 0
    assert "resumed" not in capsys.readouterr().err
    assert [r["tolerance"] for r in rows(tmp_path)] == [0.0, 50.0]


def test_a_row_from_before_identities_is_never_resumed(tmp_path, capsys):
    model, data = conv_onnx(tmp_path / "a.onnx"), folder(tmp_path / "data")
    assert bench(tmp_path, "--onnx", f"x={model}", "--data", f"folder:{data}") == 0
    import sqlite3

    with sqlite3.connect(tmp_path / "results.sqlite") as db:  # what an older segedge wrote: no identity
        db.execute("UPDATE measurements SET identity = NULL")
    capsys.readouterr()
    assert bench(tmp_path, "--onnx", f"x={model}", "--data", f"folder:{data}") == 0
    assert "resumed" not in capsys.readouterr().err


# 2. one class check --------------------------------------------------------------------------------------

def test_bench_refuses_a_4_class_model_on_the_10_class_built_in_scenes(tmp_path, capsys):
    model = conv_onnx(tmp_path / "four.onnx", classes=4)
    assert bench(tmp_path, "--onnx", f"x={model}") == 1
    err = capsys.readouterr().err
    assert "predicts 4 classes" in err and "has 10" in err and "Traceback" not in err
    stored = rows(tmp_path)  # a failed row that says why, never a figure
    assert stored and all(r["status"] == "failed" and r["miou"] is None for r in stored)


def test_bench_of_an_artifact_refuses_data_with_other_classes(tmp_path, capsys):
    model, data = conv_onnx(tmp_path / "four.onnx", classes=4), folder(tmp_path / "data", classes=4)
    assert main(["export", "--onnx", str(model), "--data", f"folder:{data}", "--out", str(tmp_path / "export"),
                 "--quiet", "--threads", "1"]) == 0
    artifact = next((tmp_path / "export").glob("four/*/manifest.json")).parent
    capsys.readouterr()
    assert bench(tmp_path, "--artifact", str(artifact)) == 1  # on the built-in scenes: 10 classes
    assert "predicts 4 classes" in capsys.readouterr().err


# 5. a swapped stage file -----------------------------------------------------------------------------------

@pytest.fixture
def exported(tmp_path) -> Path:
    model, data = conv_onnx(tmp_path / "m.onnx"), folder(tmp_path / "data")
    assert main(["export", "--onnx", str(model), "--data", f"folder:{data}", "--out", str(tmp_path / "export"),
                 "--quiet", "--threads", "1"]) == 0
    return next((tmp_path / "export").glob("m/*/manifest.json")).parent


@pytest.mark.parametrize("how", ["copy", "symlink"])
def test_predict_refuses_a_stage_file_swapped_after_export(exported, tmp_path, how, capsys):
    other = conv_onnx(tmp_path / "other.onnx", classes=2, seed=7)
    sim = exported / "model.sim.onnx"
    sim.unlink()
    if how == "copy":
        shutil.copyfile(other, sim)
    else:
        sim.symlink_to(other)
    image = tmp_path / "frame.png"
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(image)
    code = main(["predict", str(exported / "model.sim.onnx"), "--source", str(image), "--out", str(tmp_path / "masks")])
    err = capsys.readouterr().err
    assert code != 0 and "replaced or edited after export" in err and "Traceback" not in err
    assert not list((tmp_path / "masks").glob("*")) if (tmp_path / "masks").exists() else True


def test_bench_of_an_artifact_refuses_a_swapped_reference(exported, tmp_path, capsys):
    onnx_file = exported / "model.onnx"
    conv_onnx(tmp_path / "other.onnx", seed=7)
    shutil.copyfile(tmp_path / "other.onnx", onnx_file)
    code = bench(tmp_path, "--artifact", str(exported), "--data", f"folder:{tmp_path / 'data'}")
    err = capsys.readouterr().err
    assert code != 0 and "replaced or edited after export" in err
    assert all(r["status"] == "failed" and r["miou"] is None for r in rows(tmp_path))


def test_predictor_refuses_a_stage_file_edited_in_place(exported):
    from segedge.core.errors import ArtifactError
    from segedge.flows.predict import Predictor

    with Predictor(exported) as predictor:  # intact: runs
        assert predictor(np.zeros((SIZE, SIZE, 3), np.uint8)).shape == (SIZE, SIZE)
    with open(exported / "model.sim.onnx", "ab") as handle:  # one byte more: another file
        handle.write(b"\0")
    with pytest.raises(ArtifactError, match="replaced or edited after export"):
        Predictor(exported)


# 6. vacuous success ----------------------------------------------------------------------------------------

def test_an_onnx_with_a_nan_weight_fails_by_name(tmp_path, capsys):
    model, data = conv_onnx(tmp_path / "nan.onnx", nan=True), folder(tmp_path / "data")
    code = main(["export", "--onnx", str(model), "--data", f"folder:{data}", "--out", str(tmp_path / "export"),
                 "--quiet", "--threads", "1"])
    err = capsys.readouterr().err
    assert code != 0 and "NaN or inf" in err and "Traceback" not in err
    assert not list((tmp_path / "export").glob("*/*/model.onnx"))


def test_a_nan_candidate_is_never_within_the_gate():
    from segedge.backends.base import Runner
    from segedge.core.errors import ParityError
    from segedge.verify.compare import Reference, accuracy_on_active_runner

    class Nan(Runner):
        backend = "nan"

        def infer(self, batch):
            out = np.zeros((len(batch), 2, 4, 4), np.float32)
            out[:, :, 0, 0] = np.nan
            return out

    logits = np.zeros((2, 2, 4, 4), np.float32)
    logits[:, 1] = 1.0
    reference = Reference(np.zeros((2, 3, 4, 4), np.float32), np.ones((2, 4, 4), np.uint8), logits, 2)
    with pytest.raises(ParityError, match="NaN or inf"):
        accuracy_on_active_runner(Nan.__new__(Nan), reference)


@pytest.mark.parametrize("std", ["0", "nan", "-1", "inf"])
def test_a_zero_or_non_finite_std_is_refused_before_any_work(tmp_path, std, capsys):
    model = conv_onnx(tmp_path / "m.onnx")
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--onnx", str(model), "--std", std, "--out", str(tmp_path / "export")])
    assert exit_.value.code == 2 and "std" in capsys.readouterr().err
    assert not (tmp_path / "export").exists()


def test_a_manifest_whose_std_is_zero_is_refused_by_predict(exported):
    from segedge.core.errors import SegedgeError
    from segedge.flows.predict import Predictor

    manifest = json.loads((exported / "manifest.json").read_text())
    manifest["normalization"]["std"] = [0]
    (exported / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SegedgeError, match="std"):
        with Predictor(exported) as predictor:
            predictor(np.zeros((SIZE, SIZE, 3), np.uint8))


def test_the_library_refuses_a_nan_mean():
    from segedge.core.errors import SegedgeError
    from segedge.data.model_io import ModelIO

    with pytest.raises(SegedgeError, match="mean nan"):
        ModelIO().feed(np.zeros((1, 4, 4, 3), np.uint8), (float("nan"), 0.0, 0.0), (1.0, 1.0, 1.0))


# 8. names, 11. messages that mislead ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../pwn", "a/b", ".hidden", "x y"])
def test_a_model_name_that_is_not_plain_is_refused_before_any_work(tmp_path, name, capsys):
    model = conv_onnx(tmp_path / "m.onnx")
    code = bench(tmp_path, "--onnx", f"{name}={model}")
    err = capsys.readouterr().err
    assert code == 1 and "is not a plain name" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "results.sqlite").exists() and not (tmp_path / "export").exists()
    assert not (tmp_path.parent / "pwn").exists()


def test_an_empty_onnx_and_a_directory_say_what_they_are(tmp_path, capsys):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert bench(tmp_path, "--onnx", f"x={empty}") == 1
    assert "is empty (0 bytes)" in capsys.readouterr().err
    assert bench(tmp_path, "--onnx", f"x={tmp_path}") == 1
    assert "is a directory" in capsys.readouterr().err


def test_a_copy_that_fills_the_disk_names_the_destination(tmp_path, monkeypatch, capsys):
    import errno
    import shutil as shutil_module

    model, data = conv_onnx(tmp_path / "m.onnx"), folder(tmp_path / "data")

    def full(src, dst, **_):  # what shutil's sendfile copy raises on ENOSPC: source as filename, destination as filename2
        raise OSError(errno.ENOSPC, "No space left on device", str(src), None, str(dst))

    monkeypatch.setattr(shutil_module, "copyfile", full)
    code = main(["export", "--onnx", str(model), "--data", f"folder:{data}", "--out", str(tmp_path / "export"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "No space left on device" in err
    assert err.index(str(tmp_path / "export")) < err.index(str(model))  # the destination first, the source as context


def test_an_outside_onnx_failing_its_gate_names_its_own_reference(tmp_path):
    from segedge.core.errors import ParityError
    from segedge.core.precision import STAGES, ParityGate
    from segedge.flows.export import ExportConfig, export_model

    model, data = conv_onnx(tmp_path / "m.onnx"), folder(tmp_path / "data")
    gates = {name: s.gate for name, s in STAGES.items()}
    gates["fp16"] = ParityGate(min_argmax_agreement=1.01, max_miou_drop=None)  # no artifact can pass
    with pytest.raises(ParityError) as failed:
        export_model(ExportConfig(model="", onnx=model, data=f"folder:{data}", precisions=("fp16",), gates=gates,
                                  store=tmp_path / "export", threads=1))
    assert "against the given FP32 ONNX" in str(failed.value) and "torch" not in str(failed.value)


def test_masks_without_a_labelled_pixel_are_refused_not_scored_nan(tmp_path, capsys):
    model, data = conv_onnx(tmp_path / "m.onnx"), folder(tmp_path / "data")
    for mask in (data / "masks").glob("*.png"):
        Image.fromarray(np.full((SIZE, SIZE), 255, np.uint8)).save(mask)
    code = bench(tmp_path, "--onnx", f"x={model}", "--data", f"folder:{data}")
    out, err = capsys.readouterr()
    assert code == 1 and "hold no labelled pixel" in out + err and "nan" not in (out + err).lower().replace("nan ", "")


def test_predict_lists_only_the_precisions_its_backend_runs(exported, tmp_path, capsys):
    image = tmp_path / "frame.png"
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(image)
    code = main(["predict", str(exported), "--precision", "int8", "--source", str(image), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "has no int8 artifact" in err and "bf16" not in err


# 7. tampered manifests ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("edit, what", [
    (lambda m: m["io"].update(colour="yes"), "colour"),
    (lambda m: m["config"].update(input_size=[0, 0]), "input_size"),
    (lambda m: m["config"].update(input_size="32x32"), "input_size"),
    (lambda m: m.update(io="NCHW"), "io"),
    (lambda m: m["normalization"].update(mean=["a"]), "normalization"),
])
def test_a_tampered_manifest_is_one_line_in_predict_and_bench(exported, tmp_path, edit, what, capsys):
    manifest = json.loads((exported / "manifest.json").read_text())
    edit(manifest)
    (exported / "manifest.json").write_text(json.dumps(manifest))
    image = tmp_path / "frame.png"
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(image)
    assert main(["predict", str(exported), "--source", str(image), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and what in err and "manifest" in err
    code = bench(tmp_path, "--artifact", f"m={exported}", "--data", f"folder:{tmp_path / 'data'}")
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err and what in out + err
    assert all(r["status"] == "failed" for r in rows(tmp_path)) if (tmp_path / "results.sqlite").exists() else True
