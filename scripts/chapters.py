"""Print the book's executable chapters (the .ipynb files listed in _toc.yml), in book order, one path per line.

The single source of the chapter list: `make book` executes these and `make test` checks them with nbval."""

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


def chapters() -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    paths = []
    for name in _files(toc):
        nb = ROOT / f"{name}.ipynb" if not name.endswith(".ipynb") else ROOT / name
        if nb.exists():
            paths.append(nb.relative_to(ROOT))
    return paths


if __name__ == "__main__":
    print("\n".join(str(p) for p in chapters()))
