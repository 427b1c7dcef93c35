"""An uploaded tar is extracted only when every member is a plain file or folder inside the target."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from core.errors import ModelRefused, PayloadTooLarge
from models.archive import extract, stem

LIMITS = {"max_bytes": 10_000, "max_files": 5}


def tar(path: Path, *members: tarfile.TarInfo | tuple[str, bytes], gz: bool = False) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w") as t:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                t.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                t.addfile(info, io.BytesIO(m[1]))
    return path


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def test_a_folder_and_its_files(tmp_path):
    archive = tar(tmp_path / "net.tar.gz", ("net.pt", b"x"), ("model.yaml", b"task: tensors\n"), gz=True)
    root = extract(archive, tmp_path / "out" / stem(archive.name), **LIMITS)
    assert root.name == "net" and sorted(p.name for p in root.iterdir()) == ["model.yaml", "net.pt"]


def test_one_top_folder_is_the_model_folder(tmp_path):
    archive = tar(tmp_path / "m.tgz", special("mymodel", tarfile.DIRTYPE), ("mymodel/iris.skops", b"x"), gz=True)
    assert extract(archive, tmp_path / "out", **LIMITS) == tmp_path / "out" / "mymodel"


@pytest.mark.parametrize("member, words", [
    (("../escape.onnx", b"x"), "outside"),
    (("/etc/escape.onnx", b"x"), "outside"),
    (special("link.onnx", tarfile.SYMTYPE, "/etc/passwd"), "link"),
    (special("hard.onnx", tarfile.LNKTYPE, "model.onnx"), "link"),
    (special("dev", tarfile.CHRTYPE), "not a file"),
    (special("fifo", tarfile.FIFOTYPE), "not a file"),
])
def test_refused_before_anything_is_written(tmp_path, member, words):
    archive = tar(tmp_path / "bad.tar", ("model.onnx", b"x"), member)
    with pytest.raises(ModelRefused, match=words):
        extract(archive, tmp_path / "out", **LIMITS)
    assert not (tmp_path / "out").exists()


def test_caps_on_files_and_extracted_bytes(tmp_path):
    many = tar(tmp_path / "many.tar", *[(f"f{i}", b"x") for i in range(6)])
    with pytest.raises(ModelRefused, match="more than 5 files"):
        extract(many, tmp_path / "a", **LIMITS)
    bomb = tar(tmp_path / "bomb.tar.gz", ("zeros.bin", b"\0" * 20_000), gz=True)
    assert bomb.stat().st_size < 10_000
    with pytest.raises(PayloadTooLarge):
        extract(bomb, tmp_path / "b", **LIMITS)


def test_not_a_tar(tmp_path):
    (tmp_path / "x.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ModelRefused, match="not a readable tar"):
        extract(tmp_path / "x.tar", tmp_path / "out", **LIMITS)
