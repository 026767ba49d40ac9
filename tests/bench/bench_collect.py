"""Benchmark: `hwpc collect` against a reference poller on the official library.

8 simulated devices polled at 1 Hz by both, side by side in the same run. Prints and
writes (reports/bench-collect.json): samples stored / samples due, p50/p99 schedule
jitter, CPU seconds and peak RSS of each poller, and the ratios. Figures, not pass/fail.
Samples are counted per device and whole-second slot over the slots in which both pollers
were polling, so a poller can reach 100 % and never more.

    python tests/bench/bench_collect.py [--minutes 5]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from hw_picollector.store import parse_ts

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "bench"
BENCH_VENV = ROOT / "build" / "bench-venv"
REFERENCE_LIB = "python-homewizard-energy==6.3.0"
TICK = os.sysconf("SC_CLK_TCK")


def ensure_reference_venv() -> Path:
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    check = subprocess.run([str(python), "-m", "pip", "show", "python-homewizard-energy"],
                           capture_output=True, text=True)
    if "Version: 6.3.0" not in check.stdout:
        subprocess.run([str(python), "-m", "pip", "install", "-q", REFERENCE_LIB], check=True)
    return python


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def jitter_ms(stamps_s: list[float]) -> list[float]:
    """Distance of each poll from its whole-second slot (both pollers align to seconds)."""
    return [abs(t - round(t)) * 1000 for t in stamps_s]


def window(pollers: list[dict[str, list[float]]]) -> tuple[int, int]:
    """The whole-second slots (first, last; inclusive) in which every poller was polling.

    Each poller's span runs from its first to its last poll (any device); the window is
    where the spans overlap, less one slot at each end for the devices' start/stop skew.
    The same window counts the samples due and the samples stored of both pollers.
    """
    firsts, lasts = [], []
    for by_device in pollers:
        stamps = [t for ts in by_device.values() for t in ts]
        if not stamps:
            return 0, -1
        firsts.append(round(min(stamps)))
        lasts.append(round(max(stamps)))
    return max(firsts) + 1, min(lasts) - 1


def in_window(by_device: dict[str, list[float]], first: int, last: int) -> list[float]:
    """One poll time per device and slot in ``first..last`` (a repeat in a slot counts once)."""
    kept: list[float] = []
    for stamps in by_device.values():
        seen: set[int] = set()
        for t in sorted(stamps):
            slot = round(t)
            if first <= slot <= last and slot not in seen:
                seen.add(slot)
                kept.append(t)
    return kept


def wait_for_ports(ports: list[int], timeout_s: float = 60.0) -> None:
    """Until every simulator accepts connections (a loaded machine starts them slowly)."""
    deadline = time.monotonic() + timeout_s
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"simulator on port {port} did not start") from None
                time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench-collect.json"))
    args = parser.parse_args()
    seconds = args.minutes * 60
    reference_python = ensure_reference_venv()
    # Bytecode for the package, as its pip install on a Pi leaves it (and as the reference's
    # library has it): otherwise an editable checkout under PYTHONDONTWRITEBYTECODE compiles
    # every module at every start, CPU time no deployed collector spends.
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    str(ROOT / "collector" / "src" / "hw_picollector")], check=True)
    if BUILD.exists():
        subprocess.run(["rm", "-rf", str(BUILD)], check=True)
    BUILD.mkdir(parents=True)
    base_port = 18300
    types = ["HWE-P1", "HWE-KWH1"]
    sims = []
    devices = []
    for i in range(args.devices):
        ptype = types[i % 2]
        serial = f"3c39e7b{i:05x}"
        port = base_port + i
        sims.append(subprocess.Popen(
            [sys.executable, "-m", "hw_picollector", "simulate", "--type", ptype, "--api", "v1",
             "--port", str(port), "--serial", serial], stderr=subprocess.DEVNULL))
        devices.append({"serial": serial, "product_type": ptype,
                        "role": "grid" if ptype == "HWE-P1" else "production",
                        "address": f"127.0.0.1:{port}", "api": "v1"})
    config = BUILD / "config.yml"
    config.write_text(yaml.safe_dump({"site_id": "BENCH", "data_dir": str(BUILD / "data"),
                                      "clock_sync": "trust", "mdns": False,
                                      "devices": devices}))
    try:
        wait_for_ports([base_port + i for i in range(args.devices)])  # then both start
        t_start = time.time()
        collector = subprocess.Popen([sys.executable, "-m", "hw_picollector", "collect",
                                      "--config", str(config)], stderr=subprocess.DEVNULL)
        reference = subprocess.Popen([str(reference_python), str(Path(__file__).parent /
                                                                  "reference_poller.py"),
                                      "--hosts", ",".join(d["address"] for d in devices),
                                      "--seconds", str(seconds), "--out",
                                      str(BUILD / "reference")])
        peak = {"collector": 0.0, "reference": 0.0}
        cpu = {"collector": 0.0, "reference": 0.0}
        while time.time() < t_start + seconds:
            for name, proc in (("collector", collector), ("reference", reference)):
                if proc.poll() is None:
                    cpu[name] = proc_cpu_s(proc.pid)
                    peak[name] = max(peak[name], proc_peak_rss_mb(proc.pid))
            time.sleep(1.0)
        t_end = time.time()
        collector.send_signal(signal.SIGTERM)
        collector.wait(timeout=30)
        reference.wait(timeout=30)
    finally:
        for sim in sims:
            sim.send_signal(signal.SIGTERM)
        for sim in sims:
            sim.wait(timeout=10)

    ours_by_device: dict[str, list[float]] = {}
    for dev in devices:
        stamps = ours_by_device.setdefault(dev["serial"], [])
        for path in sorted((BUILD / "data" / "measurements" / dev["serial"]).glob("*.csv")):
            with path.open(newline="") as fh:
                stamps.extend(parse_ts(row["ts"]) / 1000 for row in csv.DictReader(fh))
    theirs_by_device: dict[str, list[float]] = {}
    for dev in devices:
        path = BUILD / "reference" / f"{dev['address'].replace(':', '_')}.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()] \
            if path.exists() else []
        theirs_by_device[dev["serial"]] = [r["ts"] for r in records if "error" not in r]
    first, last = window([ours_by_device, theirs_by_device])
    slots = max(0, last - first + 1)
    due = slots * len(devices)
    ours = in_window(ours_by_device, first, last)
    theirs = in_window(theirs_by_device, first, last)
    result = {
        "devices": len(devices), "seconds": round(t_end - t_start, 1),
        "window_s": slots, "samples_due": due,
        "collector": {"samples": len(ours), "completeness": len(ours) / due if due else 0.0,
                      "jitter_p50_ms": percentile(jitter_ms(ours), 0.5),
                      "jitter_p99_ms": percentile(jitter_ms(ours), 0.99),
                      "cpu_s": round(cpu["collector"], 2),
                      "peak_rss_mb": round(peak["collector"], 1)},
        "reference": {"library": REFERENCE_LIB, "samples": len(theirs),
                      "completeness": len(theirs) / due if due else 0.0,
                      "jitter_p50_ms": percentile(jitter_ms(theirs), 0.5),
                      "jitter_p99_ms": percentile(jitter_ms(theirs), 0.99),
                      "cpu_s": round(cpu["reference"], 2),
                      "peak_rss_mb": round(peak["reference"], 1)},
    }
    result["cpu_ratio_collector_to_reference"] = round(
        cpu["collector"] / cpu["reference"], 3) if cpu["reference"] else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    c, r = result["collector"], result["reference"]
    print(f"{len(devices)} devices at 1 Hz for {result['seconds']:.0f} s "
          f"({due} samples due in the measured window)")
    print(f"{'':<12}{'stored/due':>12}{'p50 jitter':>12}{'p99 jitter':>12}{'CPU s':>9}"
          f"{'peak RSS':>10}")
    for name, d in (("hwpc", c), ("reference", r)):
        print(f"{name:<12}{d['completeness']:>11.2%} {d['jitter_p50_ms']:>9.1f} ms"
              f"{d['jitter_p99_ms']:>9.1f} ms{d['cpu_s']:>9.2f}{d['peak_rss_mb']:>7.1f} MB")
    print(f"CPU hwpc / reference: {result['cpu_ratio_collector_to_reference']}  "
          f"(written to {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
