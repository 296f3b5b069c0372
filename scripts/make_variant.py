"""Make one variant page of book/variants.yml: its source notebook with the variant's values written into the
`parameters` cell, executed by papermill, then dressed to read as its own (issue 18): its title names the model, a
banner under the title names the source page and the parameters that differ (one table), the runtime line is the
variant's own, and the variant's Try-this items replace the source's.

The variant's values live in the page's own `parameters` cell (not in a papermill-injected cell), so that re-running
the page with `-p preset quick` or any other override keeps them: papermill replaces an injected cell wholesale, which
would silently run the source's defaults (the organism) under the variant's title. `quick:` in the entry becomes the
page's `quick_values`, what `-p preset quick` runs (qkcore.params.with_preset).

    python scripts/make_variant.py filter_heads_smollm2            # what `make book` runs for each variant
    python scripts/make_variant.py filter_heads_qwen --dry-run      # print the papermill command only

A variant entry in book/variants.yml:

    filter_heads_qwen:
      source: filter_heads
      model_name: Qwen2.5-Coder-0.5B-Instruct          # the title's suffix and the banner's model
      runtime: about 3 min at these parameters on 2 cores; about 60 s with preset = "quick"
      quick: {n_delta_prompts: 12, ...}                 # optional: what -p preset quick runs on this page
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
# the whole paragraph: up to a blank line (spaces allowed), a heading, or a list that may interrupt a paragraph
# (a bullet, or an ordered list starting at 1)
RUNTIME = re.compile(
    r"\*\*Runtime:\*\*(?:[^\n]|\n(?![ \t]*\n|[ \t]*$|[ \t]*#{1,6}(?:[ \t]|$)|[ \t]*[-*+] |[ \t]*1[.)] ))*"
)
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
    quick = ""
    if v.get("quick"):
        given = ", ".join(f"`{k} = {val!r}`" for k, val in v["quick"].items())
        quick = f"\nThese values are in the page's parameters cell; `-p preset quick` runs it with {given}.\n"
    return (
        f"```{{admonition}} A variant page: {v['model_name']}\n:class: note\n"
        f"This page is [{v['source'].replace('_', ' ')}]({v['source']}.ipynb) executed with the parameters below in "
        f"its parameters cell (`book/variants.yml`, entry `{name}`); its code is the source page's, every number, "
        f"figure and sentence on it comes from this run.\n\n| parameter | value |\n| --- | --- |\n{rows}\n"
        + quick
        + "```"
    )


def _assignment(key: str, value) -> str:
    text = repr(value) if not isinstance(value, str) else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{key} = {text}"


def set_parameters(cells, v: dict) -> None:
    """Write the variant's values (and its quick values) into the source's `parameters` cell, each in place of the
    source's line (its comment kept), and drop any papermill-injected cell: the page's parameters cell then lists
    every parameter with the values that ran, and `papermill --help-notebook` reads them."""
    values = dict(v["parameters"])
    if v.get("quick"):
        values["quick_values"] = dict(v["quick"])
    cells[:] = [c for c in cells if "injected-parameters" not in c.metadata.get("tags", [])]
    cell = next((c for c in cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        raise SystemExit(f"{v['source']}.ipynb has no cell tagged `parameters`")
    lines = cell.source.split("\n")
    for key, value in values.items():
        line = re.compile(rf"^{re.escape(key)}\s*=\s*(?P<value>.*?)(?P<comment>\s+#.*)?$")
        at = [i for i, text in enumerate(lines) if line.match(text)]
        if not at:
            raise SystemExit(f"parameter {key!r} of the variant is not in {v['source']}.ipynb's parameters cell")
        m = line.match(lines[at[0]])
        new = _assignment(key, value)
        if m.group("comment"):  # the comment kept at its column
            column = m.start("comment") + len(m.group("comment")) - len(m.group("comment").lstrip())
            new = new.ljust(column) if len(new) < column else new + "  "
            new += m.group("comment").lstrip()
        # a source value spanning lines (a list over several lines) is replaced whole
        end = at[0] + 1
        while end < len(lines) and lines[end].startswith(" ") and not lines[end].lstrip().startswith("#"):
            end += 1
        lines[at[0] : end] = [new]
    cell.source = "\n".join(lines)
    tags = cell.metadata.setdefault("tags", [])
    if "remove-input" in tags:
        tags.remove("remove-input")


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
    """Title, banner (right under the title), parameters cell, runtime line and Try-this of the variant at `path`
    (executed or not: its outputs are left alone)."""
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if BANNER_TAG not in c.metadata.get("tags", [])]
    set_parameters(cells, v)
    first = cells[0]
    lines = first.source.split("\n")
    if not lines[0].startswith("# "):
        raise SystemExit(f"{v['source']}.ipynb must open with a '# Title' markdown line")
    title = lines[0][2:].split(":")[0].strip()
    first.source = f"# {title}: {v['model_name']}"
    rest = "\n".join(lines[1:]).strip("\n")
    if rest:  # the title gets a cell of its own, so that the banner sits under it, above the learning goals
        cells.insert(1, nbformat.v4.new_markdown_cell(rest, metadata={"tags": []}))  # papermill reads every tag list
    for c in cells:
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
    command = [sys.executable, "-m", "papermill", "--cwd", str(BOOK), "-k", "python3", str(out), str(out)]
    command += ["--log-level", "WARNING"]
    if args.dry_run:
        print(f"{v['source']}.ipynb with {params} in its parameters cell, then: " + " ".join(command))
        return
    if not args.dress_only:
        source = nbformat.read(BOOK / f"{v['source']}.ipynb", as_version=4)
        set_parameters(source.cells, v)
        nbformat.write(source, out)
        # the kernel inherits this environment: no progress bars in a committed page (qkcore/progress.py), and one
        # torch thread, as every committed page is made (qkcore/experiments/chapter.py)
        subprocess.run(command, check=True, env={**os.environ, "QKCORE_PROGRESS": "0", "QKCORE_THREADS": "1"})
    dress(out, args.name, v)


if __name__ == "__main__":
    main()
