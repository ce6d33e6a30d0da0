"""The Python side of inventory's differential tests (compat_test.go).

    bridge.py read FILE       print how ruamel.yaml (round-trip, as the Python
                              broker reads) and PyYAML (FullLoader, as older
                              Python brokers read) read FILE, as typed JSON
    bridge.py rewrite FILE [share]
                              load FILE and dump it again with ruamel.yaml in
                              round-trip mode, as the Python broker's
                              update_inventory rewrites the inventory; with
                              share, records with equal _broker_args share
                              one dict (anchors and aliases)
    bridge.py write FILE      read typed JSON records on stdin and dump them
                              to FILE with ruamel.yaml in round-trip mode

Typed JSON: ["n"] null, ["b", bool], ["i", "decimal"], ["f", "repr"],
["s", text], ["y", base64] bytes, ["d", "YYYY-MM-DD"], ["t", "UTC time to
the microsecond"] an aware datetime, ["T", "time"] a naive one, ["l", [items]], ["m", [[key, value], ...]].
"""
import base64
import datetime
import json
import sys

import yaml as pyyaml
from ruamel.yaml import YAML


def typed(v):
    if v is None:
        return ["n"]
    if isinstance(v, bool):
        return ["b", v]
    if isinstance(v, int):
        return ["i", str(int(v))]
    if isinstance(v, float):
        return ["f", repr(float(v))]
    if isinstance(v, str):
        return ["s", str(v)]
    if isinstance(v, bytes):
        return ["y", base64.b64encode(v).decode()]
    if isinstance(v, datetime.datetime):
        # A naive datetime: no tzinfo (PyYAML) and, for ruamel.yaml, no
        # zone in the text it was read from.
        naive = v.tzinfo is None and (getattr(v, "_yaml", None) or {}).get("tz") is None
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        else:
            # ruamel.yaml's naive datetime of a zoned text is already in UTC.
            v = datetime.datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond)
        return ["T" if naive else "t", "%04d-%02d-%02dT%02d:%02d:%02d.%06d" % (v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond)]
    if isinstance(v, datetime.date):
        return ["d", v.isoformat()]
    if isinstance(v, dict):
        return ["m", [[typed(k), typed(x)] for k, x in v.items()]]
    if isinstance(v, (list, tuple)):
        return ["l", [typed(x) for x in v]]
    raise TypeError("no typed form for %r (%s)" % (v, type(v)))


def untyped(t):
    kind = t[0]
    if kind == "n":
        return None
    if kind == "b":
        return t[1]
    if kind == "i":
        return int(t[1])
    if kind == "f":
        return float(t[1])
    if kind == "s":
        return t[1]
    if kind == "y":
        return base64.b64decode(t[1])
    if kind == "d":
        return datetime.date.fromisoformat(t[1])
    if kind == "T":
        return datetime.datetime.strptime(t[1], "%Y-%m-%dT%H:%M:%S.%f")
    if kind == "t":
        return datetime.datetime.strptime(t[1], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
    if kind == "l":
        return [untyped(x) for x in t[1]]
    if kind == "m":
        return {untyped(k): untyped(v) for k, v in t[1]}
    raise ValueError(kind)


def rt():
    y = YAML(typ="rt")
    return y


def read(path):
    out = {}
    try:
        with open(path) as f:
            out["ruamel"] = typed(rt().load(f) or [])
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        out["ruamel_error"] = "%s: %s" % (type(e).__name__, e)
    try:
        with open(path) as f:
            out["pyyaml"] = typed(pyyaml.load(f, Loader=pyyaml.FullLoader) or [])
    except Exception as e:  # noqa: BLE001
        out["pyyaml_error"] = "%s: %s" % (type(e).__name__, e)
    json.dump(out, sys.stdout)


def rewrite(path, share=False):
    y = rt()
    with open(path) as f:
        data = y.load(f)
    if share:
        # As the Python broker up to 0.8.10 does for hosts checked out
        # together: a record whose _broker_args equal an earlier record's
        # gets that very dict, which ruamel.yaml dumps as an anchor
        # (&id001) and aliases (*id001).
        seen = {}
        for rec in data or []:
            args = rec.get("_broker_args") if isinstance(rec, dict) else None
            if isinstance(args, dict) and args:
                key = json.dumps(typed(args))
                rec["_broker_args"] = seen.setdefault(key, args)
    with open(path, "w") as f:
        y.dump(data, f)


def write(path):
    recs = [untyped(t) for t in json.load(sys.stdin)]
    with open(path, "w") as f:
        rt().dump(recs, f)


if __name__ == "__main__":
    if sys.argv[1] == "rewrite" and sys.argv[3:] == ["share"]:
        rewrite(sys.argv[2], share=True)
    else:
        {"read": read, "rewrite": rewrite, "write": write}[sys.argv[1]](sys.argv[2])
