"""What the import path refuses, each with a 4xx error that says why, before any serving worker opens
the file; nothing is written to the store."""

from __future__ import annotations

import zipfile

import bentoml
import numpy as np
import pytest

from core.errors import CodeFormatNotAllowed, Forbidden, ModelFailed, ModelRefused, SignatureRequired
from models.importer import ImportOptions, import_model
from models.settings import ImportSettings
from runners.loader import load_runner
from tests.models import makers

CODE = ImportOptions(allow_code=True)
PLAIN = ImportOptions()


def refused(name, path, settings, options=PLAIN, error=ModelRefused, match=None):
    with pytest.raises(error, match=match) as info:
        import_model(name, "v1", path, options, settings)
    assert 400 <= info.value.status < 500
    with pytest.raises(bentoml.exceptions.NotFound):
        bentoml.models.get(f"{name}:v1")
    return info.value


@pytest.mark.parametrize("filename", ["m.skops", "m.onnx", "m.json", "m.ubj", "m.txt", "m.pt", "m.pt2", "m.joblib"])
def test_a_corrupt_file_of_each_format(tmp_path, name, settings, filename):
    path = tmp_path / filename
    path.write_bytes(b"PK\x03\x04 this is not a model" * 10 if filename.endswith(("skops", "pt2")) else b"\x08\x99garbage\xff" * 50)
    refused(name, path, settings, CODE)


def test_a_pickle_under_a_skops_name(tmp_path, name, settings):
    made = makers.diabetes_ridge(tmp_path, "joblib")
    path = made.path.rename(tmp_path / "diabetes.skops")
    refused(name, path, settings, CODE, match="pickle saved under a skops name")


def test_pickle_formats_while_not_allowed(tmp_path, name, settings):
    made = makers.diabetes_ridge(tmp_path, "joblib")
    refused(name, made.path, ImportSettings(), CODE, CodeFormatNotAllowed, "RTSERVE_IMPORT_ALLOW_CODE_FORMATS")
    refused(name, made.path, settings, ImportOptions(), CodeFormatNotAllowed, "--allow-code")
    torchscript = makers.iris_torchscript(tmp_path)
    refused(name, torchscript.path, ImportSettings(), CODE, CodeFormatNotAllowed)


def test_untrusted_skops_types_are_listed(tmp_path, name, settings):
    made = makers.wine_forest_skops(tmp_path)
    strict = ImportSettings(trusted_types=[])
    refused(name, made.path, strict, error=ModelRefused, match=r"\['sklearn.tree._tree.Tree'\]")
    trusting = ImportOptions(trust=("sklearn.tree._tree.Tree",))
    refused(name, made.path, strict, trusting, Forbidden, "does not let a deploy trust")
    model = import_model(name, "v1", made.path, trusting, ImportSettings(trusted_types=[], allow_deploy_trust=True))
    assert model.info.metadata["trusted_by_deploy"] == ["sklearn.tree._tree.Tree"]
    assert load_runner(f"{name}:v1", "cpu").run(made.x)["label"].tolist() == made.expected["label"].tolist()


def test_torchscript_without_a_signature_says_what_to_declare(tmp_path, name, settings):
    made = makers.iris_torchscript(tmp_path)
    error = refused(name, made.path, settings, CODE, SignatureRequired)
    assert "inputs:" in error.message and "model.yaml" in error.message


def test_output_not_matching_the_declared_signature(tmp_path, name, settings):
    made = makers.iris_torchscript(tmp_path)
    (tmp_path / "wrong.yaml").write_text("inputs:\n  - {name: x, datatype: FP32, shape: [-1, 4]}\n"
                                         "outputs:\n  - {name: logits, datatype: FP32, shape: [-1, 5]}\n")
    refused(name, made.path, settings, ImportOptions(allow_code=True, config=tmp_path / "wrong.yaml"),
            match="output 'logits' has shape")


def test_output_mismatch_while_serving_is_a_model_error_naming_it(tmp_path, name, settings, runtimes_importable):
    np.save(tmp_path / "weights.npy", np.ones(3, dtype=np.float32))
    (tmp_path / "model.yaml").write_text("implementation: tests.models.runtimes:Drifting\ntask: tensors\n"
                                         "inputs:\n  - {name: x, datatype: FP32, shape: [-1, 3]}\n")
    import_model(name, "v1", tmp_path / "weights.npy", ImportOptions(allow_code=True, config=tmp_path / "model.yaml"), settings)
    runner = load_runner(f"{name}:v1", "cpu")
    assert runner.run(np.ones((2, 3), dtype=np.float32))["score"].shape == (2, 1)
    with pytest.raises(ModelFailed, match="output 'score' has shape") as info:
        runner.run(np.ones((5, 3), dtype=np.float32))
    assert info.value.code == "model_error"


def test_an_aotinductor_package(tmp_path, name, settings):
    path = tmp_path / "compiled.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("compiled/archive_format", "pt2")
        archive.writestr("compiled/data/aotinductor/model/model.so", b"\x7fELF" + b"\0" * 64)
        archive.writestr("compiled/data/aotinductor/model/model.cpp", "// generated")
    refused(name, path, settings, CODE, match="AOTInductor")


@pytest.mark.parametrize("bad", ["../etc", "a/b", "UPPER", "", "x" * 80, "a b"])
def test_a_model_name_with_path_characters(tmp_path, settings, bad):
    made = makers.diabetes_ridge(tmp_path)
    with pytest.raises(ModelRefused, match="not allowed"):
        import_model(bad, "v1", made.path, ImportOptions(), settings)
    with pytest.raises(ModelRefused, match="not allowed"):
        import_model("fine", bad or "..", made.path, ImportOptions(), settings)


def test_symlinks_and_external_data_outside_the_folder(tmp_path, name, settings):
    import onnx

    made = makers.iris_onnx_two_by_two(tmp_path)
    folder = tmp_path / "linked"
    folder.mkdir()
    (folder / "two.onnx").symlink_to(made.path)
    refused(name, folder, settings, match="symlink")
    refused(name, folder / "two.onnx", settings, match="symlink")
    outside = tmp_path / "outside"
    outside.mkdir()
    onnx.save_model(onnx.load(str(made.path)), str(outside / "two.onnx"), save_as_external_data=True,
                    location="weights.bin", size_threshold=0)
    graph = onnx.load(str(outside / "two.onnx"), load_external_data=False)
    for tensor in graph.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../elsewhere/weights.bin"
    escaping = tmp_path / "escaping"
    escaping.mkdir()
    onnx.save_model(graph, str(escaping / "two.onnx"))
    refused(name, escaping / "two.onnx", settings, match="outside the model's folder")


def test_a_name_that_exists_is_a_conflict(tmp_path, name, settings):
    from core.errors import Conflict

    made = makers.diabetes_ridge(tmp_path)
    import_model(name, "v1", made.path, ImportOptions(), settings)
    with pytest.raises(Conflict):
        import_model(name, "v1", made.path, ImportOptions(), settings)
