"""The Python broker's inventory update, for invload's case 4.

The Python broker cannot be installed where this runs, so this is its lock
protocol as broker/helpers/file_utils.py FileLock has it: the lock is
"<resolved inventory path>.lock", created with open(path, "x"); while it
exists, sleep 1 s and try again; give up after 10 s. Holding it, read the
YAML, add one record and rewrite inventory.yaml in place (write_text), then
remove the lock file.

Each attempt prints one JSON line: ok, wait (s to take the lock), hold (s
holding it), host (the record added), err.
"""

import argparse
import json
import sys
import time
from pathlib import Path

try:
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    class _Dumper(yaml.SafeDumper):
        pass

    # ruamel's round trip (the Python broker's) keeps every scalar as it was
    # written; PyYAML would turn timestamps into datetimes written back in
    # another form. Keep them as plain strings both ways.
    for cls in (_Loader, _Dumper):
        cls.yaml_implicit_resolvers = {
            k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
            for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }
    MODE = "pyyaml"
except ImportError:  # no YAML library: append the record as text
    yaml = None
    MODE = "text"


def record(name):
    return {
        "hostname": name + ".example.test",
        "name": name,
        "_broker_provider": "Container",
        "_broker_provider_instance": "docker",
        "_broker_args": {"container_host": "ubi8:latest", "provider": "Container"},
        "type": "host",
    }


def record_text(name):
    r = record(name)
    return (
        f"- hostname: {r['hostname']}\n"
        f"  name: {r['name']}\n"
        "  _broker_provider: Container\n"
        "  _broker_provider_instance: docker\n"
        "  _broker_args:\n"
        "    container_host: ubi8:latest\n"
        "    provider: Container\n"
        "  type: host\n"
    )


def take_lock(lock, timeout=10):
    timeout_after = time.time() + timeout
    while True:
        try:
            lock.open("x").close()
            return
        except FileExistsError:
            if time.time() >= timeout_after:
                raise TimeoutError(f"Timeout while waiting for lock release: {lock}")
            time.sleep(1)


def update(inv, name):
    if yaml is not None:
        data = yaml.load(inv.read_text(), Loader=_Loader) if inv.exists() else None
        data = list(data or [])
        data.append(record(name))
        inv.write_text(yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False))
        return
    text = inv.read_text() if inv.exists() else ""
    if text.strip() in ("", "[]"):
        text = ""
    elif not text.endswith("\n"):
        text += "\n"
    inv.write_text(text + record_text(name))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--inventory", required=True)
    ap.add_argument("--attempts", type=int, default=8)
    ap.add_argument("--gap", type=float, default=0.25)
    ap.add_argument("--prefix", default="py")
    a = ap.parse_args()
    inv = Path(a.inventory)
    lock = Path(f"{inv.resolve()}.lock")
    for i in range(a.attempts):
        name = f"{a.prefix}-{i}"
        start = time.time()
        res = {"ok": False, "mode": MODE, "host": name + ".example.test"}
        try:
            take_lock(lock)
            res["wait"] = time.time() - start
            got = time.time()
            try:
                update(inv, name)
            finally:
                try:
                    lock.unlink()
                except FileNotFoundError:
                    pass
            res["hold"] = time.time() - got
            res["ok"] = True
        except Exception as e:  # noqa: BLE001 - reported, not raised
            res["wait"] = time.time() - start
            res["err"] = f"{type(e).__name__}: {e}"
        print(json.dumps(res), flush=True)
        time.sleep(a.gap)


if __name__ == "__main__":
    sys.exit(main())
