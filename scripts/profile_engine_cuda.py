"""Where the fast engine's CUDA decoding step spends its time (run it on a GPU machine).

    python scripts/profile_engine_cuda.py [--preset simplear-0.5b] [--image-size 1024] [--batch 1]
                                          [--modes default,max-autotune-no-cudagraphs]

Builds random bf16 weights of a size preset, then prints, for the step as the engine replays it
(a CUDA graph of the whole decode step: forward, CFG, temperature, draw), ms per step at the middle
of a 1024-px image's cache for the eager step and for each `torch.compile` mode, next to the
memory-bandwidth floor (weights + the attended KV cache over a measured device-to-device copy
rate), and the profiler's top kernels of the compiled step run without a graph. Speed does not
depend on the weights' values. Used for the GPU analysis in docs/benchmarks.md.
"""

import argparse
import functools

import torch

from simplear.model import build_model
from simplear.sampling.bench import PRESET_WORLDS
from simplear.sampling.config import SamplingConfig
from simplear.sampling.engine import FastEngine, _CompiledDecode, _draw_after


def copy_rate() -> float:
    """Bytes/s of a large device-to-device copy (bytes read + written)."""
    src = torch.empty(2**30, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        dst.copy_(src)
    end.record()
    end.synchronize()
    return 2 * src.numel() * 20 / (start.elapsed_time(end) / 1000)


def step_inputs(engine: FastEngine, batch: int, prompt: int, num_tokens: int):
    rows = 2 * batch
    engine.allocate(rows, prompt + num_tokens)
    prev = torch.randint(0, engine.codebook_size, (batch,), device="cuda")
    slot = torch.full((rows, 1), prompt + num_tokens // 2, device="cuda")
    start = torch.zeros(rows, dtype=torch.long, device="cuda")
    u = torch.rand(batch, 1, device="cuda")
    values = torch.tensor([6.0, 1.0, 1.0], device="cuda")
    return prev, slot, start, u, values


def replay_ms(fn, steps: int) -> float:
    for _ in range(10):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / steps


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="simplear-0.5b")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--modes", default="default,max-autotune-no-cudagraphs")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    text, codebook, down, _ = PRESET_WORLDS[args.preset]
    num_tokens, prompt = (args.image_size // down) ** 2, 24
    model = build_model(args.preset, text + codebook, seed=0, max_position_embeddings=num_tokens + 256)
    model = model.to(device="cuda", dtype=torch.bfloat16).eval()
    config = SamplingConfig(cfg_scale=6.0)
    structure = (config.uses_cfg, config.greedy, config.top_k, config.top_p < 1.0)

    probe = FastEngine(model, text, codebook, cuda_graphs=False)
    weights = sum(t.numel() * t.element_size() for t in [probe.weights.top.head] + [
        w for layer in probe.weights.layers for w in (layer.wqkv, layer.wo, layer.wgu, layer.wd)])
    probe.allocate(2 * args.batch, prompt + num_tokens)
    cache = sum(t.numel() * t.element_size() for t in probe.k_cache + probe.v_cache)
    del probe
    rate = copy_rate()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; batch {args.batch} with CFG "
          f"({2 * args.batch} rows), {num_tokens} tokens per image")
    print(f"copy rate {rate / 1e12:.2f} TB/s; weights read per step {weights / 2**20:.0f} MiB, KV cache "
          f"{cache / 2**20:.0f} MiB (half attended on average)")
    floor = (weights + cache / 2) / rate
    print(f"floor {floor * 1e3:.3f} ms/step = {floor * num_tokens:.2f} s per image (batch {args.batch})")

    for mode in ["eager"] + [m for m in args.modes.split(",") if m]:
        # A mode: "eager", or a torch.compile mode ("default", "max-autotune-no-cudagraphs", ...).
        engine = FastEngine(model, text, codebook, compile=mode != "eager")
        if mode not in ("eager", "default"):
            module = _CompiledDecode(engine, structure, draw=False).eval()
            engine._decoders[structure] = torch.compile(module, mode=mode, dynamic=False)
        inputs = step_inputs(engine, args.batch, prompt, num_tokens)
        ms = replay_ms(functools.partial(engine._decode_step, *inputs, config), args.steps)
        print(f"{mode:32s} {ms:.3f} ms/step -> {ms * num_tokens / 1000:.2f} s per image "
              f"({ms * num_tokens / 1000 / args.batch:.3f} s/image)", flush=True)
        if mode == "default" and not args.no_profile:
            plain = functools.partial(_draw_after, engine._decoders[structure])
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                for _ in range(20):
                    plain(*inputs)
                torch.cuda.synchronize()
            events = prof.key_averages()
            kernels = sum(e.count for e in events) / 20
            print(f"compiled step without a graph: {kernels:.0f} kernels per step")
            print(events.table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))
        engine = None
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
