"""The supported open_clip backbones table of docs/CLIP.md: ``python -m tools.open_clip_table [--write]``.

Rows are computed from open_clip's model configs and pretrained registry (the models
:func:`clip.open_clip_backbone.supported_models` accepts, each with its pretrained tags); the ImageNet
column is open_clip's published zero-shot top-1 (docs/data/open_clip_imagenet_zeroshot.csv, the
``ImageNet 1k`` column of open_clip's docs/openclip_results.csv), never measured here. ``--write``
replaces the table between the markers in docs/CLIP.md; without it the table is printed.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import open_clip

from clip.open_clip_backbone import clip_arguments, supported_models
from tools.doc_sections import replace_section

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs/data/open_clip_imagenet_zeroshot.csv"
DOC = ROOT / "docs/CLIP.md"
BEGIN, END = "<!-- open_clip table: begin -->", "<!-- open_clip table: end -->"


def published_imagenet() -> dict[tuple[str, str], str]:
    with open(RESULTS, newline="") as f:
        return {(r["name"], r["pretrained"]): r["imagenet1k"] for r in csv.DictReader(f)}


def render() -> str:
    """The markdown table: one row per supported model, its tags with published ImageNet accuracy."""
    published = published_imagenet()
    tags: dict[str, list[str]] = {}
    for model, tag in open_clip.list_pretrained():
        tags.setdefault(model, []).append(tag)
    lines = [
        "| open_clip model | image size | activation | pretrained tags (published zero-shot ImageNet top-1) |",
        "|---|---|---|---|",
    ]
    for model in supported_models():
        cfg = open_clip.get_model_config(model)
        cells = []
        for tag in tags.get(model, []):
            acc = published.get((model, tag))
            mark = (
                " †"
                if open_clip.get_pretrained_cfg(model, tag).get("quick_gelu") and not cfg.get("quick_gelu")
                else ""
            )
            cells.append(
                f"`{tag}`{mark} ({float(acc) * 100:.1f}%)" if acc else f"`{tag}`{mark} (not in the table)"
            )
        size = clip_arguments(cfg, quick_gelu=False)["image_resolution"]
        activation = "QuickGELU" if cfg.get("quick_gelu") else "GELU"
        lines.append(
            f"| `{model}` | {size} | {activation} | {', '.join(cells) or 'none registered (local files only)'} |"
        )
    return "\n".join(lines)


def write() -> None:
    DOC.write_text(replace_section(DOC.read_text(), BEGIN, END, render(), DOC))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"update the table in {DOC.relative_to(ROOT)}")
    if parser.parse_args().write:
        write()
    else:
        print(render())


if __name__ == "__main__":
    main()
