"""`rtserve`: tokens for calling the server, and the admin API's operations from a shell.

The server is RTSERVE_URL (default http://localhost:3000); the token is RTSERVE_TOKEN, or one
minted with an `admin` scope from the configured key (the development key of `make serve`
when none is configured; app/cli_client.py). One handler per command; `rtserve COMMAND --help` for each.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app import backup_cli, client, job_cli, optimize_cli, release_cli
from app.cli_client import CommandError, command, group, request, signing_settings
from app.progress import LiveLine, bar
from gateway.auth import AuthSettings
from gateway.tokens import mint
from routing.document import CanaryThresholds
from routing.settings import RoutingSettings


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.handler(args)
    except CommandError as exc:
        print(f"rtserve: {exc}", file=sys.stderr)
        return 2
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rtserve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in (_token_command, _deploy_command, optimize_cli.register, _model_commands, _route_commands, _experiment_commands,
                     _canary_commands, _shadow_commands, _audit_command, backup_cli.register, job_cli.register,
                     release_cli.register):
        register(sub)
    return p


# -- tokens


def _token_command(sub: argparse._SubParsersAction) -> None:
    t = command(sub, "token", _token, "print a signed JWT for calling the server")
    t.add_argument("--sub", default="dev", help="subject (default: dev)")
    t.add_argument("--scope", default="predict", help='space-separated scopes, e.g. "predict admin"')
    t.add_argument("--tenant", default=None, help="tenant (default: none, the subject is its own tenant)")
    t.add_argument("--ttl", type=_positive_int, default=3600, help="seconds until it expires (default: 3600)")
    t.add_argument("--kid", default=None, help="key id to sign with (default: none, the configured key)")
    t.add_argument("--algorithm", default="HS256", help="JWS algorithm (default: HS256)")
    t.add_argument("--private-key", type=Path, default=None, help="PEM private key for RS/PS/ES/EdDSA (default: none, an HMAC key)")


def _token(a: argparse.Namespace) -> None:
    try:
        settings = signing_settings() if a.algorithm.startswith("HS") else AuthSettings()
        pem = a.private_key.read_bytes() if a.private_key else None
        print(mint(settings, subject=a.sub, scopes=a.scope, tenant=a.tenant, ttl_s=a.ttl, kid=a.kid, private_key_pem=pem,
                   algorithm=a.algorithm))
    except (ValueError, OSError, ValidationError) as exc:
        raise CommandError(f"token: {exc}") from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


# -- the admin API


def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One admin API call with an admin token; its JSON answer (an error answer is a CommandError, see request)."""
    r = request(method, path, scopes="admin predict", tenant="admin", ttl_s=300, timeout=30, json=body)
    try:
        return r.json() if r.content else {}
    except ValueError:  # not ours (a proxy's page): said, not a traceback
        raise CommandError(f"{r.status_code} from {path} is not JSON: {r.text.strip()[:200]}") from None


def _weights(pairs: Sequence[str]) -> dict[str, float]:
    try:
        return {v: float(w) for v, w in (p.split("=", 1) for p in pairs)}
    except ValueError:
        raise CommandError("weights are VERSION=PERCENT, e.g. v1=90 v2=10") from None


def _deploy_command(sub: argparse._SubParsersAction) -> None:
    c = command(sub, "deploy", _deploy, "upload a model file, a folder or bentoml:TAG (a model in this machine's BentoML "
                "store) and serve it in every worker, without a restart")
    c.add_argument("model", help="the model's name")
    c.add_argument("source", metavar="FILE_OR_DIR", help="a model file, its folder, or bentoml:TAG")
    c.add_argument("--version", help="default: the next vN after the model's versions")
    c.add_argument("--config", type=Path, help="a model.yaml: signature, task, class names, batching, ... (default: the folder's own model.yaml, if any)")
    c.add_argument("--sample", type=Path, help="a sample input (.npy, or .npz by input name) run once to record the outputs "
                   "(default: none; the signature says what to run)")
    c.add_argument("--trust", action="append", default=[], metavar="TYPE", help="a further skops type to trust "
                   "(when the operator lets deploys trust types); repeat for more (default: none)")
    c.add_argument("--allow-code", action="store_true", help="accept a format that runs code when loaded (pickle, joblib, "
                   "TorchScript, .pt2, BentoML's sklearn and pytorch saves), when the operator allows them")
    route = c.add_mutually_exclusive_group()
    route.add_argument("--weight", type=float, help="percent of the model's traffic for the new version "
                       "(default: all of a new model's, none of a served model's)")
    route.add_argument("--canary", type=float, metavar="PCT", help="start a canary at PCT %%, then the steps above it (default: no canary)")
    route.add_argument("--shadow", type=float, metavar="PCT", help="mirror PCT %% of the model's requests to it (default: no shadow)")
    _canary_options(c)


def _deploy(a: argparse.Namespace) -> None:
    canary = None
    if a.canary is not None:
        canary = {"percent": a.canary, **_canary_body(a)}
    elif any(getattr(a, k) is not None for k in ("steps", "hold", "min_requests", "stable", "max_disagreement")) or a.mirror:
        raise CommandError("deploy: the canary options go with --canary PCT")
    show = _progress(Path(a.source).name)
    doc = client.deploy_model(a.model, a.source, a.version, config=a.config, sample=a.sample, trust=a.trust,
                              allow_code=a.allow_code, weight=a.weight, shadow=a.shadow, canary=canary, progress=show)
    meta = doc["metadata"]
    print(f"deploy: {doc['model']}:{doc['version']} served by every worker ({meta.get('format')}, "
          f"{meta.get('task', 'tensors')}); import {doc['import_seconds']:.2f} s, load {doc['load_seconds']:.2f} s, "
          f"memory {meta.get('memory_mb', '?')} MB; weights {doc['routes']['weights']}"
          + (f"; canary from {a.canary:g} %" if a.canary is not None else "")
          + (f"; shadow {a.shadow:g} %" if a.shadow is not None else ""))
    for kind in ("inputs", "outputs"):
        print(f"  {kind}: " + ", ".join(f"{t['name']} {t['datatype']} {t['shape']}" for t in meta.get(kind, [])))
    if doc.get("warning"):
        print(f"  warning: {doc['warning']}")


def _progress(name: str) -> client.Progress:
    """A bar on a terminal; otherwise a line when the upload starts and one when it is sent."""
    live = LiveLine(sys.stderr)

    def show(sent: int, total: int) -> None:
        if live.tty:
            live.show(f"upload {name} {bar(sent, total)} {sent / 2**20:.1f}/{total / 2**20:.1f} MB")
            if sent >= total:
                live.close()
        elif sent == 0:
            live.show(f"upload {name}: {total / 2**20:.1f} MB")
        elif sent >= total:
            live.show(f"upload {name}: sent; the server imports, probes and loads it")

    return show


def _model_commands(sub: argparse._SubParsersAction) -> None:
    command(sub, "models", _models, "models, where each came from (serving.yaml's configuration, or loaded at runtime), "
            "loaded versions, states and weights")
    for verb, handler in (("load", _load), ("unload", _unload)):
        c = command(sub, verb, handler, f"{verb} a version in every worker")
        _model_argument(c)
        c.add_argument("version", help=f"the version to {verb}, as the model store names it")


def _model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the model's name, as `rtserve models` lists it")


def _models(a: argparse.Namespace) -> None:
    for name, m in call("GET", "/admin/models").items():
        print(model_heading(name, m))
        for v, info in m["versions"].items():
            print(f"  {v:<8} {info['state']:<9} weight {m.get('weights', {}).get(v, 0):g}"
                  + (f"  loaded in {info['load_seconds']:.2f} s" if info.get("load_seconds") else "")
                  + (f"  modes {','.join(info['modes'])}" if info.get("modes") else "")
                  + (f"  source {_source(info['source'])}" if info.get("source") else "")
                  + (f"  error: {info['error']}" if info.get("error") else "")
                  + (f"  waiting: {info['waiting']}" if info.get("waiting") else "")
                  + (f"  warning: {info['warning']}" if info.get("warning") else ""))


def model_heading(name: str, m: dict[str, Any]) -> str:
    """A model's line in `rtserve models`: where it came from, its weights, and what runs on it now (a finished
    canary stays in the document for its history, but no longer runs)."""
    canary = m.get("canary")
    extras = [k for k in ("experiment", "shadow") if m.get(k)]
    if canary and canary.get("status") == "running":
        extras.insert(1 if m.get("experiment") else 0, "canary")
    return (f"{name}  from {m.get('origin', 'configuration')}  weights {m.get('weights')}"
            + (f"  ({', '.join(extras)})" if extras else ""))


def _source(source: dict[str, Any]) -> str:
    """deploy iris.skops, bentoml iris:abc (bentoml.sklearn), demo ..."""
    return " ".join(str(x) for x in (source.get("origin"), source.get("name")) if x) + (
        f" ({source['module']})" if source.get("module") else "")


def _load(a: argparse.Namespace) -> None:
    doc = call("POST", f"/admin/models/{a.model}/versions/{a.version}/load")  # answers once every worker serves it
    print(f"load: {a.model}:{a.version} ready in every worker; loaded {doc['loaded']}, weights {doc['weights']}")


def _unload(a: argparse.Namespace) -> None:
    doc = call("POST", f"/admin/models/{a.model}/versions/{a.version}/unload")
    print(f"unload: {a.model}:{a.version}; loaded {doc['loaded']}, weights {doc['weights']}")


def _route_commands(sub: argparse._SubParsersAction) -> None:
    route = group(sub, "route", "route weights, and the way back to serving.yaml's")
    s = command(route, "set", _route_set, "set a model's weights: rtserve route set digits-sklearn v1=90 v2=10")
    _model_argument(s)
    s.add_argument("weights", nargs="+", help="VERSION=PERCENT")
    _model_argument(command(route, "reset", _route_reset, "return a model to serving.yaml's versions and weights, ending its "
                            "experiment, shadow and canary; versions loaded at runtime are unloaded"))


def _route_set(a: argparse.Namespace) -> None:
    doc = call("PUT", f"/admin/models/{a.model}/weights", {"weights": _weights(a.weights)})
    print(f"{a.model}: weights {doc['weights']}")


def _route_reset(a: argparse.Namespace) -> None:
    doc = call("POST", f"/admin/models/{a.model}/reset")
    print(f"{a.model}: back to serving.yaml; loaded {doc['loaded']}, weights {doc['weights']}")


def _experiment_commands(sub: argparse._SubParsersAction) -> None:
    exp = group(sub, "experiment", "sticky A/B experiments")
    s = command(exp, "start", _experiment_start, "split users across versions, each user sticking to one; refused "
                "while a canary of the model runs")
    _model_argument(s)
    s.add_argument("weights", nargs="+", help="VERSION=PERCENT; the first is the control")
    s.add_argument("--name", help="the experiment's name, also its hash salt (default: MODEL-UNIXTIME)")
    s.add_argument("--mirror", type=float, default=0.0, help="fraction of control requests mirrored to the others")
    _model_argument(command(exp, "status", _experiment_status, "per variant: requests, errors, p50/p95, agreement"))
    _model_argument(command(exp, "stop", _experiment_stop, "end the experiment"))


def _experiment_start(a: argparse.Namespace) -> None:
    w = _weights(a.weights)
    body = {"variants": w, "control": next(iter(w)), "mirror_fraction": a.mirror, **({"name": a.name} if a.name else {})}
    doc = call("POST", f"/admin/models/{a.model}/experiment", body)
    print(f"experiment {doc['experiment']['name']} on {a.model}: {doc['experiment']['variants']}")


def _experiment_status(a: argparse.Namespace) -> None:
    print(json.dumps(call("GET", f"/admin/models/{a.model}/experiment"), indent=2))


def _experiment_stop(a: argparse.Namespace) -> None:
    call("DELETE", f"/admin/models/{a.model}/experiment")
    print(f"experiment on {a.model} stopped")


def _canary_commands(sub: argparse._SubParsersAction) -> None:
    can = group(sub, "canary", "canary rollouts")
    s = command(can, "start", _canary_start, "move traffic to a version step by step, promoting or rolling back by itself; "
                "refused while an experiment runs on the model. Left out, the schedule is the server's "
                "(RTSERVE_ROUTING_CANARY_*), whose defaults are shown")
    _model_argument(s)
    s.add_argument("version", help="the candidate, loaded and ready")
    _canary_options(s)
    st = command(can, "status", _canary_status, "steps, decisions with their numbers, and per version its outcomes "
                 "and p95 latency, uncached (what is judged) and over every request")
    _model_argument(st)
    st.add_argument("--plot", type=Path, metavar="FILE", help="also draw the steps over time into a PNG: traffic share, "
                    "both versions' p95 and error rate against the rollback limits; needs matplotlib (default: no chart)")
    _model_argument(command(can, "abort", _canary_abort, "stop the canary, all traffic back to stable"))


def _canary_options(s: argparse.ArgumentParser) -> None:
    """The canary's schedule and bounds, for `rtserve canary start` and `rtserve deploy --canary`."""
    schedule = RoutingSettings.model_fields
    bounds = CanaryThresholds.model_fields
    steps = ",".join(f"{w:g}" for w in schedule["canary_steps"].default)
    s.add_argument("--steps", help=f"comma-separated percentages of traffic, one per step (default: {steps})")
    s.add_argument("--hold", type=float, help=f"seconds each step is held at least (default: {schedule['canary_hold_s'].default:g})")
    s.add_argument("--min-requests", type=int, help="canary requests a step needs before it may advance; on light traffic "
                   f"lower it, or a step never ends (default: {schedule['canary_min_requests'].default})")
    s.add_argument("--mirror", type=float, default=0.0, help="fraction of stable requests mirrored to the canary")
    s.add_argument("--stable", help="version to judge against (default: the one taking the most traffic)")
    s.add_argument("--max-error-rate-increase", type=float, default=bounds["max_error_rate_increase"].default,
                   help="roll back when the canary's error rate exceeds stable's by more than this fraction")
    s.add_argument("--max-p95-ratio", type=float, default=bounds["max_p95_ratio"].default,
                   help="roll back when the canary's p95 on uncached requests exceeds stable's times this, plus the slack")
    s.add_argument("--p95-slack-ms", type=float, default=bounds["p95_slack_ms"].default,
                   help="milliseconds added to the p95 limit, so noise on a fast model does not fail the ratio")
    s.add_argument("--max-disagreement", type=float,
                   help="roll back when more than this fraction of mirrored rows disagree with stable (default: not judged)")


def _canary_start(a: argparse.Namespace) -> None:
    doc = call("POST", f"/admin/models/{a.model}/canary", {"version": a.version, **_canary_body(a)})
    print(f"canary {a.model}:{a.version} started against {doc['canary']['stable']}; weights {doc['weights']}")


def _canary_body(a: argparse.Namespace) -> dict[str, Any]:
    """The canary options as the admin API takes them."""
    body: dict[str, Any] = {"mirror_fraction": a.mirror, "stable": a.stable}
    if a.steps:
        try:
            body["steps"] = [float(s) for s in a.steps.split(",")]
        except ValueError:
            raise CommandError("--steps are percentages separated by commas, e.g. 5,25,50,100") from None
    if a.hold is not None:
        body["hold_s"] = a.hold
    if a.min_requests is not None:
        body["min_requests"] = a.min_requests
    body["thresholds"] = {"max_error_rate_increase": a.max_error_rate_increase, "max_p95_ratio": a.max_p95_ratio,
                          "p95_slack_ms": a.p95_slack_ms, "max_disagreement": a.max_disagreement}
    return body


def _canary_status(a: argparse.Namespace) -> None:
    doc = call("GET", f"/admin/models/{a.model}/canary")
    weight = doc["steps"][doc["step"]] if doc["step"] < len(doc["steps"]) else 100
    print(f"canary {doc['version']} vs stable {doc['stable']}: {doc['status']}, step {doc['step'] + 1}/{len(doc['steps'])} "
          f"({weight:g} %), weights {doc.get('weights')}")
    for d in doc["decisions"]:
        nums = ", ".join(f"{k}={v:.4g}" for k, v in d["numbers"].items())
        print(f"  {d['action']:<8} step {d['step'] + 1} at {d['weight']:g} %: {d['reason']}" + (f" [{nums}]" if nums else ""))
    t = doc.get("thresholds", {})
    print(f"  judged: error rate up to stable + {t.get('max_error_rate_increase')}, uncached p95 up to "
          f"{t.get('max_p95_ratio')} x stable + {t.get('p95_slack_ms')} ms, disagreement up to {t.get('max_disagreement')}")
    for version, counts in doc.get("outcomes", {}).items():
        print(f"  {version}: " + ", ".join(f"{k} {_number(v)}" for k, v in counts.items()))
    if a.plot is not None:
        _plot_canary(a.model, doc, a.plot)


def _plot_canary(model: str, doc: dict[str, Any], path: Path) -> None:
    try:
        from app import canary_plot
        drawn = canary_plot.write(model, doc, path)
    except ImportError as exc:
        raise CommandError(f"--plot needs matplotlib ({exc}); pip install matplotlib") from None
    except OSError as exc:
        raise CommandError(f"--plot {path}: {exc.strerror or exc}") from None
    print(f"chart written to {path}: " + ", ".join(drawn))


def _number(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def _canary_abort(a: argparse.Namespace) -> None:
    doc = call("DELETE", f"/admin/models/{a.model}/canary")
    print(f"canary aborted; weights {doc['weights']}")


def _shadow_commands(sub: argparse._SubParsersAction) -> None:
    sh = group(sub, "shadow", "mirror traffic to a version")
    s = command(sh, "set", _shadow_set, "mirror a fraction of a model's requests to a version; answers compared, never returned")
    _model_argument(s)
    s.add_argument("version", help="the version that sees the copies")
    s.add_argument("fraction", type=float, help="share of requests mirrored, in (0, 1]")
    _model_argument(command(sh, "clear", _shadow_clear, "stop mirroring"))


def _shadow_set(a: argparse.Namespace) -> None:
    doc = call("PUT", f"/admin/models/{a.model}/shadow", {"version": a.version, "fraction": a.fraction})
    print(f"{a.model}: shadow {doc.get('shadow')}")


def _shadow_clear(a: argparse.Namespace) -> None:
    doc = call("DELETE", f"/admin/models/{a.model}/shadow")
    print(f"{a.model}: shadow {doc.get('shadow')}")


def _audit_command(sub: argparse._SubParsersAction) -> None:
    c = command(sub, "audit", _audit, "who changed routes, loads, experiments, canaries and shadows, and what changed, "
                "newest first ('system' for the canary controller and the start-up merge of serving.yaml)")
    c.add_argument("--model", help="only this model's changes (default: every model)")
    c.add_argument("--limit", type=int, default=50, help="at most this many lines (default: 50)")
    c.add_argument("--json", action="store_true", help="one JSON document per line, as stored (default: a line for people)")


def _audit(a: argparse.Namespace) -> None:
    query = f"?limit={a.limit}" + (f"&model={a.model}" if a.model else "")
    for e in call("GET", "/admin/audit" + query):
        if a.json:
            print(json.dumps(e))
            continue
        changed = "; ".join(f"{k} {json.dumps(c['from'])} -> {json.dumps(c['to'])}" for k, c in e["changes"].items())
        print(f"{e['time']}  {e['who']}@{e['tenant']}  {e['action']}  {e.get('model') or '-'}"
              + (f"  {changed}" if changed else "") + (f"  ({e['detail']})" if e.get("detail") else ""))


if __name__ == "__main__":
    sys.exit(main())
