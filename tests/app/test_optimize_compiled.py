"""`rtserve optimize --to compiled` of a tiny `torch.export` MLP: an AOTInductor package, compiled by the server
from a version the operator let in, stored as `torch_aoti` and served by every worker, answering as its source.

Not part of `make test`: the compile alone took 28 s on an idle machine and over 3 minutes on the loaded 2-core
one. `make test-compiled` runs it.
"""

from __future__ import annotations

import bentoml
import numpy as np

from app import client
from tests.models import makers


def test_an_aotinductor_package_of_a_pt2_mlp_served_beside_its_source(deploys, cli, tmp_path):
    made = makers.wine_pt2(tmp_path)
    client.deploy_model("opt-aoti", made.path, allow_code=True)
    status, out, err = cli("optimize", "opt-aoti:v1", "--to", "compiled")
    assert status == 0, err
    assert "aoti_compile_and_package" in out and "agreement 100.00%" in out
    meta = bentoml.models.get("opt-aoti:v1-compiled").info.metadata
    assert meta["format"] == "torch_aoti" and meta["source"]["origin"] == "optimize" and meta["sha256"]
    assert meta["optimization"]["max_abs_diff"]["output"] < 1e-4
    # Inductor's fused kernels may round differently from eager PyTorch: 1e-4 absolute.
    got = deploys.infer("opt-aoti", made.x, "v1-compiled")["output"]
    np.testing.assert_allclose(got, made.expected["output"], atol=1e-4, rtol=0)
