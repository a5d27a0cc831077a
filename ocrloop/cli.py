"""``ocrloop`` command line.

Commands:

* ``ocrloop up [--home DIR] [--host 127.0.0.1] [--port 8000]`` — run the whole loop locally
  (``ocrloop.local.runtime.LocalRuntime``) and serve the API with uvicorn; the event bus is pumped
  in the background so uploads and approvals flow through the loop.
* ``ocrloop ocr FILE`` — OCR a drawing through the running API.
* ``ocrloop add FILE [--drawing-id ID] [--replace] [--ocr] [--meta KEY=VALUE …]`` — register a
  drawing in the similarity index.
* ``ocrloop search FILE | --drawing-id ID [-k 5] [--filter FIELD=SUBSTRING …]`` — similar drawings.
* ``ocrloop models`` — model versions in the registry.
* ``ocrloop demo [args…]`` — the end-to-end demo (``ocrloop.demo.main``).

Client commands talk HTTP to ``--url`` (default ``$OCRLOOP_URL`` or ``http://127.0.0.1:8000``) and
print a table, or the raw JSON with ``--json``. Exit codes: 0 success, 1 the API answered with an
error, 2 usage error / unreadable file / API not reachable.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mimetypes
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT_S = 300.0
"""Client timeout (s): the first OCR call of a fresh endpoint loads the model; a search embeds four
rotations (≈ 0.2-0.5 s on 2 cores)."""


class CliError(Exception):
    """Message for stderr and the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------

def _request(method: str, url: str, path: str, **kwargs: Any) -> Any:
    """Call the API; returns the decoded JSON.

    Raises:
        CliError: code 2 when the API cannot be reached, code 1 when it answers ≥ 400.
    """
    import httpx

    base = url.rstrip("/")
    try:
        with httpx.Client(timeout=TIMEOUT_S) as client:
            response = client.request(method, f"{base}{path}", **kwargs)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise CliError(f"cannot reach the ocrloop API at {base} ({exc}); start it with `ocrloop up` "
                       "or pass --url", 2) from exc
    except httpx.TransportError as exc:
        raise CliError(f"the ocrloop API at {base} did not answer: {exc!r}", 2) from exc
    except httpx.InvalidURL as exc:
        raise CliError(f"invalid --url {url!r}: {exc}", 2) from exc
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text[:500]}
    if response.status_code >= 400:
        detail = body.get("detail") if isinstance(body, dict) else body
        raise CliError(f"API error {response.status_code}: {detail}", 1)
    return body


def _file_part(path: str) -> dict[str, Any]:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", 2) from exc
    ctype = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
    return {"file": (p.name, data, ctype)}


def _pairs(values: Sequence[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{what} must look like KEY=VALUE, got {item!r}", 2)
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """Plain-text table with left-aligned columns (values shortened to 60 characters)."""
    def cell(value: Any) -> str:
        text = "" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
        text = text.replace("\n", " | ")
        return text if len(text) <= 60 else text[:57] + "..."

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def _emit(args: argparse.Namespace, body: Any, text: str) -> None:
    print(json.dumps(body, indent=2, ensure_ascii=False) if args.json else text)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

def cmd_up(args: argparse.Namespace) -> int:
    import uvicorn

    from .api import create_app
    from .local.runtime import LocalRuntime

    home = Path(args.home)
    with LocalRuntime(home) as runtime:
        serving = runtime.resume_serving()
        if serving:
            print(f"endpoint {runtime.names.endpoint_name} serving {serving}", file=sys.stderr)
        app = create_app(runtime.api_services())
        if hasattr(runtime, "start_pump"):
            runtime.start_pump()
        print(f"ocrloop API on http://{args.host}:{args.port} (docs at /docs), home {home.resolve()}", flush=True)
        with _quiet_signals():
            uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    print("ocrloop API stopped", flush=True)
    return 0


@contextlib.contextmanager
def _quiet_signals():
    """uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal with the handler
    that was installed before it started. With Python's defaults that is a KeyboardInterrupt inside
    the event loop (a traceback) or, for SIGTERM, death before ``LocalRuntime.close()`` stops the
    endpoint processes. A no-op handler lets ``ocrloop up`` return normally instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_ocr(args: argparse.Namespace) -> int:
    body = _request("POST", args.url, "/v1/ocr", files=_file_part(args.file))
    rows = [{"#": i + 1, "score": line["score"], "text": line["text"],
             "box": _bbox(line["polygon"])} for i, line in enumerate(body["lines"])]
    _emit(args, body, f"model {body.get('model_version')}: {len(rows)} lines\n" + table(rows, ["#", "score", "text", "box"]))
    return 0


def _bbox(polygon: list[list[float]]) -> str:
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    return f"{min(xs):.0f},{min(ys):.0f}-{max(xs):.0f},{max(ys):.0f}" if xs else ""


def cmd_add(args: argparse.Namespace) -> int:
    data: dict[str, str] = {**_pairs(args.meta, "--meta"), "replace": str(args.replace).lower(),
                            "ocr": str(args.ocr).lower()}
    if args.drawing_id:
        data["drawing_id"] = args.drawing_id
    body = _request("POST", args.url, "/v1/drawings", files=_file_part(args.file), data=data)
    verb = "replaced" if body.get("replaced") else "registered"
    _emit(args, body, f"{verb} {body['drawing_id']} (index version {body.get('index_version')})")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    if bool(args.file) == bool(args.drawing_id):
        raise CliError("give either FILE or --drawing-id", 2)
    filters = _pairs(args.filter, "--filter")
    form = {"k": str(args.k)}
    if filters:
        form["filters"] = json.dumps(filters)
    if args.file:
        body = _request("POST", args.url, "/v1/search", files=_file_part(args.file), data=form)
    else:
        body = _request("POST", args.url, "/v1/search",
                        json={"drawing_id": args.drawing_id, "k": args.k, "filters": filters})
    rows = [{"#": i + 1, "drawing_id": r["drawing_id"], "score": r["score"],
             "text": (r.get("metadata") or {}).get("text") or (r.get("metadata") or {}).get("filename")}
            for i, r in enumerate(body["results"])]
    _emit(args, body, table(rows, ["#", "drawing_id", "score", "text"]) if rows else "no results")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    body = _request("GET", args.url, "/v1/models")
    rows = []
    for m in body["models"]:
        cand = (m.get("metrics") or {}).get("candidate") if isinstance(m.get("metrics"), dict) else None
        rows.append({**m, "metrics": json.dumps(cand, sort_keys=True) if cand else m.get("metrics")})
    cols = ["package_version", "version", "approval", "stage", "parent", "metrics"]
    _emit(args, body, table(rows, cols) if rows else f"no model versions in {body.get('group')}")
    return 0


def cmd_demo(argv: list[str]) -> int:
    from .demo import main as demo_main

    return int(demo_main(argv) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ocrloop", description="Continuous-training OCR for engineering drawings.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run the local loop and serve the API")
    up.add_argument("--home", default=".ocrloop/home", help="runtime folder (default: %(default)s)")
    up.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    up.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    up.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    up.set_defaults(func=cmd_up)

    def client(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--url", default=os.environ.get("OCRLOOP_URL", DEFAULT_URL),
                       help="API base URL (default: $OCRLOOP_URL or %(default)s)")
        p.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
        return p

    ocr = client("ocr", "OCR a drawing")
    ocr.add_argument("file", help="image file (PNG, JPEG, TIFF, …)")
    ocr.set_defaults(func=cmd_ocr)

    add = client("add", "register a drawing in the similarity index")
    add.add_argument("file")
    add.add_argument("--drawing-id", help="id (default: generated)")
    add.add_argument("--replace", action="store_true", help="overwrite an existing drawing")
    add.add_argument("--ocr", action="store_true", help="store the text the serving model reads")
    add.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata field (repeatable)")
    add.set_defaults(func=cmd_add)

    search = client("search", "find similar drawings")
    search.add_argument("file", nargs="?", help="query image")
    search.add_argument("--drawing-id", help="query by a registered drawing instead of a file")
    search.add_argument("-k", type=int, default=5, help="results (default: %(default)s)")
    search.add_argument("--filter", action="append", metavar="FIELD=SUBSTRING",
                        help="metadata filter, case-insensitive substring (repeatable, all must match)")
    search.set_defaults(func=cmd_search)

    models = client("models", "list model versions")
    models.set_defaults(func=cmd_models)

    demo = sub.add_parser("demo", help="run the end-to-end demo (arguments go to `ocrloop demo --help`)",
                          add_help=False)
    demo.set_defaults(func=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ocrloop`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":  # everything after `demo` belongs to the demo's own parser
        return cmd_demo(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"ocrloop {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:  # `ocrloop ocr x.png | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
