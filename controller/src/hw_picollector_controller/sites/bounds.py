"""The size of a workbook, checked on its zip and XML before openpyxl loads it.

openpyxl builds an object per cell, so a stray cell at row 1,000,000 would cost seconds and
hundreds of MB. ``_size_problems(path)`` streams the XML of every worksheet (and its comments),
never beyond ``MAX_CELLS`` cells, and refuses a sheet whose cells (values, formatting, merged
ranges, hyperlinks, comments) reach beyond row 10,000 or column 50 (AX), a workbook of more
than 100,000 cells in all or 100 MB uncompressed, and XML with a DTD. What it cannot read is
left to openpyxl to report (loader.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import xml.parsers.expat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hw_picollector_controller.sites.workbook import _col_letter, _sheet_ref

# Bounds of what is loaded, checked on the file before openpyxl reads it (it builds an object
# per cell: 100,000 cells take seconds and about 80 MB). A study of households has hundreds
# of homes with a few meters each: 10,000 rows of devices are 70,000 cells.
MAX_ROWS = 10_000
MAX_COLUMNS = 50
MAX_CELLS = 100_000  # in all sheets, merged ranges counted cell by cell
MAX_UNCOMPRESSED_BYTES = 100_000_000

_REF_RE = re.compile(r"\$?([A-Za-z]{1,3})\$?([0-9]{1,7})")


class _XmlRefused(ValueError):
    """XML the size check does not read: a DTD (entities), or a cell reference that is none."""


class _Stop(Exception):
    """Raised from an XML handler: nothing more to read in this part."""


def _col_number(letters: str) -> int:
    number = 0
    for letter in letters.upper():
        number = number * 26 + ord(letter) - ord("A") + 1
    return number


def _stream_xml(z: zipfile.ZipFile, member: str,
                start: Callable[[str, dict[str, str]], None]) -> None:
    """Call ``start(name without prefix, attributes)`` for every element of a zip member,
    streaming (no tree is built: memory stays flat whatever its size); a DTD is refused."""
    parser = xml.parsers.expat.ParserCreate()

    def no_dtd(*_args: Any) -> None:
        raise _XmlRefused("a DTD")

    parser.StartDoctypeDeclHandler = no_dtd
    parser.EntityDeclHandler = no_dtd
    parser.StartElementHandler = start
    with z.open(member) as fh:
        while chunk := fh.read(1 << 16):
            parser.Parse(chunk, False)
    parser.Parse(b"", True)


def _local(name: str) -> str:
    return name.rpartition(":")[2]


def _sheet_names(z: zipfile.ZipFile) -> dict[str, str]:
    """zip member → sheet name, from ``xl/workbook.xml`` and its relationships, in the
    workbook's order (best effort: a sheet it misses is named by its member)."""
    targets: dict[str, str] = {}

    def rel(tag: str, attrs: dict[str, str]) -> None:
        if _local(tag) == "Relationship" and "Id" in attrs and "Target" in attrs:
            target = attrs["Target"]
            joined = target[1:] if target.startswith("/") else f"xl/{target}"
            targets[attrs["Id"]] = os.path.normpath(joined).replace(os.sep, "/")

    names: dict[str, str] = {}

    def sheet(tag: str, attrs: dict[str, str]) -> None:
        rid = next((v for k, v in attrs.items() if k.endswith(":id")), None)
        if _local(tag) == "sheet" and rid in targets and "name" in attrs:
            names[targets[rid]] = attrs["name"]

    with contextlib.suppress(KeyError, ValueError, xml.parsers.expat.ExpatError):
        _stream_xml(z, "xl/_rels/workbook.xml.rels", rel)
        _stream_xml(z, "xl/workbook.xml", sheet)
    return names


@dataclass
class _Extent:
    """How far the cells and merged ranges of a worksheet reach, and how many cells openpyxl
    would build for them, counted from the cells themselves (``<dimension>`` may say
    anything)."""

    rows: int = 0
    cols: int = 0
    cells: int = 0
    row: int = 0     # the current <row>
    col: int = 0     # the last <c> in it
    budget: int = 0  # cells left under MAX_CELLS; the scan stops beyond
    sheet: bool = False
    at: str = ""     # what the scan read last, for messages

    def reach(self, row: int, col: int) -> None:
        self.rows, self.cols = max(self.rows, row), max(self.cols, col)

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        name = _local(tag)
        if not self.sheet:
            if name not in ("worksheet", "comments"):
                raise _Stop  # another part of the workbook
            self.sheet = True
        elif name == "c":
            ref = attrs.get("r")
            if ref is None:
                self.col += 1
            else:
                self.row, self.col = _cell_ref(ref)
            self.reach(max(self.row, 1), self.col)
            self.cells += 1
            self.at = f"row {self.row}"
        elif name == "row":
            r = attrs.get("r")
            if r is None:
                self.row += 1
            elif r.isascii() and r.isdigit():
                self.row = int(r)
            else:  # openpyxl would also read "1e6" as row 1,000,000
                raise _XmlRefused(f"the row number {r[:20]!r}")
            self.col = 0
            if {k for k in attrs if not k.startswith("{")} - {"r", "spans"}:
                self.reach(self.row, 0)  # openpyxl keeps a row's formatting: one object more
                self.cells += 1
                self.at = f"row {self.row}"
        elif name in ("mergeCell", "hyperlink") and "ref" in attrs:
            # openpyxl builds every cell of a merged range, and of a hyperlink's range
            corners = [_cell_ref(corner) for corner in attrs["ref"].split(":")]
            rows, cols = [r for r, _ in corners], [c for _, c in corners]
            self.reach(max(rows), max(cols))
            self.cells += (max(rows) - min(rows) + 1) * (max(cols) - min(cols) + 1) - \
                (name == "mergeCell")
            what = "merged range" if name == "mergeCell" else "hyperlink of"
            self.at = f"the {what} {attrs['ref']}"
        elif name == "comment" and "ref" in attrs:  # openpyxl builds the cell it annotates
            self.reach(*_cell_ref(attrs["ref"]))
            self.cells += 1
            self.at = f"the comment on {attrs['ref']}"
        if self.cells > self.budget:
            raise _Stop


def _cell_ref(text: str) -> tuple[int, int]:
    found = _REF_RE.fullmatch(text)
    if found is None:
        raise _XmlRefused(f"the cell reference {text[:20]!r}")
    return int(found.group(2)), _col_number(found.group(1))


def _size_problems(path: str) -> list[str]:
    """A workbook too big to load: more than MAX_UNCOMPRESSED_BYTES or MAX_CELLS, or a
    worksheet whose cells reach beyond MAX_ROWS or MAX_COLUMNS. Read from the zip and the XML
    of every part that is a worksheet (or its comments), streaming, and never beyond MAX_CELLS
    cells; what is unreadable here is left to openpyxl to report."""
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
            total = sum(info.file_size for info in members)
            if total > MAX_UNCOMPRESSED_BYTES:
                return [f"too big: {total:,} bytes uncompressed; the importer reads at most "
                        f"{MAX_UNCOMPRESSED_BYTES:,} (a sites workbook is far smaller)"]
            names = _sheet_names(z)
            order = {member: n for n, member in enumerate(names)}  # the workbook's order
            problems: list[str] = []
            cells = 0
            for info in sorted(members, key=lambda i: (order.get(i.filename, len(order)),
                                                       i.filename)):
                extent = _Extent(budget=MAX_CELLS - cells)
                sheet = _sheet_ref(names.get(info.filename, info.filename))
                try:
                    _stream_xml(z, info.filename, extent.start)
                except _XmlRefused as exc:
                    return [f"{info.filename}: {exc} is not read here; save the workbook again "
                            "as an Excel Workbook (.xlsx)"]
                except (_Stop, xml.parsers.expat.ExpatError):
                    if not extent.sheet:
                        continue  # another part, or not XML
                    if extent.cells > extent.budget:
                        return [*problems, (
                            f"{sheet}: more than {MAX_CELLS:,} cells in the workbook by "
                            f"{extent.at} of this sheet; the importer reads at most "
                            f"{MAX_CELLS:,} (10,000 rows of devices are 70,000): delete what a "
                            "sites workbook does not need or move it to another workbook")]
                    raise
                cells += extent.cells
                if extent.rows > MAX_ROWS or extent.cols > MAX_COLUMNS:
                    last = _col_letter(extent.cols)
                    problems.append(
                        f"{sheet}!A1:{last}{extent.rows}: the sheet's cells reach row "
                        f"{extent.rows} and column {extent.cols} ({last}); the importer reads "
                        f"at most {MAX_ROWS} rows and {MAX_COLUMNS} columns "
                        f"(A1:{_col_letter(MAX_COLUMNS)}{MAX_ROWS}): delete the cells beyond "
                        "(a stray value, formatting or merged cells) or move them to another "
                        "workbook")
            return problems
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, xml.parsers.expat.ExpatError,
            RuntimeError, NotImplementedError, EOFError):
        return []  # not a readable workbook: openpyxl says so in its own terms
