"""GRPO on a tiny model: the policy's log-probs are the sampler's, the loop optimises what it
samples (the reward rises), and checkpoints resume exactly."""

import dataclasses
import json

import pytest
import torch

from simplear.bundle import Bundle, make_bundle_config
from simplear.model import build_model
from simplear.sampling.batch import make_prompt_batch
from simplear.sampling.config import SamplingConfig
from simplear.sampling.reference import reference_sample
from simplear.train.grpo import GRPOConfig, train_grpo
from simplear.train.grpo_rollout import GuidedPolicy, check_policy_config
from simplear.vocab import Vocabulary, train_text_tokenizer

CAPTIONS = ["a photo of a red circle", "a photo of two blue squares", "a green star left of a heart"]


class GreyTokenizer:
    """A stand-in visual tokenizer: code k decodes to a flat grey patch of level k (brighter = higher)."""

    kind = "fsq"
    codebook_size = 8
    downsample = 4

    def decode(self, codes):
        level = codes.float() / (self.codebook_size - 1) * 2 - 1
        return level[:, None].repeat_interleave(4, 2).repeat_interleave(4, 3).expand(-1, 3, -1, -1)

    def to(self, device):
        return self

    def save_pretrained(self, directory):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "grey.json").write_text("{}")


@pytest.fixture(autouse=True)
def _one_thread():
    # The models here are tiny: one thread avoids oversubscription on a shared 2-core machine
    # (measured ~10x faster than two threads under load).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def brightness(images, prompts, metadata):
    return (images.mean(dim=(1, 2, 3)) + 1) / 2


def _bundle(seed=0, cfg_scale=2.0):
    from simplear.bundle import SamplingDefaults

    vocab = Vocabulary(train_text_tokenizer(CAPTIONS, vocab_size=300), GreyTokenizer.codebook_size)
    model = build_model("tiny", vocab.vocab_size, seed=seed)
    config = make_bundle_config(vocab, GreyTokenizer(), image_size=8,
                                sampling=SamplingDefaults(cfg_scale=cfg_scale, temperature=1.0))
    return Bundle(model=model, vocab=vocab, visual_tokenizer=GreyTokenizer(), config=config)


def _randomised_tiny(seed=0):
    model = build_model("tiny", 36, seed=seed).eval()
    with torch.no_grad():  # larger weights than the default init, so distributions are far from flat
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_policy_distribution_is_what_the_sampler_draws_from(cfg_scale):
    # Greedy sampling picks the argmax of the sampler's distribution at every step; the teacher-
    # forced policy must put its argmax on the same codes (same padding, positions and CFG rows).
    model = _randomised_tiny()
    cond, uncond = [[1, 2, 3, 4], [5, 6], [7, 8, 9]], [1, 2]
    gen = torch.Generator().manual_seed(0)
    greedy = reference_sample(model, cond, [uncond], visual_offset=20, codebook_size=16, num_tokens=12,
                              generator=gen, config=SamplingConfig(cfg_scale=cfg_scale, top_k=1)).codes.clone()
    assert len(set(greedy.flatten().tolist())) > 2  # a non-trivial sequence
    policy = GuidedPolicy(model, 20, 16, SamplingConfig(cfg_scale=cfg_scale, temperature=1.0))
    batch = make_prompt_batch(cond, [uncond], policy.config, pad_id=0)
    logd = policy.log_distribution(batch, greedy)
    assert torch.equal(logd.argmax(-1), greedy)
    assert torch.allclose(logd.exp().sum(-1), torch.ones(3, 12))
    assert torch.allclose(policy(batch, greedy), logd.gather(-1, greedy[..., None])[..., 0])


def test_policy_log_probs_match_step_by_step_cfg_by_hand():
    # Position 0: log softmax((u + s(c - u)) / T) of the last prompt token's visual logits.
    model = _randomised_tiny(1)
    cond, uncond, s, t = [[3, 4, 5]], [1, 2], 2.5, 0.7
    policy = GuidedPolicy(model, 20, 16, SamplingConfig(cfg_scale=s, temperature=t))
    codes = torch.tensor([[5, 9]])
    got = policy(make_prompt_batch(cond, [uncond], policy.config, pad_id=0), codes)
    with torch.no_grad():
        c = model(torch.tensor([cond[0] + [25]])).logits[0, -2:, 20:36]
        u = model(torch.tensor([uncond + [25]])).logits[0, -2:, 20:36]
    expected = torch.log_softmax((u + s * (c - u)) / t, -1)[[0, 1], [5, 9]]
    assert torch.allclose(got[0], expected, atol=1e-5)


def test_truncated_or_greedy_sampling_is_refused():
    for bad in (SamplingConfig(top_k=5), SamplingConfig(top_p=0.9), SamplingConfig(temperature=0.0)):
        with pytest.raises(ValueError):
            check_policy_config(bad)
    with pytest.raises(ValueError, match="group_size"):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match="warmup_steps"):
        GRPOConfig(warmup_steps=-1)


def _run(tmp_path, steps, resume=False, evaluate=None, **kw):
    cfg = GRPOConfig(out=str(tmp_path), steps=steps, prompts_per_step=2, group_size=8, passes=2, lr=1e-2,
                     beta=kw.pop("beta", 0.0), eval_every=kw.pop("eval_every", 0), checkpoint_every=1,
                     micro_batch_size=8, seed=0, device="cpu", resume=resume, progress=False, **kw)
    return train_grpo(cfg, bundle=_bundle(), reward=brightness, evaluate=evaluate)


def test_reward_rises_when_the_loop_optimises_what_it_samples(tmp_path):
    torch.manual_seed(0)
    def evaluate(bundle, step):  # stands in for the judge
        return {"overall": step / 10, "tags": {}}

    _run(tmp_path, steps=10, beta=0.02, evaluate=evaluate, eval_every=5)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    log = [r for r in records if r["kind"] == "train"]
    assert [(r["step"], r["judge_score"]) for r in records if r["kind"] == "eval"] == [(0, 0.0), (5, 0.5), (10, 1.0)]
    assert [r["step"] for r in log] == list(range(1, 11))
    first = sum(r["reward_mean"] for r in log[:3]) / 3
    last = sum(r["reward_mean"] for r in log[-3:]) / 3
    assert last > first + 0.2, (first, last)
    for key in ("reward_std", "flat_groups", "kl", "clip_fraction", "tokens_per_s", "lr"):
        assert key in log[-1]
    assert log[-1]["kl"] > 0  # the policy moved away from the reference
    saved = json.loads((tmp_path / "bundle" / "simplear.json").read_text())
    assert saved["sampling"]["cfg_scale"] == 2.0 and saved["sampling"]["top_k"] is None
    assert saved["extra"]["grpo"]["steps"] == 10
    from simplear.train.plot import plot_run  # the model card's plot of reward and judge score

    assert plot_run(tmp_path).stat().st_size > 0


def test_resume_continues_exactly(tmp_path):
    full = tmp_path / "full"
    part = tmp_path / "part"
    _run(full, steps=3, beta=0.05)
    _run(part, steps=2, beta=0.05)
    # A kill after step 3 was logged but before its checkpoint: the resumed run redoes step 3.
    with open(part / "log.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "reward_mean": -1.0}) + "\n")
    with pytest.raises(ValueError, match="--resume"):
        _run(part, steps=3, beta=0.05)
    _run(part, steps=3, beta=0.05, resume=True)
    a = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (part / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        assert ra["reward_mean"] == pytest.approx(rb["reward_mean"], abs=1e-6)
        assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-5)
    from safetensors.torch import load_file

    wa = load_file(str(full / "checkpoints" / "step-000003" / "model.safetensors"))
    wb = load_file(str(part / "checkpoints" / "step-000003" / "model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    assert sorted(p.name for p in (part / "checkpoints").iterdir()) == ["step-000002", "step-000003"]


def test_old_log_probs_from_the_first_pass_equal_a_separate_forward():
    import copy

    from simplear.train.grpo import optimise_batch
    from simplear.train.grpo_rollout import sample_rollout

    config = GRPOConfig(passes=2, micro_batch_size=3, lr=1e-2, beta=0.0)
    results = []
    for separate in (True, False):
        model = copy.deepcopy(_randomised_tiny(2))
        policy = GuidedPolicy(model, 20, 16, SamplingConfig(cfg_scale=2.0))
        rollout = sample_rollout(policy, [[1, 2, 3]] * 4 + [[4, 5]] * 4, [1, 2], num_tokens=5,
                                 generator=torch.Generator().manual_seed(0), pad_id=0, old_logprobs=separate)
        assert (rollout.old_logprobs is not None) == separate
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
        adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, 0.0, -1.0, -1.0])
        optimise_batch(policy, rollout, adv, optimizer, config, torch.Generator().manual_seed(0))
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-6)
    with pytest.raises(ValueError, match="whole batch"):
        optimise_batch(policy, rollout, adv, optimizer, GRPOConfig(minibatch_size=4), torch.Generator())


def test_bf16_autocast_changes_only_the_teacher_forced_forwards_and_keeps_ratios_like_for_like():
    import copy

    from simplear.train.grpo import optimise_batch
    from simplear.train.grpo_rollout import sample_rollout
    from simplear.utils import autocast_factory

    bf16 = autocast_factory("bf16", "cpu")
    prompts, adv = [[1, 2, 3]] * 4 + [[4, 5]] * 4, torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, 0.0, -1.0, -1.0])
    rollouts = {}
    for name, autocast in (("fp32", autocast_factory("fp32", "cpu")), ("bf16", bf16)):
        policy = GuidedPolicy(_randomised_tiny(2), 20, 16, SamplingConfig(cfg_scale=2.0))
        rollouts[name] = sample_rollout(policy, prompts, [1, 2], num_tokens=5, generator=torch.Generator().manual_seed(0),
                                        pad_id=0, reference=policy, autocast=autocast)
    a, b = rollouts["fp32"], rollouts["bf16"]
    assert torch.equal(a.codes, b.codes)  # the sampler is not under autocast
    assert b.old_logprobs.dtype == torch.float32
    assert not torch.equal(a.old_logprobs, b.old_logprobs)  # the forward did run in bf16 ...
    assert torch.allclose(a.old_logprobs, b.old_logprobs, atol=0.3)  # ... and stays near float32
    # Old log-probs kept from a bf16 rollout equal the loss's own first-pass bf16 forward, so the
    # first update is the same either way (with float32 ones it would not be: ratios != 1).
    config = GRPOConfig(passes=1, micro_batch_size=3, lr=1e-2, beta=0.0, precision="bf16")
    results = []
    for old in (b.old_logprobs, None):
        model = copy.deepcopy(_randomised_tiny(2))
        policy = GuidedPolicy(model, 20, 16, SamplingConfig(cfg_scale=2.0))
        rollout = dataclasses.replace(b, old_logprobs=old)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
        stats = optimise_batch(policy, rollout, adv, optimizer, config, torch.Generator().manual_seed(0), bf16)
        assert all(s.clip_fraction == 0 for s in stats)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-6)
    with pytest.raises(ValueError, match="precision"):
        GRPOConfig(precision="fp16")


def test_training_prompts_avoid_held_out_pairs_and_cover_every_tag(tmp_path):
    from simplear.data.shapes import DEFAULT_HELDOUT, TAGS
    from simplear.train.grpo_prompts import prompts_for_step, read_prompt_file, training_prompts

    pool = training_prompts(GRPOConfig(seed=0), pool_size=600)
    held = {tuple(p) for p in DEFAULT_HELDOUT}
    assert not any((c.get("color"), c["class"]) in held for m in pool for c in m["include"])
    assert {m["tag"] for m in pool} == set(TAGS)
    assert all(m["prompt"].startswith("a photo of") for m in pool)
    assert prompts_for_step(pool, 7, 4, seed=1) == prompts_for_step(pool, 7, 4, seed=1)
    assert prompts_for_step(pool, 7, 4, seed=1) != prompts_for_step(pool, 8, 4, seed=1)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a photo of a cat"}\n{"tag": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_prompt_file(bad)
    with pytest.raises(FileNotFoundError):
        read_prompt_file(tmp_path / "none.jsonl")


def test_tag_weights_set_the_training_prompts_mix_and_bad_ones_are_refused(tmp_path):
    from collections import Counter

    from simplear.train.grpo_prompts import training_prompts

    equal = training_prompts(GRPOConfig(seed=0), pool_size=600)
    # Naming a tag at weight 1 is the equal mix: the same pool, prompt for prompt.
    assert training_prompts(GRPOConfig(seed=0, tag_weights="colors=1"), pool_size=600) == equal
    weighted = training_prompts(GRPOConfig(seed=0, tag_weights="single_object=0,colors=0.5"), pool_size=3000)
    counts = Counter(m["tag"] for m in weighted)
    assert counts["single_object"] == 0
    # colours at half the weight of each of the four others: 1/9 of the pool (333), give or take.
    assert 250 < counts["colors"] < 420
    assert all(560 < counts[t] < 780 for t in ("two_object", "counting", "position", "color_attr"))

    for text, words in (("shapes=1", "TAG one of"), ("colors=-1", "WEIGHT >= 0"), ("colors", "TAG=WEIGHT"),
                        ("single_object=0,two_object=0,counting=0,colors=0,position=0,color_attr=0", "all be 0")):
        with pytest.raises(ValueError, match=words):
            GRPOConfig(tag_weights=text)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a photo of a cat"}\n')
    with pytest.raises(ValueError, match="prompts file"):
        GRPOConfig(tag_weights="colors=1", prompts=str(prompts))


def test_rollout_samples_in_its_own_batch_size_and_scores_in_micro_batches():
    from simplear.train.grpo_rollout import sample_rollout

    policy = GuidedPolicy(_randomised_tiny(3), 20, 16, SamplingConfig(cfg_scale=2.0))
    ids = [[1, 2, 3]] * 4 + [[4, 5]] * 4
    starts = []

    def keyed(start):  # the trainer's per-call generator: seeded by the call's first image
        starts.append(start)
        return torch.Generator().manual_seed(100 + start)

    def rollout(**kw):
        starts.clear()
        return sample_rollout(policy, ids, [1, 2], num_tokens=5, generator=keyed, pad_id=0, **kw)

    together = rollout(micro_batch=2, sample_batch=4)
    assert starts == [0, 4]  # two sampler calls of 4 images, not four of 2
    same = rollout(micro_batch=4)  # sample_batch defaults to micro_batch: the same calls and seeds
    assert torch.equal(together.codes, same.codes)
    # micro_batch only splits the teacher-forced scoring: the log-probs do not depend on it.
    assert torch.allclose(together.old_logprobs, same.old_logprobs, atol=1e-5)
    rollout(micro_batch=2)
    assert starts == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="rollout_batch_size must be >= 0"):
        GRPOConfig(rollout_batch_size=-1)
