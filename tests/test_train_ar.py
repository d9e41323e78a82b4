"""The AR trainer: sequences, the visual-rows loss, schedules, exact resume, bundles, bad input."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from test_bundle import tiny_vt

from simplear.bundle import load_bundle
from simplear.model import build_model
from simplear.train.ar import train_ar
from simplear.train.config import (
    RECIPES,
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    apply_overrides,
    recipe,
)
from simplear.train.logging import read_log
from simplear.train.loss import ARLoss, enable_activation_checkpointing
from simplear.train.optim import lr_factor
from simplear.train.sequences import IGNORE, InMemoryTokenDataset, SequenceBuilder
from simplear.vocab import Vocabulary, train_text_tokenizer

COLORS = ["red", "blue", "green", "yellow"]


def toy_dataset(n=32, seed=0):
    """Codes that depend on the caption's colour, so a model can learn something in a few steps."""
    g = torch.Generator().manual_seed(seed)
    caps, codes = [], []
    for i in range(n):
        c = i % 4
        caps.append([f"a {COLORS[c]} square", f"a photo of one {COLORS[c]} square"])
        codes.append(torch.full((4, 4), c * 4) + torch.randint(0, 2, (4, 4), generator=g))
    return InMemoryTokenDataset(torch.stack(codes), caps)


def toy_config(**kw):
    base = dict(model=ModelConfig(preset="tiny", context=64), data=DataConfig(text_vocab_size=280),
                optim=OptimConfig(lr=3e-3, warmup_steps=2, schedule="cosine"),
                eval=EvalConfig(samples=False, val_batches=1), batch_size=8, micro_batch_size=4,
                max_steps=6, log_every=1, checkpoint_every=2, progress=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary(train_text_tokenizer([c for caps in toy_dataset().captions for c in caps], 280), 16)


def test_sequence_layout(vocab):
    ds = toy_dataset()
    builder = SequenceBuilder(vocab, context=64, caption_dropout=0.0, caption_choice="first")
    batch = builder.build([ds[0], ds[1]], [0, 1])
    prompt = vocab.encode_prompt(ds[0]["captions"][0])
    n = len(prompt) + 16 - 1
    assert batch.input_ids[0, : len(prompt)].tolist() == prompt
    assert batch.image_mask[0].sum() == 16 and batch.image_mask[0, len(prompt) - 1]  # <|soi|> predicts code 0
    assert torch.equal(vocab.ids_to_codes(batch.targets[0][batch.image_mask[0]]), ds[0]["codes"].reshape(-1))
    assert (batch.targets[0, n:] == IGNORE).all() and (batch.input_ids[0, n:] == vocab.pad_id).all()


def test_caption_dropout_is_seeded_per_position(vocab):
    ds = toy_dataset()
    builder = SequenceBuilder(vocab, 64, caption_dropout=0.3, seed=5)
    uncond = vocab.encode_unconditional()
    drops = [builder.prompt_ids(ds[0]["captions"], p) == uncond for p in range(2000)]
    assert 0.26 < sum(drops) / 2000 < 0.34
    again = SequenceBuilder(vocab, 64, caption_dropout=0.3, seed=5)
    assert [again.prompt_ids(ds[0]["captions"], p) for p in range(50)] == [builder.prompt_ids(ds[0]["captions"], p) for p in range(50)]
    picks = {tuple(builder.prompt_ids(ds[0]["captions"], p)) for p in range(50)}
    assert len(picks) == 3  # short caption, long caption, unconditional


def test_input_noise_swaps_image_inputs_only_and_keeps_targets(vocab):
    items = [toy_dataset()[i] for i in range(32)]
    clean = SequenceBuilder(vocab, 64, 0.0).build(items, list(range(32)))
    noisy = SequenceBuilder(vocab, 64, 0.0, input_noise=0.25).build(items, list(range(32)))
    assert torch.equal(noisy.targets, clean.targets) and torch.equal(noisy.image_mask, clean.image_mask)
    changed = noisy.input_ids != clean.input_ids
    # Only code inputs change: never the prompt, the <|soi|> that predicts code 0, or the pads.
    code_inputs = clean.image_mask.clone()
    code_inputs[torch.arange(32), clean.image_mask.float().argmax(1)] = False
    assert not changed[~code_inputs].any()
    assert 0.18 < changed[code_inputs].float().mean() < 0.32  # 15 x 32 = 480 inputs at p = 0.25
    swapped = noisy.input_ids[changed]
    assert ((swapped >= vocab.visual_offset) & (swapped < vocab.visual_offset + 16)).all()  # still codes
    again = SequenceBuilder(vocab, 64, 0.0, input_noise=0.25).build(items, list(range(32)))
    assert torch.equal(again.input_ids, noisy.input_ids)  # seeded per position, so resume stays exact
    with pytest.raises(ValueError, match="input_noise"):
        SequenceBuilder(vocab, 64, 0.0, input_noise=1.0)
    with pytest.raises(ValueError, match="input_noise"):
        toy_config(data=DataConfig(text_vocab_size=280, input_noise=-0.1))


def test_sequence_longer_than_context_is_refused(vocab):
    builder = SequenceBuilder(vocab, context=12, caption_dropout=0.0)
    with pytest.raises(ValueError, match="exceeds the context"):
        builder.build([toy_dataset()[0]], [0])


def test_loss_matches_full_softmax_over_visual_rows(vocab):
    torch.manual_seed(0)
    model = build_model("tiny", vocab.vocab_size, seed=0)
    batch = SequenceBuilder(vocab, 64, 0.0).build([toy_dataset()[i] for i in range(3)], [0, 1, 2])
    loss_sum, count = ARLoss(model, vocab.visual_offset, 16, chunk=7)(batch.input_ids, batch.targets, batch.image_mask)
    logits = model(batch.input_ids).logits[..., vocab.visual_slice]
    ref = torch.nn.functional.cross_entropy(logits[batch.image_mask], batch.targets[batch.image_mask] - vocab.visual_offset, reduction="sum")
    assert count == 48 and torch.allclose(loss_sum, ref, atol=1e-4)
    grad = torch.autograd.grad(loss_sum, model.model.embed_tokens.weight)[0]
    grad_ref = torch.autograd.grad(ref, model.model.embed_tokens.weight)[0]
    assert torch.allclose(grad, grad_ref, atol=1e-5)
    with_text, _ = ARLoss(model, vocab.visual_offset, 16, text_loss_weight=0.5)(batch.input_ids, batch.targets, batch.image_mask)
    assert with_text > loss_sum


def test_schedules():
    cos = OptimConfig(lr=1.0, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    assert [lr_factor(s, cos, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, cos, 20) == pytest.approx(1.0) and lr_factor(20, cos, 20) == pytest.approx(0.1)
    assert lr_factor(12, cos, 20) == pytest.approx(0.55)
    const = OptimConfig(warmup_steps=0)
    assert lr_factor(0, const, 10) == lr_factor(9, const, 10) == 1.0


def test_recipes_and_overrides():
    for name in RECIPES:
        assert recipe(name).recipe == name
    paper = recipe("simplear-0.5b-pretrain")
    assert (paper.optim.lr, paper.optim.weight_decay, paper.optim.schedule) == (1e-4, 0.01, "constant")
    assert paper.model.context == 1536 and recipe("simplear-0.5b-sft").model.context == 4608
    cfg = apply_overrides(recipe("shapes-pretrain"), ["optim.lr=3e-4", "max_steps=1e3", "data.shards=a,b",
                                                      "model.init_from=none", "model.gradient_checkpointing=true"])
    assert cfg.optim.lr == 3e-4 and cfg.max_steps == 1000 and cfg.data.shards == ("a", "b")
    assert cfg.model.init_from is None and cfg.model.gradient_checkpointing is True
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for bad in (["optim.lrr=1"], ["max_steps=ten"], ["optim=1"], ["lr"]):
        with pytest.raises(ValueError):
            apply_overrides(cfg, bad)
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe("nope")


KILLED_RUN = """
import os, signal, sys, torch
sys.path.insert(0, sys.argv[2])
torch.set_num_threads(min(2, os.cpu_count() or 1))
import simplear.train.checkpoint as ck
from test_bundle import tiny_vt
from test_train_ar import toy_config, toy_dataset
from simplear.train.ar import train_ar
real, calls = ck.save_file, []
def save_then_die(tensors, path, metadata=None):
    real(tensors, path, metadata=metadata)
    calls.append(path)
    if len(calls) == 2:  # the step-4 checkpoint, half written
        os.kill(os.getpid(), signal.SIGKILL)
ck.save_file = save_then_die
ds = toy_dataset()
train_ar(toy_config(), sys.argv[1], dataset=ds, val_dataset=ds, visual_tokenizer=tiny_vt())
"""


def test_resume_continues_exactly_and_ends_with_a_bundle(tmp_path):
    ds, vt = toy_dataset(), tiny_vt()
    full = train_ar(toy_config(), tmp_path / "full", dataset=ds, val_dataset=ds, visual_tokenizer=vt)
    # The same run in a subprocess that is SIGKILLed in the middle of writing its step-4
    # checkpoint; then resumed here from the step-2 checkpoint.
    part = tmp_path / "part"
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, str(part), os.path.dirname(__file__)],
                            capture_output=True, text=True, timeout=240)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [r["step"] for r in read_log(part, "train")] == [1, 2, 3, 4]
    assert [p.name for p in (part / "checkpoints").iterdir() if not p.name.startswith(".")] == ["step-000002"]
    assert not (part / "bundle").exists()
    train_ar(toy_config(), part, resume=True, dataset=ds, val_dataset=ds, visual_tokenizer=vt)
    a = [(r["step"], r["loss"], r["lr"]) for r in read_log(full, "train")]
    b = [(r["step"], r["loss"], r["lr"]) for r in read_log(part, "train")]
    assert [s for s, _, _ in b] == list(range(1, 7))
    for (sa, la, ra), (sb, lb, rb) in zip(a, b):
        assert sa == sb and la == pytest.approx(lb, rel=1e-6, abs=1e-7) and ra == pytest.approx(rb)
    assert a[-1][1] < a[0][1]  # it learns
    assert len(list((full / "checkpoints").iterdir())) == 2  # keep-last-K
    # The run ends with a bundle that load_bundle loads, with the resolved config beside it.
    bundle = load_bundle(full, device="cpu")  # a run folder loads as its bundle
    assert bundle.config.grid == (4, 4) and bundle.config.image_size == 16
    assert json.loads((full / "bundle" / "train_config.json").read_text())["max_steps"] == 6
    assert read_log(full, "eval")[-1]["val_loss"] > 0
    # Fine-tuning (SFT) starts from the run; a second stage with --init-from RUN.
    sft = train_ar(apply_overrides(toy_config(max_steps=2, model=ModelConfig(preset="tiny", context=64, init_from=str(full))),
                                   ["eval.cfg_scale=2.0", "eval.temperature=0.7"]),
                   tmp_path / "sft", dataset=ds, visual_tokenizer=vt)
    assert read_log(sft, "start")[0]["init"].startswith("bundle:")
    # Its bundle samples with the setting the trainer evaluated with.
    sampling = load_bundle(sft, device="cpu").config.sampling
    assert (sampling.cfg_scale, sampling.temperature) == (2.0, 0.7)
    assert read_log(sft, "train")[0]["loss"] < a[0][1]


def test_bad_input_fails_before_any_step(tmp_path):
    ds, vt = toy_dataset(), tiny_vt()
    long_caption = InMemoryTokenDataset(ds.codes[:2], [[" ".join(f"w{i}q{i * 7}" for i in range(40))], ["a red square"]])
    with pytest.raises(ValueError, match="caption of sample 0"):
        train_ar(toy_config(), tmp_path / "long", dataset=long_caption, visual_tokenizer=vt)
    assert not (tmp_path / "long" / "checkpoints").exists()
    with pytest.raises(FileNotFoundError, match="resume"):
        train_ar(toy_config(), tmp_path / "never", resume=True, dataset=ds, visual_tokenizer=vt)
    with pytest.raises(ValueError, match="multiple"):
        train_ar(toy_config(batch_size=6, micro_batch_size=4), tmp_path / "b", dataset=ds, visual_tokenizer=vt)
    with pytest.raises(ValueError, match="visual_tokenizer"):
        train_ar(toy_config(), tmp_path / "novt", dataset=ds)
    with pytest.raises(FileNotFoundError):
        train_ar(toy_config(model=ModelConfig(preset="tiny", context=64, init_from=str(tmp_path / "missing"))),
                 tmp_path / "x", dataset=ds, visual_tokenizer=vt)
    # A code beyond the visual tokenizer's codebook: shards from another tokenizer.
    wrong = InMemoryTokenDataset(ds.codes[:8] + 16, ds.captions[:8])
    with pytest.raises(ValueError, match="codes must lie"):
        train_ar(toy_config(max_steps=1), tmp_path / "wrong", dataset=wrong, visual_tokenizer=vt)


def test_gradient_checkpointing_gives_the_same_gradients(vocab):
    model = build_model("tiny", vocab.vocab_size, seed=0).train()
    batch = SequenceBuilder(vocab, 64, 0.0).build([toy_dataset()[i] for i in range(2)], [0, 1])
    loss_module = ARLoss(model, vocab.visual_offset, 16)
    plain = torch.autograd.grad(loss_module(batch.input_ids, batch.targets, batch.image_mask)[0], list(model.parameters()))
    enable_activation_checkpointing(model)
    ckpt = torch.autograd.grad(loss_module(batch.input_ids, batch.targets, batch.image_mask)[0], list(model.parameters()))
    for a, b in zip(plain, ckpt):
        assert torch.allclose(a, b, atol=1e-6)


def test_init_from_a_plain_qwen_folder(tmp_path):
    """A Qwen2 folder without SimpleAR's tokens: they are added, the vocabulary grows by the codebook."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for caps in toy_dataset().captions for c in caps for w in c.split()})
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<unk>", *words])}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")
    qwen = tmp_path / "qwen"
    build_model("tiny", len(tok), seed=0).save_pretrained(qwen)
    tok.save_pretrained(qwen)
    run = train_ar(toy_config(max_steps=1, model=ModelConfig(preset="tiny", context=64, init_from=str(qwen))),
                   tmp_path / "run", dataset=toy_dataset(), visual_tokenizer=tiny_vt())
    start = read_log(run, "start")[0]
    assert start["init"].startswith("qwen:")
    from transformers import AutoTokenizer

    text = len(AutoTokenizer.from_pretrained(qwen)) + 7  # + SimpleAR's seven special tokens
    assert start["visual_offset"] == text and start["vocab_size"] == text + 16
    assert load_bundle(run / "bundle", device="cpu").model.config.vocab_size == start["vocab_size"]


def test_throughput_measurement_runs():
    from simplear.train.throughput import ThroughputConfig, measure_throughput

    out = measure_throughput(ThroughputConfig(preset="tiny", text_vocab=50, codebook_size=16, image_tokens=16,
                                              prompt_tokens=4, micro_batch_size=2, steps=1, warmup=0, device="cpu"))
    assert out["sequence"] == 19 and out["tokens_per_s"] > 0 and out["flops_per_token"] > 0
    assert "mfu" not in out  # no known peak for a CPU
    assert measure_throughput(ThroughputConfig(preset="tiny", text_vocab=50, codebook_size=16, image_tokens=16,
                                               prompt_tokens=4, micro_batch_size=2, steps=1, warmup=0, device="cpu",
                                               peak_tflops=1.0))["mfu"] > 0


def test_fsq_visual_init_in_the_trainer_and_old_runs_still_resume(tmp_path):
    from simplear.model import init_visual_rows, visual_code_vectors
    from simplear.train.ar_setup import check_resume_config

    ds, vt = toy_dataset(), tiny_vt()
    fsq = ModelConfig(preset="tiny", context=64, visual_init="fsq")
    run = train_ar(toy_config(max_steps=1, model=fsq, optim=OptimConfig(lr=0.0)), tmp_path / "fsq",
                   dataset=ds, visual_tokenizer=vt)
    # lr 0: the saved rows are the initial ones, which follow the FSQ grid as init_visual_rows makes them.
    saved = load_bundle(run / "bundle", device="cpu")
    offset = saved.vocab.visual_offset
    expected = build_model("tiny", saved.vocab.vocab_size, seed=0)
    init_visual_rows(expected, offset, visual_code_vectors(vt), seed=0)
    assert torch.allclose(saved.model.get_input_embeddings().weight[offset:],
                          expected.get_input_embeddings().weight[offset:])
    # A trained bundle keeps its rows: asking for a new init there is refused before any step.
    with pytest.raises(ValueError, match="drop the override"):
        train_ar(toy_config(max_steps=1, model=ModelConfig(preset="tiny", context=64, init_from=str(run),
                                                            visual_init="fsq")),
                 tmp_path / "sft", dataset=ds, visual_tokenizer=vt)
    with pytest.raises(ValueError, match="visual_init"):
        apply_overrides(toy_config(), ["model.visual_init=zeros"])
    # A run saved before model.visual_init existed resumes: the missing key takes its default.
    old = json.loads((run / "config.json").read_text())
    del old["model"]["visual_init"]
    (run / "config.json").write_text(json.dumps(old))
    check_resume_config(run / "config.json", toy_config(max_steps=1, optim=OptimConfig(lr=0.0)))
    with pytest.raises(ValueError, match="model"):
        check_resume_config(run / "config.json", toy_config(max_steps=1, model=fsq, optim=OptimConfig(lr=0.0)))


def test_compiled_loss_module_trains_alike_and_saves_plain_names(tmp_path, monkeypatch):
    # compile=True compiles the loss module in place. Inductor's C++ build is too slow for the
    # unit suite, so the module compiles with dynamo's eager backend here: the graph capture is real,
    # the kernels are torch's own.
    compiled = []

    def compile_eagerly(self, **kwargs):
        compiled.append(type(self).__name__)
        torch.nn.Module.compile(self, backend="eager")

    monkeypatch.setattr(ARLoss, "compile", compile_eagerly, raising=False)
    ds, vt = toy_dataset(), tiny_vt()
    plain = train_ar(toy_config(max_steps=3, precision="fp32"), tmp_path / "plain", dataset=ds, visual_tokenizer=vt)
    assert compiled == []
    fast = train_ar(toy_config(max_steps=3, precision="fp32", compile=True, stop_after=2), tmp_path / "fast",
                    dataset=ds, visual_tokenizer=vt)
    assert compiled == ["ARLoss"]
    assert json.loads((fast / "config.json").read_text())["compile"] is True
    # How the step runs does not change what is trained: the run resumes with compile switched off.
    train_ar(toy_config(max_steps=3, precision="fp32"), fast, resume=True, dataset=ds, visual_tokenizer=vt)
    assert compiled == ["ARLoss"]
    a, b = read_log(plain, "train"), read_log(fast, "train")
    assert [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-4)
    keys = load_bundle(fast, device="cpu").model.state_dict().keys()
    assert keys == load_bundle(plain, device="cpu").model.state_dict().keys()
    assert not any("_orig_mod" in k for k in keys)


def test_fine_tuning_a_bundle_needs_its_encoder_not_its_decoder():
    """SFT/GRPO on a bundle checks the shards' tokenizer makes the bundle's codes: the encoder must
    match; a decoder of its own (trained with --freeze-encoder) is fine."""
    import torch

    from simplear.bundle import DEFAULT_ASSET
    from simplear.train.ar_setup import _check_same_visual_tokenizer
    from simplear.visual_tokenizers import load_visual_tokenizer

    bundle = DEFAULT_ASSET
    tokenizer = load_visual_tokenizer(bundle / "visual_tokenizer")
    with torch.no_grad():
        tokenizer.decoder.conv_out.bias.add_(0.01)
    _check_same_visual_tokenizer(bundle, tokenizer)
    with torch.no_grad():
        tokenizer.encoder.conv_in.bias.add_(0.01)
    with pytest.raises(ValueError, match="encoders differ"):
        _check_same_visual_tokenizer(bundle, tokenizer)
