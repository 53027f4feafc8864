#!/usr/bin/env python
"""Write the committed production-export sample and its PII labels (deterministic).

    python data/build_production_sample.py           # rewrite data/production_sample/
    python data/build_production_sample.py --check   # exit 1 when the committed files differ

The sample is one day (2026-11-30) of a fake Larkspur production export, made by
``spotline.personas.fake_export``: ``users.csv`` and ``logs.jsonl`` under ``date=2026-11-30/``, as
the persona flow reads them, and ``labels.jsonl`` beside the partition: every planted PII value,
its entity type, table, row, field and character span, and whether it is a canary.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spotline.personas.fake_export import generate  # noqa: E402

OUT = ROOT / "data" / "production_sample"
DAY = date(2026, 11, 30)
USERS, MESSAGES, CANARY_USERS, SEED = 120, 1200, 36, 20261130


def render() -> dict[Path, bytes]:
    fx = generate(users=USERS, messages=MESSAGES, seed=SEED, day=DAY, canary_users=CANARY_USERS)
    part = OUT / f"date={DAY.isoformat()}"
    users = io.StringIO()
    fx.users.to_csv(users, index=False)
    logs = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fx.logs.to_dict(orient="records"))
    labels = "".join(json.dumps(l.as_dict(), ensure_ascii=False) + "\n" for l in fx.labels)
    return {part / "users.csv": users.getvalue().encode(), part / "logs.jsonl": logs.encode(),
            OUT / "labels.jsonl": labels.encode()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    files = render()
    if args.check:
        stale = [str(p.relative_to(ROOT)) for p, data in files.items() if not p.exists() or p.read_bytes() != data]
        if stale:
            print("out of date:", ", ".join(stale))
            return 1
        return 0
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"wrote {path.relative_to(ROOT)} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
