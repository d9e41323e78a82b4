"""Check and time the Triton decode step against the engine's torch step (run it on a GPU machine).

    python scripts/check_triton_decode.py [--preset simplear-0.5b] [--image-size 1024] [--batch 1]
        [--micro] [--tiles "NAME=KIND,N,K,WARPS,STAGES;..." ...] [--no-check] [--no-torch] [--no-time]

Builds random weights of a size preset, fills a KV cache with a random prefix, then compares the
visual logits of one decode step and the keys/values it writes, Triton against torch
(`FastEngine._forward`), in fp32 and bf16, at several cache positions: the relative error
‖triton − torch‖ / ‖torch‖ per quantity. With a GPU it then, with `--micro`, times each kernel's
configurations alone (MICRO_VARIANTS) and picks the fastest of each; prints the profiler's device
time per kernel of one whole decode step; and times the whole decode step (forward, CFG, draw with
torch's ops) as the engine replays it (one CUDA graph), torch-compiled (unless `--no-torch`)
against Triton with the default tiles, the fastest ones and each `--tiles` set, in ms per step at
the middle of the image's cache. On a CPU set TRITON_INTERPRET=1 to check (not time) the kernels
on the tiny preset (widened to head_dim 32), in fp32 only.
"""

import argparse
import functools
import os

import torch
from profile_engine_cuda import replay_ms, step_inputs  # beside this script (scripts/ is on sys.path)

from simplear.model import build_model
from simplear.sampling.bench import PRESET_WORLDS
from simplear.sampling.engine import FastEngine, _CompiledDecode, _draw_after

STRUCTURE = (True, False, 0, False)  # CFG on, not greedy, no top-k, no top-p


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@torch.inference_mode()
def check(model, text: int, codebook: int, rows: int, length: int, device) -> list[str]:
    """Relative errors of Triton vs torch for one decode step at three cache positions."""
    lines = []
    torch_engine = FastEngine(model, text, codebook, cuda_graphs=False, kernels="torch")
    triton_engine = FastEngine(model, text, codebook, cuda_graphs=False, kernels="triton")
    gen = torch.Generator(device="cpu").manual_seed(0)
    prefix = torch.randint(0, text + codebook, (rows, length), generator=gen).to(device)
    start = torch.tensor([i % 3 for i in range(rows)], device=device)  # some rows left-padded
    for engine in (torch_engine, triton_engine):
        engine.allocate(rows, length + 8)
        slots = torch.arange(length, device=device)[None].expand(rows, length)
        engine.forward(prefix, slots, start, kv_len=length)
    for at in (length, length + 3, length + 7):
        ids = torch.randint(text, text + codebook, (rows, 1), generator=gen).to(device)
        slots = torch.full((rows, 1), at, device=device)
        ref = torch_engine._forward(torch_engine.weights, ids, slots, start, torch_engine.cache_length).float()
        got = triton_engine._triton.forward(ids, slots, start)
        errs = [rel(got, ref)]
        for cache in ("k_cache", "v_cache"):
            mine = torch.stack([c[:, :, at] for c in getattr(triton_engine, cache)])
            theirs = torch.stack([c[:, :, at] for c in getattr(torch_engine, cache)])
            errs.append(rel(mine, theirs))
        same = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
        lines.append(f"{str(model.dtype):15s} rows {rows} slot {at:5d}: logits {errs[0]:.2e}  k {errs[1]:.2e}  "
                     f"v {errs[2]:.2e}  argmax agrees {same:.3f}")
        # Keep the torch engine's cache identical to the Triton one's for the next position.
        for mine, theirs in zip(triton_engine.k_cache + triton_engine.v_cache, torch_engine.k_cache + torch_engine.v_cache):
            theirs[:, :, at] = mine[:, :, at]
    return lines


@torch.inference_mode()
def time_step(model, text, codebook, batch, num_tokens, kernels, compile, tiles=None, steps=300) -> float:
    """ms per replayed decode step (forward, CFG, draw) at the middle of the image's cache."""
    engine = FastEngine(model, text, codebook, compile=compile, kernels=kernels)
    if tiles:
        engine._triton.tiles.update(tiles)
    prev, slot, start, u, values = step_inputs(engine, batch, 24, num_tokens)
    decoder = _CompiledDecode(engine, STRUCTURE, draw=False).eval()
    if compile:
        decoder = torch.compile(decoder, dynamic=False)
    step = functools.partial(_draw_after, decoder)
    run = functools.partial(engine._replay, "probe", step, prev, slot, start, u, values)
    return replay_ms(run, steps)


@torch.inference_mode()
def profile_kernels(model, text, codebook, batch, num_tokens, tiles=None, steps: int = 20) -> str:
    """Device time per kernel of the whole decode step (forward, CFG, draw; profiler, steps launched
    eagerly), µs per step."""
    engine = FastEngine(model, text, codebook, kernels="triton", cuda_graphs=False)
    if tiles:
        engine._triton.tiles.update(tiles)
    prev, slot, start, u, values = step_inputs(engine, batch, 24, num_tokens)
    step = functools.partial(_draw_after, _CompiledDecode(engine, STRUCTURE, draw=False).eval())
    for _ in range(3):
        step(prev, slot, start, u, values)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step(prev, slot, start, u, values)
        torch.cuda.synchronize()
    totals: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            totals.setdefault(event.name, []).append(event.device_time)
    lines = [f"{'kernel':<60} {'calls/step':>10} {'µs/call':>8} {'µs/step':>8}"]
    for name, times in sorted(totals.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"{name[:60]:<60} {len(times) / steps:>10.1f} {sum(times) / len(times):>8.2f} "
                     f"{sum(times) / steps:>8.1f}")
    total = sum(sum(t) for t in totals.values()) / steps
    lines.append(f"kernel time per step: {total:.1f} µs")
    return "\n".join(lines)


MICRO_VARIANTS = {
    "qkv": [("fma", 2, 1024, 4, 1), ("fma", 4, 1024, 4, 1), ("fma", 2, 512, 4, 1), ("fma", 4, 256, 4, 1)],
    "o": [("fma", 8, 1024, 4, 1), ("fma", 4, 1024, 4, 1), ("fma", 8, 256, 4, 1), ("fma", 4, 256, 4, 1)],
    "gate_up": [("fma", 4, 256, 4, 1), ("fma", 2, 256, 4, 1), ("fma", 4, 128, 4, 1), ("fma", 8, 256, 4, 1),
                ("fma", 2, 128, 4, 1), ("fma", 8, 128, 4, 1)],
    "down": [("fma", 2, 1024, 4, 1), ("fma", 1, 1024, 4, 1), ("fma", 2, 1024, 2, 1), ("fma", 4, 256, 4, 1),
             ("fma", 2, 256, 4, 1)],
    "head": [("dot", 256, 128, 8, 4), ("dot", 256, 128, 4, 4), ("dot", 512, 64, 8, 4), ("dot", 256, 64, 8, 6)],
    "attention": [(128, 64, 4), (128, 32, 4)],
}


@torch.inference_mode()
def micro(model, text, codebook, batch, num_tokens, steps: int = 100) -> dict:
    """µs per launch and GB/s of each kernel configuration alone: the 24 layers' launches of one
    product (each layer's own weights, so nothing is served from L2) captured as one CUDA graph.
    Returns the fastest tiles per product."""
    engine = FastEngine(model, text, codebook, kernels="triton", cuda_graphs=False)
    rows, prompt = 2 * batch, 24
    engine.allocate(rows, prompt + num_tokens)
    dec, layers, top = engine._triton, engine.weights.layers, engine.weights.top
    for cache in engine.k_cache + engine.v_cache:
        cache.normal_()
    dtype, dev = engine.dtype, "cuda"
    x = torch.randn(rows, dec.hidden, dtype=dtype, device=dev)
    resid = torch.randn(rows, dec.hidden, dtype=dtype, device=dev)
    h = torch.randn(rows, dec.inter, dtype=dtype, device=dev)
    qkv = torch.randn(rows, layers[0].wqkv.shape[0], dtype=dtype, device=dev)
    att = torch.randn(rows, layers[0].wo.shape[1], dtype=dtype, device=dev)
    logits = torch.empty(rows, codebook, dtype=torch.float32, device=dev)
    slot = torch.full((rows,), prompt + num_tokens // 2, device=dev)
    start = torch.zeros(rows, dtype=torch.long, device=dev)
    size = lambda t: t.numel() * t.element_size()  # noqa: E731
    cache_bytes = 2 * rows * engine.num_kv_heads * (prompt + num_tokens // 2) * engine.head_dim * x.element_size()
    products = {
        "qkv": (lambda: [dec._mm("qkv", x, lw.wqkv, qkv, ln=lw.ln1, bias=lw.bqkv) for lw in layers],
                size(layers[0].wqkv)),
        "o": (lambda: [dec._mm("o", att, lw.wo, resid, epilogue=1) for lw in layers], size(layers[0].wo)),
        "gate_up": (lambda: [dec._mm("gate_up", x, lw.wgu, h, ln=lw.ln2, epilogue=2, pair_offset=dec.inter)
                             for lw in layers], size(layers[0].wgu)),
        "down": (lambda: [dec._mm("down", h, lw.wd, resid, epilogue=1) for lw in layers], size(layers[0].wd)),
        "head": (lambda: [dec._mm("head", x, top.head, logits, ln=top.final_norm)], size(top.head)),
    }
    best = {}
    print(f"{'product':<10} {'tiles':<28} {'µs/launch':>9} {'GB/s':>7}")
    for name, variants in MICRO_VARIANTS.items():
        results = []
        for tiles in variants:
            dec.tiles[name] = tiles
            if name == "attention":
                scratch = dec.scratch(rows, dev)
                fn = lambda scratch=scratch: [dec._attention(qkv, kc, vc, slot, start, att, *scratch)  # noqa: E731
                              for kc, vc in zip(engine.k_cache, engine.v_cache)]
                launches, nbytes = len(layers), cache_bytes
            else:
                fn, nbytes = products[name]
                launches = 1 if name == "head" else len(layers)
            try:
                fn()
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    fn()
                us = replay_ms(graph.replay, steps) * 1000 / launches
            except Exception as err:  # a configuration Triton cannot build (registers, shared memory)
                print(f"{name:<10} {str(tiles):<28} failed: {str(err).splitlines()[0][:60]}")
                continue
            results.append((us, tiles))
            print(f"{name:<10} {str(tiles):<28} {us:>9.2f} {nbytes / us / 1000:>7.0f}", flush=True)
        best[name] = min(results)[1]
    return best


def parse_tiles(items: list[str]) -> list[dict]:
    """`--tiles qkv=4,128 gate_up=8,128` -> one dict per argument (each timed on its own)."""
    out = []
    for item in items:
        tiles = {}
        for part in item.split(";"):
            name, value = part.split("=")
            tiles[name] = tuple(v if v in ("fma", "dot") else int(v) for v in value.split(","))
        out.append(tiles)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="simplear-0.5b")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--tiles", nargs="*", default=[], help="configurations to time, e.g. 'qkv=4,128;o=8,128'")
    parser.add_argument("--no-time", action="store_true")
    parser.add_argument("--micro", action="store_true", help="time each kernel's configurations alone first, "
                        "then the whole step with the fastest of each")
    parser.add_argument("--no-check", action="store_true")
    parser.add_argument("--no-torch", action="store_true", help="skip timing the torch-compiled step")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("no CUDA device: set TRITON_INTERPRET=1 to check the kernels in Triton's interpreter")
    text, codebook, down, _ = PRESET_WORLDS[args.preset]
    num_tokens = (args.image_size // down) ** 2
    # The tiny preset's head_dim (8) is below what the attention kernel takes (32).
    widen = dict(hidden_size=128, intermediate_size=200) if args.preset == "tiny" else {}
    model = build_model(args.preset, text + codebook, seed=0, max_position_embeddings=num_tokens + 256,
                        **widen).eval()
    # Triton's interpreter multiplies bf16 dot operands as raw bits: only fp32 is checked there.
    for dtype in (torch.float32, torch.bfloat16) if cuda else (torch.float32,):
        model = model.to(device=device, dtype=dtype)
        if args.no_check:
            continue
        for line in check(model, text, codebook, 2 * args.batch, 40 if not cuda else 1000, device):
            print(line, flush=True)
    if not cuda or args.no_time:
        return
    chosen = micro(model, text, codebook, args.batch, num_tokens) if args.micro else {}
    if chosen:
        print(f"fastest alone: {chosen}")
    print(profile_kernels(model, text, codebook, args.batch, num_tokens, chosen), flush=True)
    print(f"ms per decode step ({args.preset}, {args.image_size} px, batch {args.batch}, bf16, CUDA graph):")
    if not args.no_torch:
        torch_ms = time_step(model, text, codebook, args.batch, num_tokens, "torch", True, steps=args.steps)
        print(f"  torch, torch.compile: {torch_ms:.3f}  ({torch_ms * num_tokens / 1000:.3f} s/image)", flush=True)
    for tiles in [{}] + ([chosen] if chosen else []) + parse_tiles(args.tiles):
        ms = time_step(model, text, codebook, args.batch, num_tokens, "triton", False, tiles, steps=args.steps)
        print(f"  triton {tiles or 'default tiles'}: {ms:.3f}  ({ms * num_tokens / 1000:.3f} s/image)", flush=True)


if __name__ == "__main__":
    main()
