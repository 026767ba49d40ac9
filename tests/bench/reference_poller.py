"""The reference: a 1 Hz poller built on the official python-homewizard-energy library.

Runs in its own venv (build/bench-venv) with the library pinned at 6.3.0, the newest that
installs on Python 3.11. One task per device on a whole-second schedule, the library's own
session handling, each sample appended to a JSON-lines file: what a user of the library
would write. Records the moment each request started, for completeness and jitter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from homewizard_energy import HomeWizardEnergy


async def poll(host: str, until: float, out: Path) -> None:
    async with HomeWizardEnergy(host) as api:
        with out.open("a") as fh:
            nxt = float(int(time.time()) + 1)
            while nxt < until:
                await asyncio.sleep(max(0.0, nxt - time.time()))
                started = time.time()
                try:
                    data = await api.data()
                except Exception as exc:
                    fh.write(json.dumps({"ts": started, "error": str(exc)}) + "\n")
                else:
                    fh.write(json.dumps({"ts": started, "power_w": data.active_power_w}) + "\n")
                fh.flush()
                nxt += 1.0
                while nxt < time.time():
                    nxt += 1.0


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", required=True, help="comma-separated host:port")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    until = time.time() + args.seconds
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    await asyncio.gather(*(poll(h, until, out / f"{h.replace(':', '_')}.jsonl")
                           for h in args.hosts.split(",")))


if __name__ == "__main__":
    asyncio.run(main())
