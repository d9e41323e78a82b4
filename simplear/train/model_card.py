"""The model card of a recipe run: the stage table, the sampling defaults, pictures and curves.

`write_model_card(DIR)` reads what `run_recipe` left in DIR (stage markers, stages.json, the
per-stage sample grids, the GRPO log, the final bundle's simplear.json) and writes
`DIR/MODEL_CARD.md`, `DIR/samples/stages.png` (the same prompts and seeds after each stage, side
by side) and `DIR/grpo/curves.png` (GRPO reward and judge score over steps; needs the `plot`
extra). `ship_bundle` copies a finished run's final bundle into a folder (the package's embedded
default) and its card with pictures into the docs, refusing a bundle over the size limit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from simplear.utils import atomic_path, atomic_write_text, format_down

CARD_FILE = "MODEL_CARD.md"
# Stages with a sample grid, in order (the grids are written by recipe.evaluate_stage).
GRID_STAGES = ("pretrain", "sft", "grpo")


def stage_picture(root: str | Path, prompts: tuple[str, ...], images_per_prompt: int = 4) -> Path | None:
    """`samples/stages.png`: one row per prompt, one block of images per stage, labelled.

    Grids of a lower-resolution stage are scaled up (nearest neighbour) to the largest cell size.
    Returns None when no stage has a grid yet.
    """
    from PIL import Image, ImageDraw

    root = Path(root)
    grids = [(name, Image.open(root / "samples" / f"{name}.png").convert("RGB"))
             for name in GRID_STAGES if (root / "samples" / f"{name}.png").is_file()]
    if not grids:
        return None
    cell = max(grid.width // images_per_prompt for _, grid in grids)
    label_w, head_h, gap = 300, 24, 12
    block_w = cell * images_per_prompt
    sheet = Image.new("RGB", (label_w + len(grids) * (block_w + gap), head_h + len(prompts) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (name, grid) in enumerate(grids):
        x = label_w + i * (block_w + gap)
        scaled = grid.resize((block_w, cell * (grid.height * images_per_prompt // grid.width)), Image.NEAREST)
        sheet.paste(scaled, (x, head_h))
        draw.text((x + 4, 6), f"after {name} ({grid.width // images_per_prompt} px)", fill="black")
    for row, prompt in enumerate(prompts):
        draw.text((6, head_h + row * cell + cell // 2 - 6), prompt, fill="black")
    out = root / "samples" / "stages.png"
    with atomic_path(out) as tmp:  # a 256-colour palette keeps the picture small enough for git
        sheet.quantize(256, dither=Image.Dither.NONE).save(tmp, format="PNG", optimize=True)
    return out


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(key, "–")) for _, key in columns) + " |")
    return "\n".join(lines) + "\n"


def write_model_card(root: str | Path, command: str) -> Path:
    """Write `DIR/MODEL_CARD.md` (and its pictures) from a recipe run folder; returns its path."""
    from simplear.train.recipe import GRID_PROMPTS, LEGACY, snaps_background

    root = Path(root)
    stages = {p.stem: json.loads(p.read_text()) for p in sorted((root / "stages").glob("*.json"))}
    table = (root / "stages.md").read_text()  # the stage table and the targets, met or not
    final = next((n for n in ("grpo", "sft", "pretrain") if n in stages), None)
    bundle_json = json.loads((root / final / "bundle" / "simplear.json").read_text()) if final else {}
    stage_picture(root, GRID_PROMPTS)
    curves = None
    if (root / "grpo" / "log.jsonl").is_file():
        try:
            from simplear.train.plot import plot_run

            curves = plot_run(root / "grpo", root / "grpo" / "curves.png")
        except ValueError:  # matplotlib missing: the card says so instead of showing the curves
            curves = None

    parts = [f"# ShapesWorld model ({final} stage)\n\n" if final else "# ShapesWorld model (no AR stage trained yet)\n\n",
             "A SimpleAR-style autoregressive text-to-image model (stock `Qwen2ForCausalLM`) over an "
             "FSQ visual tokenizer, trained on ShapesWorld by the three-stage recipe, every figure measured "
             "by the ShapesWorld judge with GenEval's protocol (553 prompts x 4 images; overall = mean "
             "over the six tags; scores truncated, never rounded up).\n\n",
             f"Recipe command:\n\n```\n{command}\n```\n\n"]
    recipe = json.loads((root / "recipe.json").read_text())
    parts.append(f"Resolutions: pretraining {recipe['low_resolution']} px, SFT / GRPO / evaluation "
                 f"{recipe['high_resolution']} px. Device: {recipe.get('device') or 'auto'}.\n\n")
    background, grid, order = ({**LEGACY, **recipe}[k] for k in ("data_background", "data_grid", "data_caption_order"))
    order_words = ("captions name unrelated objects in the order the image tokens draw them (raster order)"
                   if order == "raster" else "captions name objects in the sampled order")
    parts.append(f"Training data: {recipe['pretrain_images']:,} ShapesWorld scenes at {recipe['low_resolution']} px "
                 f"and {recipe['sft_images']:,} at {recipe['high_resolution']} px, {background} background, "
                 + (f"boxes on a {grid} x {grid} grid" if grid else "boxes anywhere")
                 + f", {order_words}, the suite's held-out colour-class pairs left out. The tokenizer trains on textured "
                 "scenes anywhere; the model is judged on whatever it draws.\n\n")
    mix = recipe.get("sft_tag_weights") or {}
    if mix:
        parts.append("SFT scenes' tag mix (weights; the pretraining scenes and the suite use GenEval's "
                     "80/99/80/94/100/100): " + ", ".join(f"{tag} {weight:g}" for tag, weight in mix.items()) + ".\n\n")
    if snaps_background({**LEGACY, **recipe}["snap_background"], background):
        snapped = []
        for split in ("low", "high"):
            manifest = root / "tokens" / split / "manifest.json"
            if manifest.is_file():
                m = json.loads(manifest.read_text())
                share = m["snap"]["snapped"] / (m["count"] * m["grid"][0] * m["grid"][1])
                snapped.append(f"{format_down(share * 100, 1)} % of the {m['resolution']}-px code positions")
        parts.append("Token shards: every plain-background patch with no object in the 3 x 3 patches around it "
                     "holds the one code a uniform grey image encodes to (`snap_background`"
                     + (f"; {' and '.join(snapped)}" if snapped else "") + ").\n\n")
    given = stages.get("tokenizer", {}).get("copied_from")
    trained = root / "tokenizer" / "train_config.json"
    if not given and trained.is_file():
        t = json.loads(trained.read_text())
        crops = f"{t['crop']}-px crops of" if t.get("crop") else "whole"
        line = (f"Visual tokenizer: FSQ, levels {t['levels']}, downsampling {t['downsample']}; {t['steps']:,} steps "
                f"on {crops} images at {' and '.join(map(str, t['resolutions']))} px")
        if t.get("finish_steps"):
            line += (f", then {t['finish_steps']:,} on whole images at "
                     f"{' then '.join(map(str, t['finish_resolutions']))} px")
        line += {"pixel": "; per-position normalisation"}.get(t.get("norm", "group"), "")
        parts.append(line + f" (batch {t['batch_size']}; `tokenizer/train_config.json`).\n\n")
    if given:
        parts.append(f"Visual tokenizer: not trained by this command but given with `--tokenizer` (a copy of "
                     f"`{given}`, weights sha256 `{stages['tokenizer']['sha256'][:16]}...`); how it was trained "
                     "is in its own `tokenizer/train_config.json` when that folder had one.\n\n")
    parts.append("## Stage table and targets\n\n" + table + "\n")
    timing = [{"stage": n, "seconds": int(s["seconds"]) if "seconds" in s else "–"}
              for n, s in stages.items()]
    order = {n: i for i, n in enumerate(("data", "tokenizer", "tokens", "pretrain", "sft", "grpo"))}
    timing.sort(key=lambda r: order.get(r["stage"], 99))
    parts.append("Wall time per stage (training + its evaluation), as measured by the recipe:\n\n"
                 + _table(timing, [("stage", "stage"), ("seconds", "seconds")]) + "\n")
    if bundle_json:
        s = bundle_json.get("sampling", {})
        parts.append("## Sampling defaults (stored in `simplear.json`)\n\n"
                     "Used for the SFT and GRPO evaluations and GRPO's rollouts; the pretraining stage was "
                     "judged with its own bundle's defaults (the trainer's CFG 3.0, temperature 1.0).\n\n"
                     f"CFG scale {s.get('cfg_scale')}, temperature {s.get('temperature')}, "
                     f"top-k {s.get('top_k') or 'off'}, top-p {s.get('top_p') or 'off'}; "
                     f"image size {bundle_json.get('image_size')} px.\n\n")
    sweep = stages.get("sft", {}).get("sampling_sweep")
    if sweep:
        rows = [{"cfg": c["cfg_scale"], "t": c["temperature"], "overall": format_down(c["overall"], 3),
                 "partial": format_down(c["partial"], 3)} for c in sweep["candidates"]]
        parts.append(f"Chosen after SFT by the judge on {sweep['prompts']} prompts of another suite draw "
                     "(1 image each, other seeds); GRPO then optimised exactly this guided distribution:\n\n"
                     + _table(rows, [("CFG scale", "cfg"), ("temperature", "t"), ("overall", "overall"),
                                     ("partial credit", "partial")]) + "\n")
    if (root / "grpo" / "config.json").is_file():
        settings = json.loads((root / "grpo" / "config.json").read_text())
        keys = ("steps", "prompts_per_step", "group_size", "passes", "lr", "beta", "clip_eps", "reward",
                "sampling", "eval_every", "eval_num_prompts")
        last = stages.get("grpo", {}).get("summary", {})
        parts.append("## GRPO\n\nSettings (`grpo/config.json`):\n\n```\n"
                     + json.dumps({k: settings[k] for k in keys if k in settings}, indent=1) + "\n```\n\n")
        if last:
            parts.append(f"Last step: reward mean {format_down(last.get('reward_mean', 0), 3)}, "
                         f"KL {format_down(last.get('kl', 0), 3)}, clip fraction {format_down(last.get('clip_fraction', 0), 3)}, "
                         f"{format_down(last.get('seconds', 0), 1)} s.\n\n")
    parts.append("## Samples\n\nThe same prompts and seeds after each stage (`samples/stages.png`):\n\n"
                 "![samples after each stage](samples/stages.png)\n\n")
    if curves is not None:
        parts.append("GRPO reward and judge score over steps (`grpo/curves.png`):\n\n"
                     "![GRPO curves](grpo/curves.png)\n\n")
    elif (root / "grpo" / "log.jsonl").is_file():
        parts.append("GRPO curves: not drawn, matplotlib is not installed (`pip install \"simplear[plot]\"`, "
                     "then run the same recipe command again: its finished stages are skipped and this card "
                     "is written with the curves).\n\n")
    out = root / CARD_FILE
    atomic_write_text(out, "".join(parts))
    return out


def same_safetensors(a: str | Path, b: str | Path) -> bool:
    """True when two safetensors files hold the same tensors (names, dtypes, values) and metadata.

    safetensors may write the same metadata in another order, so equal weights can differ in bytes.
    """
    from safetensors import safe_open

    with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
        if fa.metadata() != fb.metadata() or set(fa.keys()) != set(fb.keys()):
            return False
        for key in fa.keys():
            x, y = fa.get_tensor(key), fb.get_tensor(key)
            if x.dtype != y.dtype or x.shape != y.shape or not bool((x == y).all()):
                return False
    return True


def folder_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def ship_bundle(root: str | Path, assets: str | Path, docs: str | Path, max_bytes: int = 25 * 1024 * 1024) -> dict:
    """Copy the run's final bundle to `assets` and its card + pictures to `docs`.

    `assets` is replaced whole (through a temporary folder and a rename); the card goes to
    `docs/default-model.md` with its pictures in `docs/images/default-model/`.
    """
    root, assets, docs = Path(root), Path(assets), Path(docs)
    final = next((root / n / "bundle" for n in ("grpo", "sft") if (root / "stages" / f"{n}.json").is_file()), None)
    if final is None:
        raise ValueError(f"{root} has no finished sft or grpo stage to ship")
    size = folder_bytes(final)
    if size > max_bytes:
        raise ValueError(f"{final} holds {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit")
    tmp = assets.with_name(assets.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(final, tmp, ignore=shutil.ignore_patterns("train_config.json"))
    shutil.copy2(root / CARD_FILE, tmp / "README.md")
    for new in tmp.rglob("*.safetensors"):
        old = assets / new.relative_to(tmp)
        if old.is_file() and same_safetensors(old, new):
            shutil.copy2(old, new)  # same weights: keep the committed bytes, no new blob in git history
    if assets.exists():
        shutil.rmtree(assets)
    tmp.rename(assets)
    images = docs / "images" / "default-model"
    images.mkdir(parents=True, exist_ok=True)
    card = (root / CARD_FILE).read_text()
    for rel in ("samples/stages.png", "grpo/curves.png"):
        if (root / rel).is_file():
            name = rel.replace("/", "-")
            shutil.copy2(root / rel, images / name)
            card = card.replace(f"]({rel})", f"](images/default-model/{name})")
    atomic_write_text(docs / "default-model.md", card)
    return {"bundle": str(assets), "bytes": folder_bytes(assets)}
