"""Figures of the toy chapters. Every figure is at most COLUMN inches wide, so at the book's 150 dpi it is no wider
than a chapter's rendered column (about 770 px) and is shown at its own size: a 9-pt font stays 9 pt on the page."""

from qkcore.plotting.style import DPI

COLUMN = 770 / DPI  # inches: 5.13, the column's width at 150 dpi
