"""End to end on the real embedded model (SmolLM2-135M, Llama architecture, SiLU gate), small token budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import negdb
from negdb.models.families import act_module
from tests.ingest_helpers import cli

pytestmark = pytest.mark.slow


def test_smollm2_ingest_and_top(tmp_path: Path, smollm2) -> None:
    res = cli(tmp_path, "ingest", "--model", "smollm2-135m", "--tokens", "1024", "--seq-len", "256",
              "--md-pairs", "256", "--quiet")
    assert res.exit_code == 0, res.output
    with negdb.connect(str(tmp_path)) as cat:
        per_layer = cat.sql("SELECT layer, count(*) AS n, avg(w_dist) AS w FROM neuron_stats GROUP BY 1 ORDER BY 1")
        model = cat.sql("SELECT family, activation, n_layers, d_mlp FROM models").row(0)
        path = cat.sql("SELECT array_path FROM activations WHERE layer = 29")["array_path"][0]
    assert model == ("llama", "silu", 30, 1536)
    assert per_layer["n"].to_list() == [1536] * 30
    assert per_layer["w"].min() > 0.01  # real neurons are not exactly Gaussian

    group = zarr.open_group(str(tmp_path / Path(path).parent.parent), mode="r")
    tokens = torch.from_numpy(group["token_ids"][:].reshape(4, 256).astype(np.int64))
    seen: list[torch.Tensor] = []
    hook = act_module(smollm2.model, smollm2.family, 29).register_forward_hook(
        lambda _m, args, _o: seen.append(args[0].reshape(-1, 1536)))
    try:
        with torch.inference_mode():
            smollm2.model(input_ids=tokens[:2])
    finally:
        hook.remove()
    stored = zarr.open_array(str(tmp_path / path), mode="r")[:512]
    np.testing.assert_array_equal(stored, seen[0].numpy().astype(np.float16))

    top = cli(tmp_path, "top", "--k", "1")
    assert top.exit_code == 0 and "smollm2-135m@final" in top.output
    assert sum(1 for line in top.output.splitlines() if line.startswith("│")) == 1 + 30  # header + layers
