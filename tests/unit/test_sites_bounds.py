"""Review follow-ups of the workbook bounds and template checks: what openpyxl builds cells
for besides <c> and merged ranges (hyperlink ranges, comments, formatted rows), and template
syntax spelled with escapes inside a legacy ``configurations`` list."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from openpyxl import Workbook
from openpyxl.comments import Comment

from hw_picollector_controller import sites
from hw_picollector_controller.sites import bounds
from tests.unit.test_sites import LEGACY, edited, make_workbook, run_check, two_sheets
from tests.unit.test_sites_hardening import _devices_part, _rewrite_member


def _after_sheet_data(path: Path, xml: str) -> None:
    _rewrite_member(path, re.escape(_devices_part(path)),
                    lambda text: text.replace("</sheetData>", f"</sheetData>{xml}", 1))


def test_a_hyperlink_range_counts_its_cells(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # openpyxl gives every cell of a hyperlink's range its own copy of the link
    monkeypatch.setattr(bounds, "MAX_CELLS", 1_000)
    path = two_sheets(tmp_path)
    _after_sheet_data(path, '<hyperlinks><hyperlink ref="A5:J200" display="x"/></hyperlinks>')
    rc, out, _ = run_check(path, capsys)
    assert rc == 1
    assert out == (f"{path}: devices: more than 1,000 cells in the workbook by the hyperlink "
                   "of A5:J200 of this sheet; the importer reads at most 1,000 (10,000 rows of "
                   "devices are 70,000): delete what a sites workbook does not need or move it "
                   "to another workbook\n")


def test_a_far_hyperlink_is_beyond_the_cap(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = two_sheets(tmp_path)
    _after_sheet_data(path, '<hyperlinks><hyperlink ref="B20000" display="x"/></hyperlinks>')
    rc, out, _ = run_check(path, capsys)
    assert rc == 1
    assert f"{path}: devices!A1:G20000: the sheet's cells reach row 20000" in out, out


def test_a_formatted_row_far_away_is_beyond_the_cap(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = two_sheets(tmp_path)
    _rewrite_member(path, re.escape(_devices_part(path)), lambda text: text.replace(
        "</sheetData>", '<row r="20000" ht="30" customHeight="1"/></sheetData>', 1))
    rc, out, _ = run_check(path, capsys)
    assert rc == 1
    assert f"{path}: devices!A1:G20000: the sheet's cells reach row 20000" in out, out


def test_a_row_number_openpyxl_reads_as_a_float_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = two_sheets(tmp_path)  # openpyxl: row 1,000,000; a plain digit check: the next row
    _rewrite_member(path, re.escape(_devices_part(path)), lambda text: text.replace(
        "</sheetData>", '<row r="1e6"><c t="inlineStr"><is><t>x</t></is></c></row>'
        "</sheetData>", 1))
    rc, out, _ = run_check(path, capsys)
    assert rc == 1
    assert "the row number '1e6' is not read here" in out, out


def test_a_comment_far_away_is_beyond_the_cap(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    def hook(wb: Workbook) -> None:
        wb["devices"]["B3"].comment = Comment("note", "someone")

    path = two_sheets(tmp_path, hook=hook)
    _rewrite_member(path, r"xl/comments/.*\.xml",
                    lambda text: text.replace('ref="B3"', 'ref="B20000"'))
    rc, out, _ = run_check(path, capsys)
    assert rc == 1
    assert "the sheet's cells reach row 20000 and column 2 (B)" in out, out


@pytest.mark.parametrize("escaped", [
    '"label": "\\u007b{ lookup(\'pipe\', \'id\') }}"',   # JSON
    "'label': '\\x7b% if 1 %}x\\x7b% endif %}'",          # Python literal
])
def test_template_syntax_spelled_with_escapes_in_a_legacy_list_is_reported(
        escaped: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = "[{" + escaped + ", 'serial': '3c39e7000003', 'role': 'grid'}]"
    if escaped.startswith('"'):
        conf = conf.replace("'", '"').replace('"pipe"', "'pipe'").replace('"id"', "'id'")
        json.loads(conf)
    assert not sites.TEMPLATE_RE.search(conf)  # the cell itself has none
    rows = [LEGACY[0], edited([LEGACY[2]], 1, 3, conf)[0]]
    path = make_workbook(tmp_path / "users_config.xlsx", {"Sheet1": rows})
    rc, out, _ = run_check(path, capsys)
    assert rc == 1
    assert re.search(r"Sheet1!C2 \(configurations\): entry 1: key 'label': '\{[{%]' is Ansible "
                     "template syntax", out), out
