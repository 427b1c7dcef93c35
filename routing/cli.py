"""`rtserve` admin commands: the same operations as the admin API, from a shell.

The server is RTSERVE_URL (default http://localhost:3000); the token is RTSERVE_TOKEN, or one
minted with an `admin` scope from the development key that `make serve` uses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import httpx


def _token() -> str:
    if os.environ.get("RTSERVE_TOKEN"):
        return os.environ["RTSERVE_TOKEN"]
    from gateway.auth import AuthSettings
    from gateway.tokens import DEV_SECRET_FILE, ensure_dev_secret, mint

    settings = AuthSettings()
    if settings.hs256_secret is None and settings.hs256_secret_file is None and settings.hs256_keys_file is None:
        ensure_dev_secret(DEV_SECRET_FILE)
        settings = settings.model_copy(update={"hs256_secret_file": DEV_SECRET_FILE})
    return mint(settings, subject="rtserve-cli", scopes="admin predict", tenant="admin", ttl_s=300)


def _call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    url = os.environ.get("RTSERVE_URL", "http://localhost:3000").rstrip("/")
    r = httpx.request(method, url + path, json=body, headers={"Authorization": f"Bearer {_token()}"}, timeout=30)
    doc = r.json() if r.content else {}
    if r.status_code >= 400:
        raise SystemExit(f"rtserve: {r.status_code} {doc.get('error', r.text)}")
    return doc


def _weights(pairs: Sequence[str]) -> dict[str, float]:
    try:
        return {v: float(w) for v, w in (p.split("=", 1) for p in pairs)}
    except ValueError:
        raise SystemExit("rtserve: weights are VERSION=PERCENT, e.g. v1=90 v2=10") from None


def _print_canary(doc: dict[str, Any]) -> None:
    weight = doc["steps"][doc["step"]] if doc["step"] < len(doc["steps"]) else 100
    print(f"canary {doc['version']} vs stable {doc['stable']}: {doc['status']}, step {doc['step'] + 1}/{len(doc['steps'])} "
          f"({weight:g} %), weights {doc.get('weights')}")
    for d in doc["decisions"]:
        nums = ", ".join(f"{k}={v:.4g}" for k, v in d["numbers"].items())
        print(f"  {d['action']:<8} step {d['step'] + 1} at {d['weight']:g} %: {d['reason']}" + (f" [{nums}]" if nums else ""))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rtserve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="models, loaded versions, states and weights")
    for verb in ("load", "unload"):
        s = sub.add_parser(verb, help=f"{verb} a version in every worker")
        s.add_argument("model")
        s.add_argument("version")
    route = sub.add_parser("route", help="route weights").add_subparsers(dest="action", required=True)
    rs = route.add_parser("set", help="rtserve route set digits-sklearn v1=90 v2=10")
    rs.add_argument("model")
    rs.add_argument("weights", nargs="+")
    exp = sub.add_parser("experiment", help="sticky A/B experiments").add_subparsers(dest="action", required=True)
    es = exp.add_parser("start")
    es.add_argument("model")
    es.add_argument("weights", nargs="+", help="VERSION=PERCENT; the first is the control")
    es.add_argument("--name")
    es.add_argument("--mirror", type=float, default=0.0, help="fraction of control requests mirrored to the others")
    for action in ("status", "stop"):
        exp.add_parser(action).add_argument("model")
    can = sub.add_parser("canary", help="canary rollouts").add_subparsers(dest="action", required=True)
    cs = can.add_parser("start", help="rtserve canary start digits-sklearn v2")
    cs.add_argument("model")
    cs.add_argument("version")
    cs.add_argument("--steps", help="comma-separated percentages, e.g. 5,25,50,100")
    cs.add_argument("--hold", type=float, help="seconds per step")
    cs.add_argument("--min-requests", type=int)
    cs.add_argument("--mirror", type=float, default=0.0, help="fraction of stable requests mirrored to the canary")
    cs.add_argument("--stable", help="version to judge against (default: the one taking the most traffic)")
    cs.add_argument("--max-disagreement", type=float)
    for action in ("status", "abort"):
        can.add_parser(action).add_argument("model")
    sh = sub.add_parser("shadow", help="mirror traffic to a version").add_subparsers(dest="action", required=True)
    ss = sh.add_parser("set")
    ss.add_argument("model")
    ss.add_argument("version")
    ss.add_argument("fraction", type=float)
    sh.add_parser("clear").add_argument("model")
    a = p.parse_args(argv)

    if a.command == "models":
        for name, m in _call("GET", "/admin/models").items():
            extras = [k for k in ("experiment", "canary", "shadow") if m.get(k)]
            print(f"{name}  weights {m.get('weights')}" + (f"  ({', '.join(extras)})" if extras else ""))
            for v, info in m["versions"].items():
                print(f"  {v:<6} {info['state']:<9} weight {m.get('weights', {}).get(v, 0):g}" +
                      (f"  loaded in {info['load_seconds']:.2f} s" if info.get("load_seconds") else "") +
                      (f"  error: {info['error']}" if info.get("error") else ""))
    elif a.command in ("load", "unload"):
        doc = _call("POST", f"/admin/models/{a.model}/versions/{a.version}/{a.command}")
        print(f"{a.command}: {a.model}:{a.version}; loaded {doc['loaded']}, weights {doc['weights']}")
    elif a.command == "route":
        doc = _call("PUT", f"/admin/models/{a.model}/weights", {"weights": _weights(a.weights)})
        print(f"{a.model}: weights {doc['weights']}")
    elif a.command == "experiment":
        if a.action == "start":
            w = _weights(a.weights)
            body = {"variants": w, "control": next(iter(w)), "mirror_fraction": a.mirror, **({"name": a.name} if a.name else {})}
            doc = _call("POST", f"/admin/models/{a.model}/experiment", body)
            print(f"experiment {doc['experiment']['name']} on {a.model}: {doc['experiment']['variants']}")
        elif a.action == "status":
            print(json.dumps(_call("GET", f"/admin/models/{a.model}/experiment"), indent=2))
        else:
            _call("DELETE", f"/admin/models/{a.model}/experiment")
            print(f"experiment on {a.model} stopped")
    elif a.command == "canary":
        if a.action == "start":
            body: dict[str, Any] = {"version": a.version, "mirror_fraction": a.mirror, "stable": a.stable}
            if a.steps:
                body["steps"] = [float(s) for s in a.steps.split(",")]
            if a.hold is not None:
                body["hold_s"] = a.hold
            if a.min_requests is not None:
                body["min_requests"] = a.min_requests
            if a.max_disagreement is not None:
                body["thresholds"] = {"max_disagreement": a.max_disagreement}
            doc = _call("POST", f"/admin/models/{a.model}/canary", body)
            print(f"canary {a.model}:{a.version} started against {doc['canary']['stable']}; weights {doc['weights']}")
        elif a.action == "status":
            _print_canary(_call("GET", f"/admin/models/{a.model}/canary"))
        else:
            doc = _call("DELETE", f"/admin/models/{a.model}/canary")
            print(f"canary aborted; weights {doc['weights']}")
    elif a.command == "shadow":
        if a.action == "set":
            doc = _call("PUT", f"/admin/models/{a.model}/shadow", {"version": a.version, "fraction": a.fraction})
        else:
            doc = _call("DELETE", f"/admin/models/{a.model}/shadow")
        print(f"{a.model}: shadow {doc.get('shadow')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
