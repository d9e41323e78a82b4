"""Hub ids resolve through a local huggingface_hub cache; missing ids fail with a clear hint."""

import pytest

from simplear.hub import is_hub_id, resolve_path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_cache(home, repo_id, files):
    repo = home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for name, text in files.items():
        (snap / name).write_text(text)
    return snap


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def test_hub_id_shape():
    assert is_hub_id("Daniel0724/SimpleAR-0.5B-RL")
    assert is_hub_id("nvidia/Cosmos-1.0-Tokenizer-DV8x16x16")
    assert not is_hub_id("runs/a/b") and not is_hub_id("./x/y") and not is_hub_id("plain")


def test_resolves_from_local_cache(offline_home):
    snap = fake_cache(offline_home, "Daniel0724/SimpleAR-0.5B-RL", {"config.json": "{}"})
    assert resolve_path("Daniel0724/SimpleAR-0.5B-RL") == snap


def test_local_folder_wins(tmp_path, offline_home):
    folder = tmp_path / "owner"
    (folder / "name").mkdir(parents=True)
    assert resolve_path(folder / "name") == folder / "name"


def test_missing_id_suggests_local_folder(offline_home):
    with pytest.raises(FileNotFoundError) as err:
        resolve_path("nvidia/Cosmos-1.0-Tokenizer-DV8x16x16", what="visual tokenizer")
    message = str(err.value)
    assert "nvidia/Cosmos-1.0-Tokenizer-DV8x16x16" in message and "local folder" in message
    assert "HF_HUB_OFFLINE" in message


def test_missing_path_is_not_a_hub_lookup(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_path(tmp_path / "nope" / "deeper")


def test_load_bundle_from_hub_cache(offline_home):
    from test_bundle import CAPTIONS, tiny_vt

    from simplear.bundle import Bundle, load_bundle, make_bundle_config, save_bundle
    from simplear.model import build_model
    from simplear.vocab import Vocabulary, train_text_tokenizer

    vt = tiny_vt()
    vocab = Vocabulary(train_text_tokenizer(CAPTIONS, 290), vt.codebook_size)
    snap = fake_cache(offline_home, "someone/shapes-model", {})
    snap.rmdir()
    save_bundle(snap, Bundle(build_model("tiny", vocab.vocab_size, seed=0), vocab, vt, make_bundle_config(vocab, vt, 16)))
    loaded = load_bundle("someone/shapes-model", device="cpu")
    assert loaded.path == snap and loaded.config.grid == (4, 4)
