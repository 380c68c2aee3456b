"""Shared pytest set-up: tests never touch the network; one shared SmolLM2 fixture."""

from __future__ import annotations

import os
import sys

import pytest

# No test may reach the Hugging Face hub. Set before huggingface_hub reads its constants at import.
os.environ["HF_HUB_OFFLINE"] = "1"
if "huggingface_hub.constants" in sys.modules:  # imported early by a plugin: patch the constant too
    sys.modules["huggingface_hub.constants"].HF_HUB_OFFLINE = True

from negdb.config import cache_dir  # noqa: E402  (light: no torch)

# The negdb cache as the session started (tests may point NEGDB_CACHE elsewhere with monkeypatch).
_CACHE_AT_START = cache_dir()


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M (alias ``smollm2-135m``) as a ``LoadedModel``, float32 on CPU, loaded once.

    Converted from the GGUF once into ``$NEGDB_CACHE`` (as set when the session started) or ``~/.cache/negdb``
    and reused across sessions. Shared by every test that asks: remove any hooks you add.
    """
    from negdb.errors import NegdbError
    from negdb.models.checkpoints import select
    from negdb.models.loading import load
    from negdb.models.registry import resolve

    try:
        source = resolve("smollm2-135m")
    except NegdbError as err:
        pytest.skip(str(err))
    return load(source, select(source, "final")[0], cache_dir=_CACHE_AT_START)


@pytest.fixture(scope="module")
def short_wikitext():
    """WikiText-2 cut to its first characters for the module that asks (``tests.ablate_helpers``): the ablate and
    analyze runs read a few hundred tokens of it, and tokenizing the whole test file costs seconds per evaluation."""
    from negdb.evals import registry
    from tests.ablate_helpers import short_wikitext_loader

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry, "load_items", short_wikitext_loader(registry.load_items))
        yield
