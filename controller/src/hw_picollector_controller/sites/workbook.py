"""The sheet reader: a worksheet's header and data rows, every value with its cell address.

``_Table`` maps the header (row 1; columns in any order; names compared case-insensitively with
surrounding spaces stripped) to columns and yields the non-blank data rows as ``_Row``; both
name every place as ``sheet!CELL (column)`` (a header problem ``sheet!1:1 (header row)``, a
merged range ``sheet!A3:A4``), the address each problem and warning of the ``Fleet`` carries.
A cell's value is read as the text a person typed (``_as_text``); TRUE/FALSE, yes/no, 1/0 as
a flag (``_Row.flag``). Which columns a sheet has, and what their values must be, is the
layouts' business: check.py (``sites`` and ``devices``) and legacy.py (the single sheet).

Refused or ignored in any sheet:

- a column that looks like a secret (its name contains token, password, secret, credential,
  api key ...) is a problem, because the inventory must never carry one (tokens live in
  ``host_vars/<host>/vault.yml``, ansible-vault encrypted); a column whose name is close to an
  expected one is a problem ("did you mean"); any other column is ignored with a warning.
  Formula cells, error cells and merged cells in data rows are problems: the importer reads
  what is typed, not what a formula would compute.
- Ansible template syntax (``{{``, ``{%``, ``{#``) in any cell: Ansible would evaluate it when
  it reads the inventory (and the inventory marks every string ``!unsafe`` anyway).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from hw_picollector_controller.sites.fleet import Fleet

TEMPLATE_RE = re.compile(r"\{[{%#]")  # what starts an Ansible (Jinja) expression, tag, comment
SECRET_RE = re.compile(r"token|passw|pwd|secret|credential|api[\s_-]?key|private[\s_-]?key",
                       re.IGNORECASE)
TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")


def _col_letter(col: int) -> str:
    letters = ""
    while col > 0:
        col, rem = divmod(col - 1, 26)
        letters = chr(ord("A") + rem) + letters
    return letters


def _sheet_ref(sheet: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", sheet):
        return sheet
    return "'" + sheet.replace("'", "''") + "'"


def _as_text(value: Any) -> str | None:
    """A cell value as the text a person typed; None for blank."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    text = str(value).strip()
    return text or None


def _parse_bool(text: str | None, raw: Any, default: bool) -> bool | None:
    """TRUE/FALSE, yes/no, 1/0 (any case); blank → default; anything else → None."""
    if text is None:
        return default
    if isinstance(raw, bool):
        return raw
    word = text.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


def _template_problem(value: Any) -> str | None:
    """Ansible template syntax in a cell: it would be evaluated when Ansible reads it."""
    found = TEMPLATE_RE.search(value) if isinstance(value, str) else None
    if found is None:
        return None
    return (f"{found.group()!r} is Ansible template syntax, which Ansible would evaluate when "
            "it reads the inventory; remove it")


class _Table:
    """One sheet: header mapping (canonical name → column), then its non-blank data rows."""

    def __init__(self, ws: Any, expected: tuple[str, ...], required: tuple[str, ...],
                 fleet: Fleet) -> None:
        self.ws, self.fleet = ws, fleet
        self.sheet = _sheet_ref(str(ws.title))
        self.columns: dict[str, int] = {}
        self.names: dict[int, str] = {}
        self.skip: set[tuple[int, int]] = set()  # (row, col) already reported or merged
        self.usable = self._read_header(expected, required)
        if self.usable:
            self._check_merged()

    def cell(self, col: int, row: int) -> str:
        return f"{self.sheet}!{_col_letter(col)}{row}"

    def at(self, name: str, row: int) -> str:
        col = self.columns.get(name)
        where = self.cell(col, row) if col else f"{self.sheet}!{row}:{row}"
        return f"{where} ({name})"

    def problem(self, text: str) -> None:
        self.fleet.problems.append(text)

    def _read_header(self, expected: tuple[str, ...], required: tuple[str, ...]) -> bool:
        ws = self.ws
        unknown: list[tuple[int, str]] = []
        seen_any = False
        for col in range(1, ws.max_column + 1):
            cell = ws.cell(row=1, column=col)
            if cell.data_type == "f":
                self.problem(f"{self.cell(col, 1)} (header): a formula; type the column name")
                seen_any = True
                continue
            raw = _as_text(cell.value)
            if raw is None:
                continue
            seen_any = True
            name = raw.lower()
            self.names[col] = name
            if name in expected:
                if name in self.columns:
                    first = _col_letter(self.columns[name])
                    self.problem(f"{self.cell(col, 1)} ({name}): column {name!r} appears twice "
                                 f"(also column {first})")
                else:
                    self.columns[name] = col
            elif SECRET_RE.search(name):
                self.problem(
                    f"{self.cell(col, 1)} ({raw}): looks like a secret column; the workbook "
                    "and the inventory never carry secrets: remove it and keep tokens and "
                    "passwords in host_vars/<host>/vault.yml (ansible-vault)")
            else:
                unknown.append((col, raw))
        if not seen_any:
            self.problem(f"{self.sheet}!1:1 (header row): empty; expected the columns "
                         f"{', '.join(expected)}")
            return False
        suggested: set[str] = set()
        for col, raw in unknown:
            missing = [e for e in expected if e not in self.columns]
            close = difflib.get_close_matches(raw.lower(), missing, n=1, cutoff=0.75)
            if close:
                suggested.add(close[0])
                need = " (a required column)" if close[0] in required else ""
                self.problem(f"{self.cell(col, 1)} ({raw}): unknown column; did you mean "
                             f"{close[0]!r}{need}?")
            else:
                self.fleet.warnings.append(
                    f"{self.cell(col, 1)} ({raw}): unknown column, ignored "
                    f"(known: {', '.join(expected)})")
        for name in required:
            if name not in self.columns and name not in suggested:
                self.problem(f"{self.sheet}!1:1 (header row): missing column {name!r} "
                             f"(required; expected columns: {', '.join(expected)})")
        return True

    def _check_merged(self) -> None:
        for rng in sorted(self.ws.merged_cells.ranges, key=lambda r: (r.min_row, r.min_col)):
            if rng.max_row < 2:
                continue
            cols = [self.names.get(c, _col_letter(c)) for c in range(rng.min_col, rng.max_col + 1)]
            self.problem(f"{self.sheet}!{rng.coord} ({', '.join(cols)}): merged cells; unmerge "
                         "them and fill in every row")
            for row in range(max(rng.min_row, 2), rng.max_row + 1):
                for col in range(rng.min_col, rng.max_col + 1):
                    if (row, col) != (rng.min_row, rng.min_col):
                        self.skip.add((row, col))

    def _data_cells(self) -> Iterator[tuple[int, list[Any]]]:
        """(row number, its cells by column) of every data row holding a cell: only the cells
        the sheet has (openpyxl's iter_rows would create every cell of the rectangle up to
        max_row by max_column first, seconds and hundreds of MB for one stray cell)."""
        by_row: dict[int, dict[int, Any]] = {}
        for (row, col), cell in self.ws._cells.items():
            if row >= 2:
                by_row.setdefault(row, {})[col] = cell
        for row, col in self.skip:
            by_row.setdefault(row, {}).setdefault(col, self.ws.cell(row=row, column=col))
        for number in sorted(by_row):
            cells = by_row[number]
            yield number, [cells[col] for col in sorted(cells)]

    def rows(self) -> Iterator[_Row]:
        if not self.usable:
            return
        wanted = {col: name for name, col in self.columns.items()}
        headerless: set[int] = set()
        for number, cells in self._data_cells():
            row = _Row(self, number)
            blank = True
            for cell in cells:
                col = int(cell.column)
                name = wanted.get(col)
                if name is None:
                    if (col not in self.names and col not in headerless
                            and _as_text(cell.value) is not None):
                        headerless.add(col)
                        self.fleet.warnings.append(
                            f"{self.cell(col, number)}: column {_col_letter(col)} has values "
                            "but no header, ignored")
                    continue
                if (number, col) in self.skip:
                    row.unreadable.add(name)
                    blank = False
                    continue
                if cell.data_type == "f":
                    self.problem(f"{self.at(name, number)}: a formula ({cell.value!s}); the "
                                 "importer reads typed values only: paste the value instead")
                    row.unreadable.add(name)
                    blank = False
                    continue
                if cell.data_type == "e":
                    self.problem(f"{self.at(name, number)}: an error value {cell.value!s}")
                    row.unreadable.add(name)
                    blank = False
                    continue
                if _as_text(cell.value) is not None:
                    blank = False
                    template = _template_problem(cell.value)
                    if template:
                        self.problem(f"{self.at(name, number)}: {template}")
                        row.unreadable.add(name)
                        continue
                    row.values[name] = cell.value
            if not blank:
                yield row


@dataclass
class _Row:
    table: _Table
    number: int
    values: dict[str, Any] = field(default_factory=dict)
    unreadable: set[str] = field(default_factory=set)

    def at(self, name: str) -> str:
        return self.table.at(name, self.number)

    def where(self) -> str:
        return f"{self.table.sheet}!{self.number}:{self.number}"

    def cell(self, name: str) -> str:
        col = self.table.columns.get(name)
        return self.table.cell(col, self.number) if col else self.where()

    def raw(self, name: str) -> Any:
        return self.values.get(name)

    def text(self, name: str) -> str | None:
        return _as_text(self.values.get(name))

    def required(self, name: str, why: str = "required") -> str | None:
        value = self.text(name)
        if value is None and name in self.table.columns and name not in self.unreadable:
            self.table.problem(f"{self.at(name)}: missing value ({why})")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = _parse_bool(self.text(name), self.raw(name), default)
        if value is None:
            blank = "TRUE" if default else "FALSE"
            self.table.problem(f"{self.at(name)}: {self.text(name)!r} is not a yes/no value "
                               f"(use TRUE/FALSE, yes/no or 1/0; blank means {blank})")
            return default
        return value
