"""`hwpc sites`: what a hostile or careless workbook cannot do.

Ansible never evaluates a string of the inventory (every one is ``!unsafe``, and template
syntax in a cell is a problem); timezones are checked without a system tz database; a huge
sheet is refused before it is loaded; site ids whose Cassandra logins collide are refused;
identifiers never pass with a trailing newline.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openpyxl import Workbook

from hw_picollector import config
from hw_picollector_controller import schema, sites
from hw_picollector_controller.sites import bounds
from tests.unit.test_sites import (
    DEVICES,
    EXAMPLE,
    LEGACY,
    SITES,
    edited,
    make_workbook,
    run_check,
    run_import,
    two_sheets,
    unwrap_unsafe,
)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} not installed")
    return str(path)


def _ansible_env(tmp_path: Path) -> dict[str, str]:
    """Ansible with its own configuration: none of the repository's (fact cache, inventory)."""
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\nstdout_callback = ansible.builtin.default\n"
                   "interpreter_python = auto_silent\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(cfg), ANSIBLE_HOME=str(tmp_path / "ansible-home"),
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
               ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_DEPRECATION_WARNINGS="0")
    return env


# --------------------------------------------------------------------------- 1. templates


def _hostile(tmp_path: Path, what: str) -> tuple[str, Path]:
    marker = tmp_path / f"MARKER-{what}"
    return f"{{{{ lookup('pipe', 'touch {marker}') }}}}", marker


# Every column of both sheets, by (sheet, Excel row, column number, name).
SITE_COLUMNS = [("sites", 2, i + 1, name) for i, name in enumerate(SITES[0])]
DEVICE_COLUMNS = [("devices", 2, i + 1, name) for i, name in enumerate(DEVICES[0])]


@pytest.mark.parametrize("opening", ["{{", "{%", "{#"])
@pytest.mark.parametrize(("sheet", "row", "col", "name"), SITE_COLUMNS + DEVICE_COLUMNS,
                         ids=[f"{c[0]}.{c[3]}" for c in SITE_COLUMNS + DEVICE_COLUMNS])
def test_template_syntax_in_a_cell_is_a_problem_naming_it(
        sheet: str, row: int, col: int, name: str, opening: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    closing = {"{{": "}}", "{%": "%}", "{#": "#}"}[opening]
    value = f"x {opening} lookup('pipe', 'touch {tmp_path / 'MARKER'}') {closing}"
    rows = {"sites": SITES, "devices": DEVICES}
    rows[sheet] = edited(rows[sheet], row, col, value)
    path = two_sheets(tmp_path, rows["sites"], rows["devices"])
    rc, out, _ = run_check(path, capsys)
    assert rc == 1
    cell = f"{sheet}!{chr(ord('A') + col - 1)}{row} ({name})"
    problems = [line for line in out.splitlines() if f"{path}: {cell}: " in line]
    assert problems == [f"{path}: {cell}: {opening!r} is Ansible template syntax, which "
                        "Ansible would evaluate when it reads the inventory; remove it"], out
    assert not (tmp_path / "MARKER").exists()


def test_template_syntax_in_every_free_text_column_is_reported(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes, _ = _hostile(tmp_path, "notes")
    label, _ = _hostile(tmp_path, "label")
    sites_rows = edited(SITES, 3, 5, notes)
    devices_rows = edited(edited(DEVICES, 3, 7, label), 2, 7, "{# a comment #}")
    path = two_sheets(tmp_path, sites_rows, devices_rows)
    rc, out, _ = run_check(path, capsys)
    assert rc == 1
    for cell in ("sites!E3 (notes)", "devices!G3 (label)", "devices!G2 (label)"):
        assert f"{path}: {cell}: '{{" in out, (cell, out)
        assert "is Ansible template syntax" in out
    assert out.splitlines()[-1] == f"{path}: 3 problems"
    rc, _, _ = run_import(path, tmp_path / "inv", capsys)
    assert rc == 1 and not (tmp_path / "inv").exists()
    assert not list(tmp_path.glob("MARKER-*"))


def test_template_syntax_in_the_legacy_sheet_is_reported(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    label, _ = _hostile(tmp_path, "label")
    conf = json.dumps([{"serial": "3c39e7000003", "role": "grid", "label": label}])
    rows = [[*LEGACY[0], "notes"], [*LEGACY[1], "{% if true %}x{% endif %}"],
            [*edited([LEGACY[2]], 1, 3, conf)[0], None]]
    path = make_workbook(tmp_path / "users_config.xlsx", {"Sheet1": rows})
    rc, out, _ = run_check(path, capsys)
    assert rc == 1
    assert f"{path}: Sheet1!D2 (notes): '{{%' is Ansible template syntax" in out, out
    assert f"{path}: Sheet1!C3 (configurations): '{{{{' is Ansible template syntax" in out, out


def _hostile_fleet(tmp_path: Path) -> tuple[sites.Fleet, dict[str, str], list[Path]]:
    """A fleet whose every string is hostile, as if the workbook check had been bypassed.

    Host pi1: every field a lookup; host pi2: a valid site whose labels are template text
    (for the collector role's templates, which validate the config they render)."""
    texts: dict[str, str] = {}
    markers: list[Path] = []
    for what in ("site", "timezone", "serial", "product_type", "role", "api", "address",
                 "label", "label2"):
        texts[what], marker = _hostile(tmp_path, what)
        markers.append(marker)
    stmt_marker = tmp_path / "MARKER-statement"
    markers.append(stmt_marker)
    texts["label3"] = (f"it's \"quoted\"\n{{% set x = lookup('pipe', 'touch {stmt_marker}') %}}"
                       "{# hidden #} ünïcode: {{ 7 * 7 }}")
    fleet = sites.Fleet(
        sites=[sites.Site(site_id=texts["site"], host="pi1", timezone=texts["timezone"],
                          active=True, where="sites!2:2"),
               sites.Site(site_id="CDB002", host="pi2", timezone=None, active=True,
                          where="sites!3:3")],
        devices=[sites.Device(site_id=texts["site"], serial=texts["serial"],
                              product_type=texts["product_type"], role=texts["role"],
                              api=texts["api"], address=texts["address"],
                              label=texts["label"], where="devices!2:2"),
                 sites.Device(site_id="CDB002", serial="3c39e7000002", product_type="HWE-P1",
                              role="grid", api="v1", address="127.0.0.1:18101",
                              label=texts["label2"], where="devices!3:3"),
                 sites.Device(site_id="CDB002", serial="3c39e7000003", product_type="HWE-KWH3",
                              role="production", api="v2", address=None,
                              label=texts["label3"], where="devices!4:4")])
    return fleet, texts, markers


def test_every_inventory_string_is_unsafe_and_the_yaml_deterministic(tmp_path: Path) -> None:
    fleet, texts, _ = _hostile_fleet(tmp_path)
    text = sites.render(fleet, "hostile.xlsx")
    assert text == sites.render(fleet, "hostile.xlsx")
    scalars = 0

    def walk(node: yaml.Node) -> None:
        nonlocal scalars
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                assert key.tag == "tag:yaml.org,2002:str", key
                walk(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)
        else:
            assert node.tag == "!unsafe", node
            scalars += 1

    walk(yaml.compose(text, Loader=yaml.SafeLoader))
    assert scalars == 8 + 12  # pi1: site, timezone, 6 device fields; pi2: site, 6 + 5
    # Structure and values read back (tags aside) exactly as written.

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
    data = yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)
    hosts = data["all"]["children"]["collectors"]["hosts"]
    assert hosts["pi1"]["hwpc_site_id"] == texts["site"]
    assert hosts["pi1"]["hwpc_timezone"] == texts["timezone"]
    assert hosts["pi1"]["hwpc_devices"] == [{k: texts[k] for k in (
        "serial", "product_type", "role", "api", "address", "label")}]
    assert [d["label"] for d in hosts["pi2"]["hwpc_devices"]] == [texts["label2"],
                                                                   texts["label3"]]


def test_a_workbook_name_cannot_inject_yaml(tmp_path: Path) -> None:
    fleet = sites.Fleet(sites=[sites.Site("CDB001", "pi1", None, True, "sites!2:2")])
    text = sites.render(fleet, "a.xlsx\nall: {vars: {x: '{{ 1 }}'}}\r\n")
    assert text.splitlines()[1].startswith(sites.HEADER_MARK)
    assert yaml.safe_load(text.replace("!unsafe ", ""))["all"] == {
        "children": {"collectors": {"hosts": {"pi1": {"hwpc_devices": [],
                                                       "hwpc_site_id": "CDB001"}}}}}


PLAY = """\
---
- name: Read the imported inventory
  hosts: collectors
  connection: local
  gather_facts: false
  tasks:
    - name: Show the devices
      ansible.builtin.debug:
        var: hwpc_devices
    - name: Show the site
      ansible.builtin.debug:
        msg: "{{ hwpc_site_id }} {{ hwpc_timezone | default('') }}"
    - name: Write what Ansible read
      ansible.builtin.copy:
        content: "{{ {'site_id': hwpc_site_id, 'timezone': hwpc_timezone | default(None),
                      'devices': hwpc_devices, 'login': hwpc_cassandra_username}
                     | to_nice_json }}\\n"
        dest: "{{ out_dir }}/{{ inventory_hostname }}.json"
        mode: "0600"
    - name: Render the collector role's config and local fact
      ansible.builtin.template:
        src: "{{ repo }}/roles/collector/templates/etc/{{ item }}.j2"
        dest: "{{ out_dir }}/{{ inventory_hostname }}-{{ item | basename }}"
        mode: "0600"
      loop:
        - hw-picollector/config.yml
        - ansible/facts.d/hw_picollector.fact
"""


def test_ansible_never_evaluates_the_imported_strings(tmp_path: Path) -> None:
    playbook, adhoc = _tool("ansible-playbook"), _tool("ansible")
    fleet, texts, markers = _hostile_fleet(tmp_path)
    inv = tmp_path / "inv"
    assert sites.write_atomic(inv / "hosts.yml", sites.render(fleet, "hostile.xlsx"))
    # The collector role's defaults and vars, at the lowest precedence (as the role has them).
    group_vars = inv / "group_vars" / "all"
    group_vars.mkdir(parents=True)
    for part in ("defaults", "vars"):
        (group_vars / f"{part}.yml").write_text(
            (REPO / "roles" / "collector" / part / "main.yml").read_text(encoding="utf-8"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (tmp_path / "play.yml").write_text(PLAY, encoding="utf-8")
    env = _ansible_env(tmp_path)
    extra = ["-e", f"out_dir={out_dir}", "-e", f"repo={REPO}",
             "-e", f"ansible_python_interpreter={sys.executable}",
             "-e", "_hwpc_config_stat={}"]
    result = subprocess.run([playbook, "-i", str(inv), str(tmp_path / "play.yml"), *extra],
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for marker in markers:
        assert not marker.exists(), f"Ansible ran a lookup from the inventory: {marker}"
    assert json.dumps(texts["label"])[1:-1] in result.stdout
    assert json.dumps(texts["serial"])[1:-1] in result.stdout
    read = json.loads((out_dir / "pi1.json").read_text(encoding="utf-8"))
    assert read == {"site_id": texts["site"], "timezone": texts["timezone"],
                    "devices": [{k: texts[k] for k in ("address", "api", "label",
                                                        "product_type", "role", "serial")}],
                    "login": sites.cassandra_login(texts["site"])}
    # The roles derive from the values as data (the login role's name from the site id).
    assert json.loads((out_dir / "pi2.json").read_text(encoding="utf-8"))["login"] == \
        "pi_cdb002"
    # The collector role renders the strings as data: a config hwpc accepts, labels verbatim.
    rendered = out_dir / "pi2-config.yml"
    cfg = config.parse_config(yaml.safe_load(rendered.read_text(encoding="utf-8")),
                              str(rendered))
    assert cfg.site_id == "CDB002"
    assert [d.label for d in cfg.devices] == [texts["label2"], texts["label3"]]
    assert cfg.devices[1].token_file is not None
    assert cfg.devices[1].token_file.endswith("/token-3c39e7000003")
    fact = json.loads((out_dir / "pi1-hw_picollector.fact").read_text(encoding="utf-8"))
    assert (fact["site_id"], fact["timezone"], fact["devices"]) == (
        texts["site"], texts["timezone"], [texts["serial"]])

    result = subprocess.run([adhoc, "pi1", "-i", str(inv / "hosts.yml"), "-c", "local",
                             "-m", "ansible.builtin.debug", "-a", "var=hwpc_devices"],
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    shown = json.loads(result.stdout[result.stdout.index("{"):])
    assert shown["hwpc_devices"][0]["label"] == texts["label"]
    for marker in markers:
        assert not marker.exists(), f"Ansible ran a lookup from the inventory: {marker}"


def test_the_example_still_imports_to_a_working_inventory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory = _tool("ansible-inventory")
    assert run_import(EXAMPLE, tmp_path / "inv", capsys)[0] == 0
    result = subprocess.run([inventory, "-i", str(tmp_path / "inv" / "hosts.yml"), "--list"],
                            capture_output=True, text=True, env=_ansible_env(tmp_path),
                            timeout=120, check=True)
    pi1 = unwrap_unsafe(json.loads(result.stdout)["_meta"]["hostvars"]["pi1"])
    assert pi1["hwpc_site_id"] == "CDB001"
    assert pi1["hwpc_timezone"] == "Europe/Amsterdam"
    assert pi1["hwpc_devices"][0] == {"address": "127.0.0.1:18101", "api": "v1",
                                      "label": "meter cupboard", "product_type": "HWE-P1",
                                      "role": "grid", "serial": "3c39e7a10001"}


def test_the_committed_example_inventory_is_what_import_writes(tmp_path: Path) -> None:
    committed = REPO / "inventories" / "example" / "hosts.yml"
    text = sites.render(sites.load(EXAMPLE), EXAMPLE.name)
    assert committed.read_text(encoding="utf-8") == text


# --------------------------------------------------------------------------- 2. timezone


@pytest.fixture
def no_system_tz_database(tmp_path: Path) -> Iterator[None]:
    empty = tmp_path / "no-zoneinfo"
    empty.mkdir()
    zoneinfo.reset_tzpath(to=[str(empty)])
    try:
        yield
    finally:
        zoneinfo.reset_tzpath()


@pytest.mark.usefixtures("no_system_tz_database")
def test_timezones_are_checked_without_a_system_tz_database(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = two_sheets(tmp_path, edited(SITES, 3, 3, "Europe/Amsterdm"), name="bad.xlsx")
    rc, out, err = run_check(bad, capsys)
    assert rc == 1, out + err
    assert (f"{bad}: sites!C3 (timezone): unknown timezone 'Europe/Amsterdm' (expected an IANA "
            "name such as 'Europe/Amsterdam'); did you mean 'Europe/Amsterdam'?") in out
    assert "not checked" not in err
    good = two_sheets(tmp_path, edited(SITES, 3, 3, "America/Argentina/Buenos_Aires"),
                      name="good.xlsx")
    rc, out, err = run_check(good, capsys)
    assert rc == 0, out + err
    assert err == ""


@pytest.mark.parametrize("zone", ["../../etc/passwd", "/etc/localtime", "Europe/",
                                  "europe/amsterdam"])
def test_malformed_timezones_are_problems(zone: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_check(two_sheets(tmp_path, edited(SITES, 2, 3, zone)), capsys)
    assert rc == 1
    assert f"sites!C2 (timezone): unknown timezone {zone!r}" in out


def test_tzdata_is_a_controller_dependency() -> None:
    project = tomllib.loads((REPO / "controller" / "pyproject.toml").read_text(encoding="utf-8"))
    assert any(d.startswith("tzdata") for d in project["project"]["dependencies"])


# --------------------------------------------------------------------------- 3. big sheets


def _with_far_cell(wb: Workbook) -> None:
    wb["devices"].cell(row=4000, column=200, value="x")


def _rewrite_member(path: Path, member_re: str, edit: Any) -> None:
    """Rewrite the zip members whose name matches ``member_re`` with ``edit(text)``."""
    with zipfile.ZipFile(path) as z:
        members = [(info, z.read(info)) for info in z.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for info, data in members:
            new = edit(data.decode("utf-8")).encode("utf-8") \
                if re.fullmatch(member_re, info.filename) else data
            z.writestr(info, new, zipfile.ZIP_DEFLATED)


def _devices_part(path: Path) -> str:
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.startswith("xl/worksheets/") and b"3c39e7000001" in z.read(name):
                return name
    raise AssertionError("no devices sheet")


def test_a_sheet_beyond_the_cap_is_refused_before_it_is_loaded(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = two_sheets(tmp_path, hook=_with_far_cell)
    assert path.stat().st_size < 20_000
    rc, out, _ = run_check(path, capsys)
    assert rc == 1
    assert out == (f"{path}: devices!A1:GR4000: the sheet's cells reach row 4000 and column 200 "
                   "(GR); the importer reads at most 10000 rows and 50 columns (A1:AX10000): "
                   "delete the cells beyond (a stray value, formatting or merged cells) or "
                   "move them to another workbook\n")


def test_the_cap_is_computed_from_the_cells_not_the_sheets_dimension(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = two_sheets(tmp_path, hook=lambda wb: wb["devices"].cell(row=12001, column=1,
                                                                   value="x"))
    _rewrite_member(path, re.escape(_devices_part(path)),
                    lambda xml: re.sub(r'<dimension ref="[^"]*"', '<dimension ref="A1:G4"', xml))
    rc, out, _ = run_check(path, capsys)
    assert rc == 1
    assert out.startswith(f"{path}: devices!A1:G12001: the sheet's cells reach row 12001 and "
                          "column 7 (G); the importer reads at most 10000 rows"), out


def test_a_styled_empty_cell_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from openpyxl.styles import Font

    def hook(wb: Workbook) -> None:
        wb["sites"].cell(row=3, column=60).font = Font(bold=True)

    rc, out, _ = run_check(two_sheets(tmp_path, hook=hook), capsys)
    assert rc == 1
    assert "sites!A1:BH3: the sheet's cells reach row 3 and column 60 (BH)" in out, out


def test_a_huge_merged_range_is_refused(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = two_sheets(tmp_path)
    _rewrite_member(path, re.escape(_devices_part(path)), lambda xml: xml.replace(
        "</sheetData>", '</sheetData><mergeCells count="1"><mergeCell ref="B5:B20000"/>'
        "</mergeCells>"))
    rc, out, _ = run_check(path, capsys)
    assert rc == 1
    assert f"{path}: devices!A1:G20000: the sheet's cells reach row 20000 and column 7" in out


def test_a_merged_range_of_too_many_cells_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = two_sheets(tmp_path)  # within 10000 x 50, but 500,000 cells for openpyxl to build
    _rewrite_member(path, re.escape(_devices_part(path)), lambda xml: xml.replace(
        "</sheetData>", '</sheetData><mergeCells count="1"><mergeCell ref="A5:AX10000"/>'
        "</mergeCells>"))
    rc, out, _ = run_check(path, capsys)
    assert rc == 1
    assert out == (f"{path}: devices: more than 100,000 cells in the workbook by the merged "
                   "range A5:AX10000 of this sheet; the importer reads at most 100,000 (10,000 "
                   "rows of devices are 70,000): delete what a sites workbook does not need or "
                   "move it to another workbook\n")


def test_too_many_cells_in_all_are_refused_without_reading_them_all(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bounds, "MAX_CELLS", 30)  # sites: 15 cells, devices: 28
    path = two_sheets(tmp_path)
    rc, out, _ = run_check(path, capsys)
    assert rc == 1
    assert out == (f"{path}: devices: more than 30 cells in the workbook by row 3 of this "
                   "sheet; the importer reads at most 30 (10,000 rows of devices are 70,000): "
                   "delete what a sites workbook does not need or move it to another "
                   "workbook\n")
    monkeypatch.setattr(bounds, "MAX_CELLS", 43)
    assert run_check(path, capsys)[0] == 0


def test_a_workbook_too_big_uncompressed_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bounds, "MAX_UNCOMPRESSED_BYTES", 20_000)
    rows = [*DEVICES, *[["CDB002", f"5c2faf{n:06x}", "HWE-SKT", "consumption", None, "v1",
                         "a long enough label " * 3] for n in range(10, 300)]]
    path = two_sheets(tmp_path, devices_rows=rows)
    rc, out, _ = run_check(path, capsys)
    assert rc == 1
    assert re.fullmatch(rf"{re.escape(str(path))}: too big: [0-9,]+ bytes uncompressed; the "
                        r"importer reads at most 20,000 \(a sites workbook is far smaller\)\n",
                        out), out


def test_a_dtd_in_the_workbook_is_refused(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = two_sheets(tmp_path)
    member = _devices_part(path)
    _rewrite_member(path, re.escape(member), lambda xml: xml.replace(
        "<worksheet", '<!DOCTYPE worksheet [<!ENTITY a "aaaaaaaaaa">]><worksheet', 1))
    rc, out, _ = run_check(path, capsys)
    assert rc == 1
    assert out == (f"{path}: {member}: a DTD is not read here; save the workbook again as an "
                   "Excel Workbook (.xlsx)\n")


def test_a_sheet_at_the_cap_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from openpyxl.styles import Font

    def hook(wb: Workbook) -> None:
        wb["sites"].cell(row=10000, column=50).font = Font(bold=True)

    rc, out, err = run_check(two_sheets(tmp_path, hook=hook), capsys)
    assert rc == 0, out + err


# --------------------------------------------------------------------------- 4. logins


def test_site_ids_with_the_same_cassandra_login_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sites_rows = [*SITES, ["CDB-001", "pi3", None, True, None], ["cdb.001", "pi4", None, False,
                                                                  None]]
    rows = [[*r] for r in sites_rows]
    rows[1][0] = "CDB_001"
    devices_rows = edited(edited(DEVICES, 2, 1, "CDB_001"), 3, 1, "CDB_001")
    path = two_sheets(tmp_path, rows, devices_rows)
    rc, out, _ = run_check(path, capsys)
    assert rc == 1
    for cell, site_id in (("A4", "CDB-001"), ("A5", "cdb.001")):
        assert (f"{path}: sites!{cell} (site_id): site id {site_id!r} has the same Cassandra "
                "login 'pi_cdb_001' as 'CDB_001' (sites!A2); the login is 'pi_' and the site "
                "id in lowercase with any character other than a-z, 0-9 and '_' as '_': "
                "rename one of them") in out, out
    assert out.splitlines()[-1] == f"{path}: 2 problems"


def test_a_site_id_too_long_for_a_cassandra_login_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    longest = "S" * 45  # pi_ + 45 = 48, the longest role name
    rows = edited(edited(SITES, 2, 1, longest), 3, 1, longest + "X")
    devices_rows = edited(edited(DEVICES, 2, 1, longest), 3, 1, longest)
    devices_rows = edited(devices_rows, 4, 1, longest + "X")
    path = two_sheets(tmp_path, rows, devices_rows)
    rc, out, _ = run_check(path, capsys)
    assert rc == 1
    assert out == (f"{path}: sites!A3 (site_id): site id {longest + 'X'!r}: its Cassandra login "
                   f"'pi_{longest.lower()}x' would have 49 characters, at most 48 are allowed; "
                   "use a shorter site id\n")


def test_the_login_rule_is_the_roles(tmp_path: Path) -> None:
    """sites.cassandra_login() gives what the collector role's hwpc_cassandra_username does."""
    adhoc = _tool("ansible")
    defaults = yaml.safe_load((REPO / "roles" / "collector" / "defaults" / "main.yml")
                              .read_text(encoding="utf-8"))
    ids = ["CDB001", "CDB-001", "cdb.001", "Ech_003", "a.B-c_D", "X" * 45]
    inv = tmp_path / "inv"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump(
        {"hwpc_cassandra_username": defaults["hwpc_cassandra_username"]}))
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {
        f"h{i}": {"hwpc_site_id": site_id} for i, site_id in enumerate(ids)}}}))
    result = subprocess.run([adhoc, "all", "-i", str(inv), "-c", "local", "-m",
                             "ansible.builtin.debug", "-a", "var=hwpc_cassandra_username"],
                            capture_output=True, text=True, env=_ansible_env(tmp_path),
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    found = dict(re.findall(r'^(h\d+) \| SUCCESS => \{\s*"hwpc_cassandra_username": "([^"]*)"',
                            result.stdout, re.MULTILINE))
    assert found == {f"h{i}": sites.cassandra_login(site_id) for i, site_id in enumerate(ids)}
    assert all(schema.IDENT.fullmatch(login) for login in found.values())


# --------------------------------------------------------------------------- 5. full matches


def _discovered(serial: str) -> bool:
    from hw_picollector import discovery

    return len(discovery.records_to_devices([(discovery.V1_SERVICE, {
        "serial": serial, "product_type": "HWE-P1"}, ["192.0.2.7"], 80)])) == 1


def _cert_name_ok(name: str) -> bool:
    from hw_picollector.devices import tls

    return tls.parse_cert_hostname(name) is not None


def _pair_token_ok(token: str) -> bool:
    from hw_picollector.devices import pair
    from hw_picollector.devices.errors import InvalidResponse
    from hw_picollector.devices.transport import Response

    resp = Response(200, json.dumps({"token": token}).encode(), "https://127.0.0.1/api/user")
    try:
        pair._token(resp, "3c39e7000001", resp.url)
    except InvalidResponse:
        return False
    return True


@pytest.mark.parametrize(("check", "value"), [
    (lambda v: sites._serial_problem(v, v) is None, "3c39e7000001"),
    (lambda v: sites._host_problem(v) is None, "pi1"),
    (lambda v: sites._site_id_problem(v) is None, "CDB001"),
    (config.valid_address, "pi1"),
    (config.valid_address, "127.0.0.1:18101"),
    (config.valid_address, "[::1]:18101"),
    (_discovered, "3c39e7000001"),
    (_cert_name_ok, "appliance/p1dongle/3c39e7000001"),
    (_pair_token_ok, "0123456789abcdef0123456789ABCDEF"),
    (lambda v: schema.IDENT.fullmatch(v) is not None, "pi_cdb001"),
], ids=["sites serial", "sites host", "sites site id", "address", "address:port",
        "[v6]:port", "discovery serial", "certificate name", "pair token", "schema ident"])
def test_a_trailing_newline_is_refused(check: Any, value: str) -> None:
    assert check(value)
    assert not check(value + "\n")


@pytest.mark.parametrize(("key", "value"), [
    ("site_id", "CDB001\n"),
    ("serial", "3c39e7000001\n"),
    ("keyspace", "homewizard\n"),
    ("address", "127.0.0.1:18101\n"),
    ("address", "[::1]junk"),
])
def test_config_refuses_identifiers_with_a_trailing_newline(key: str, value: str) -> None:
    data: dict[str, Any] = {
        "site_id": "CDB001", "devices": [{"serial": "3c39e7000001", "product_type": "HWE-P1",
                                          "role": "grid"}],
        "cassandra": {"hosts": ["127.0.0.1"], "keyspace": "homewizard"}}
    if key in ("serial", "address"):
        data["devices"][0][key] = value
    elif key == "keyspace":
        data["cassandra"]["keyspace"] = value
    else:
        data[key] = value
    with pytest.raises(config.ConfigError, match=re.escape(repr(value))):
        config.parse_config(data, "c.yml")


def test_schema_identifiers_refuse_a_trailing_newline() -> None:
    cfg = config.CassandraConfig(hosts=("127.0.0.1",), keyspace="homewizard\n")
    with pytest.raises(config.ConfigError, match=r"cassandra\.keyspace"):
        schema.create_role(None, cfg, "pi_cdb001", "a-long-enough-password")
    cfg = config.CassandraConfig(hosts=("127.0.0.1",), keyspace="homewizard")
    with pytest.raises(config.ConfigError, match="--role"):
        schema.create_role(None, cfg, "pi_cdb001\n", "a-long-enough-password")
