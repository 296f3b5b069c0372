"""Make one variant page of book/variants.yml: run its source notebook with papermill at the variant's parameters,
then make the page read as its own (issue 18): its title names the model, a banner names the source page and the
parameters actually used (one table), the source's default parameters cell is hidden (the injected one shows what
ran), the runtime line is the variant's own, and the variant's Try-this items replace the source's.

    python scripts/make_variant.py filter_heads_smollm2            # what `make book` runs for each variant
    python scripts/make_variant.py filter_heads_qwen --dry-run      # print the papermill command only

A variant entry in book/variants.yml:

    filter_heads_qwen:
      source: filter_heads
      model_name: Qwen2.5-Coder-0.5B-Instruct          # the title's suffix and the banner's model
      runtime: about 3 min at these parameters on 2 cores; about 60 s with preset = "quick"
      try_this: |                                       # optional: markdown list replacing the source's items
        - ...
      parameters: {model: qwen2.5-coder-0.5b-instruct, ...}
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
BANNER_TAG = "variant-banner"
RUNTIME = re.compile(r"\*\*Runtime:\*\*[^\n]*")
TRY_THIS = re.compile(r"^## Try this\b", re.M)


def load_variant(name: str) -> dict:
    variants = yaml.safe_load((BOOK / "variants.yml").read_text()) or {}
    if name not in variants:
        raise SystemExit(f"{name!r} is not a variant of book/variants.yml; variants: {sorted(variants)}")
    v = variants[name]
    missing = [k for k in ("source", "parameters", "model_name", "runtime") if k not in v]
    if missing:
        raise SystemExit(f"variant {name!r} in book/variants.yml lacks {missing}")
    return v


def banner(name: str, v: dict) -> str:
    rows = "\n".join(f"| `{k}` | `{val!r}` |" for k, val in v["parameters"].items())
    return (
        f"```{{admonition}} A variant page: {v['model_name']}\n:class: note\n"
        f"This page is [{v['source'].replace('_', ' ')}]({v['source']}.ipynb) run again by papermill with other "
        f"parameters (`book/variants.yml`, entry `{name}`); its code is the source page's, every number, figure "
        f"and sentence on it comes from this run.\n\n| parameter | value |\n| --- | --- |\n{rows}\n```"
    )


def suffix_figure_names(cells, name: str) -> None:
    """Figure labels are book-wide: a variant's copies of its source's named figures (and the {numref} roles that
    point at them) get the variant's name appended, so that the -W build sees no duplicate label."""
    names = set()
    for c in cells:
        fig = c.metadata.get("mystnb", {}).get("figure", {})
        if fig.get("name") and not fig["name"].endswith(f"-{name}"):
            names.add(fig["name"])
            fig["name"] = f"{fig['name']}-{name}"
    for c in cells:
        if c.cell_type == "markdown":
            for label in names:
                c.source = re.sub(
                    r"(\{numref\}`(?:[^`<]*<)?)" + re.escape(label) + r"(>?`)", rf"\g<1>{label}-{name}\2", c.source
                )


def dress(path: Path, name: str, v: dict) -> None:
    """Title, banner, hidden default parameters, runtime line and Try-this of the executed variant at `path`."""
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if BANNER_TAG not in c.metadata.get("tags", [])]
    first = cells[0]
    lines = first.source.split("\n")
    if not lines[0].startswith("# "):
        raise SystemExit(f"{v['source']}.ipynb must open with a '# Title' markdown line")
    title = lines[0][2:].split(":")[0].strip()
    lines[0] = f"# {title}: {v['model_name']}"
    first.source = RUNTIME.sub(f"**Runtime:** {v['runtime']}.", "\n".join(lines))
    for c in cells:
        tags = c.metadata.setdefault("tags", [])
        if "parameters" in tags and "remove-input" not in tags:
            tags.append("remove-input")  # the defaults did not run here: the injected cell shows what did
        if c.cell_type == "markdown":
            c.source = RUNTIME.sub(f"**Runtime:** {v['runtime']}.", c.source)
            if v.get("try_this") and TRY_THIS.search(c.source):
                c.source = "## Try this\n\n" + v["try_this"].strip()
    suffix_figure_names(cells, name)
    cell = nbformat.v4.new_markdown_cell(banner(name, v))
    cell.metadata["tags"] = [BANNER_TAG]
    cells.insert(1, cell)
    nb.cells = cells
    nbformat.write(nb, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the variant's name in book/variants.yml")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--dress-only", action="store_true", help="only dress an already executed page")
    args = parser.parse_args()
    v = load_variant(args.name)
    out = BOOK / f"{args.name}.ipynb"
    params = yaml.safe_dump(v["parameters"], default_flow_style=True, width=10_000).strip()
    command = [
        sys.executable,
        "-m",
        "papermill",
        "--cwd",
        str(BOOK),
        "-k",
        "python3",
        str(BOOK / f"{v['source']}.ipynb"),
    ]
    command += [str(out), "--log-level", "WARNING", "-y", params]
    if args.dry_run:
        print(" ".join(command))
        return
    if not args.dress_only:
        # the kernel inherits this environment: no progress bars in a committed page (qkcore/progress.py)
        subprocess.run(command, check=True, env={**os.environ, "QKCORE_PROGRESS": "0"})
    dress(out, args.name, v)


if __name__ == "__main__":
    main()
