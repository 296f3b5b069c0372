"""Print the book's executable chapters (the .ipynb files listed in _toc.yml), in book order, one path per line.

The single source of the chapter list: `make book` executes these and `make test` checks them with nbval.
`--plan` prints how `make book` makes each one instead: `<notebook>` (executed in place) or
`<notebook> <source notebook> <parameters as YAML>` for a variant of book/variants.yml. `--first` and `--last` print
the two phases of a parallel run (`make book` through scripts/execute_book.py, `make nbval` through pytest-xdist):
every page but the ones that read the others' results, then those.

Lanes: a parallel run executes the pages of one real model one after another in one lane (`lane`), so that its
gathers (q, k cached on disk) are made once and reused by its later pages, and two copies of the same model never
sit in memory at once; every other page is a lane of its own."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _files(node) -> list[str]:
    out = []
    if isinstance(node, dict):
        if "file" in node:
            out.append(node["file"])
        for key in ("root", "chapters", "sections", "parts"):
            value = node.get(key)
            if isinstance(value, str):
                out.append(value)
            elif isinstance(value, list):
                for child in value:
                    out.extend(_files(child))
    return out


LAST = ("compare_filter", "compare_binding", "results")  # pages that read what the other chapters recorded: last


def chapters() -> list[Path]:
    """The notebooks of _toc.yml that exist, and the variants (book/variants.yml) it lists, made or not yet."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    known = variants()
    paths = []
    for name in _files(toc):
        nb = ROOT / f"{name}.ipynb" if not name.endswith(".ipynb") else ROOT / name
        if nb.exists() or nb.stem in known:
            paths.append(nb.relative_to(ROOT))
    return [p for p in paths if p.stem not in LAST] + [p for p in paths if p.stem in LAST]


def lane(nb: Path) -> str:
    """The lane of a chapter notebook: `model:<registry name>` for a variant page of a real model, else its path."""
    v = variants().get(Path(nb).stem)
    model = (v or {}).get("parameters", {}).get("model")
    return f"model:{model}" if model else str(nb)


def lanes() -> list[list[Path]]:
    """The first phase's pages (all but LAST) grouped into lanes, each lane's pages in book order; the model lanes
    first, since they take longest (a scheduler that hands out lanes in this order keeps both workers busy)."""
    grouped: dict[str, list[Path]] = {}
    for nb in chapters():
        if nb.stem not in LAST:
            grouped.setdefault(lane(nb), []).append(nb)
    return sorted(grouped.values(), key=lambda pages: not lane(pages[0]).startswith("model:"))


def variants() -> dict[str, dict]:
    """book/variants.yml: name → {"source": chapter name, "parameters": {...}}."""
    path = ROOT / "book" / "variants.yml"
    return yaml.safe_load(path.read_text()) or {} if path.exists() else {}


def plan() -> list[str]:
    lines = []
    known = variants()
    for nb in chapters():
        v = known.get(nb.stem)
        if v is None:
            lines.append(str(nb))
        else:
            params = yaml.safe_dump(v["parameters"], default_flow_style=True, width=10_000).strip()
            lines.append(f"{nb} {nb.parent / (v['source'] + '.ipynb')} {params}")
    return lines


if __name__ == "__main__":
    import sys

    args = sys.argv[1:]
    if "--plan" in args:
        print("\n".join(plan()))
    elif "--first" in args:
        print("\n".join(str(p) for p in chapters() if p.stem not in LAST))
    elif "--last" in args:
        print("\n".join(str(p) for p in chapters() if p.stem in LAST))
    else:
        print("\n".join(str(p) for p in chapters()))
