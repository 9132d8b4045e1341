"""Checkpoints named by Hub id (nanomolmo2/formats/hub.py): offline from a Hugging Face cache laid out as `hf download`
leaves it, loaded exactly as from their folders; online, only the files loading needs are asked for; a name that is
neither a folder nor a Hub model is a one-line error saying both."""

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from nanomolmo2.data.tokenizer import Tokenizer
from nanomolmo2.formats.hub import resolve_folder
from nanomolmo2.formats.weights import CheckpointError
from nanomolmo2.models import LanguageModel, NanoMolmo2, VisionEncoder

from .hub_cache import LLM_SHARD, VISION_SHARD, add_to_hub_cache, sharded_molmo2_folder, tiny_qwen3_folder

ROOT = Path(__file__).resolve().parents[2]
MOLMO2, QWEN3, VIT_ONLY = "allenai/Molmo2-tiny", "Qwen/Qwen3-tiny", "allenai/Molmo2-tiny-vit-only"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    tiny_qwen3_folder(root / "qwen3")
    sharded_molmo2_folder(root / "molmo2")
    cache = root / "cache"
    add_to_hub_cache(cache, QWEN3, root / "qwen3")
    add_to_hub_cache(cache, MOLMO2, root / "molmo2")
    add_to_hub_cache(cache, VIT_ONLY, root / "molmo2", leave_out=(LLM_SHARD,))  # a download without the LLM shard
    return SimpleNamespace(root=root, cache=cache, qwen3=root / "qwen3", molmo2=root / "molmo2")


@pytest.fixture
def offline(hub, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub.cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_every_loader_takes_a_hub_id(hub, offline):
    assert resolve_folder(MOLMO2).parent.parent.name == "models--allenai--Molmo2-tiny"
    assert same_weights(NanoMolmo2.from_pretrained(MOLMO2), NanoMolmo2.from_pretrained(hub.molmo2))
    assert same_weights(VisionEncoder.from_pretrained(MOLMO2), VisionEncoder.from_pretrained(hub.molmo2))
    # Seeded alike: Qwen3 has no rows for Molmo2's tokens, and the projector is new; both start random.
    for load, args in [(LanguageModel.from_pretrained, ()), (NanoMolmo2.from_molmo2_and_qwen3, (MOLMO2,))]:
        torch.manual_seed(0)
        by_id = load(*args, QWEN3)
        torch.manual_seed(0)
        local = load(*[hub.molmo2 for _ in args], hub.qwen3)
        assert same_weights(by_id, local)
    text = "<|image|>Point to the cat.<|im_end|>"
    assert Tokenizer(QWEN3).encode(text) == Tokenizer(MOLMO2).encode(text) == Tokenizer().encode(text)


def test_composing_needs_only_the_vit_shard(hub, offline):
    """A cache holding the Molmo2 checkpoint without its LLM shard: enough for Molmo2's ViT + Qwen3, not for the
    whole Molmo2, whose strict loading names the missing shard."""
    torch.manual_seed(0)
    partial = NanoMolmo2.from_molmo2_and_qwen3(VIT_ONLY, QWEN3)
    torch.manual_seed(0)
    assert same_weights(partial, NanoMolmo2.from_molmo2_and_qwen3(hub.molmo2, hub.qwen3))
    with pytest.raises(CheckpointError, match=f"shard {LLM_SHARD} listed in the index is missing"):
        NanoMolmo2.from_pretrained(VIT_ONLY)


def test_online_only_what_loading_needs_is_fetched(hub, monkeypatch):
    """A stand-in for the Hub that serves the folders and records what it is asked for."""
    import huggingface_hub

    fetched: dict[str, set[str]] = {}
    remote = {MOLMO2: hub.molmo2, QWEN3: hub.qwen3}

    def snapshot_download(repo_id, allow_patterns=None, **_):
        snapshot = hub.root / "online" / repo_id
        for file in remote[repo_id].iterdir():
            if allow_patterns is None or any(fnmatch.fnmatch(file.name, p) for p in allow_patterns):
                snapshot.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, snapshot / file.name)
                fetched.setdefault(repo_id, set()).add(file.name)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    NanoMolmo2.from_molmo2_and_qwen3(MOLMO2, QWEN3)
    assert fetched[MOLMO2] == {"config.json", "model.safetensors.index.json", "tokenizer.json", VISION_SHARD}
    assert fetched[QWEN3] == {"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"}
    NanoMolmo2.from_pretrained(MOLMO2)  # the whole model: now the LLM shard too
    assert LLM_SHARD in fetched[MOLMO2]


def test_names_that_are_neither_are_one_line_errors(offline, tmp_path):
    for name, why in [("org/absent", "HF_HUB_OFFLINE is set"), (str(tmp_path / "no" / "such"), "not a Hub id")]:
        expected = f"no folder {name} and no cached Hub model {name}: {why}"
        for load in (resolve_folder, NanoMolmo2.from_pretrained, LanguageModel.from_pretrained, Tokenizer):
            with pytest.raises(CheckpointError) as error:
                load(name)
            assert str(error.value).startswith(expected) and "\n" not in str(error.value)


def test_strict_key_checks_hold_for_hub_ids(hub, offline, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(hub.molmo2, bad)
    state = load_file(bad / VISION_SHARD)
    state["model.vision_backbone.typo.weight"] = state.pop("model.vision_backbone.image_pooling_2d.wq.weight")
    save_file(state, bad / VISION_SHARD)
    index = json.loads((bad / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.vision_backbone.typo.weight"] = VISION_SHARD
    (bad / "model.safetensors.index.json").write_text(json.dumps(index))
    add_to_hub_cache(hub.cache, "org/bad", bad)
    with pytest.raises(CheckpointError) as error:
        NanoMolmo2.from_pretrained("org/bad")
    assert "connector.pool.q_proj.weight" in str(error.value)  # missing
    assert "model.vision_backbone.typo.weight" in str(error.value)  # unexpected


def test_environment_variables_of_a_fresh_process(hub):
    """HF_HOME (its hub/ folder is the cache) and HF_HUB_OFFLINE=1, as a user sets them, in a new interpreter."""
    home = hub.root / "home"
    home.mkdir(exist_ok=True)
    if not (home / "hub").exists():
        (home / "hub").symlink_to(hub.cache)
    code = (
        "from nanomolmo2.models import NanoMolmo2; from nanomolmo2.data.tokenizer import Tokenizer; "
        f"m = NanoMolmo2.from_pretrained('{MOLMO2}'); print(repr(m.vision.pos_embed.sum().item())); "
        f"print(Tokenizer('{QWEN3}').encode('a cat'))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    local = NanoMolmo2.from_pretrained(hub.molmo2)
    assert out.stdout.split("\n")[:2] == [repr(local.vision.pos_embed.sum().item()), str(Tokenizer().encode("a cat"))]
