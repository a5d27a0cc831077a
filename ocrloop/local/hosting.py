"""Local hosting: SageMaker real-time endpoints as local server processes, with blue/green updates.

Each endpoint is one ``inference_image/serve.py serve`` process (the same server the container runs,
``ocrloop.ocr.service``) bound to ``127.0.0.1`` on a free port. Under ``home``:

::

    <home>/<endpoint>.json                     DescribeEndpoint shape + local "Url" and "ServerPid"
    <home>/<endpoint>/<deployment-id>/         one folder per deployment: server.log, model/ (an
                                               extracted model.tar.gz)

``deploy`` follows SageMaker's blue/green update with auto-rollback
(https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-blue-green.html):

1. status ``Creating`` (first deploy) or ``Updating`` (with ``PendingDeploymentSummary``);
2. start the green fleet (one process) and wait for ``GET /ping`` = 200;
3. canary: send the canary share of real invocations (a small rendered page) to green, spread over the
   baking period ``WaitIntervalInSeconds``, and watch the alarms: any failed invocation, or an alarm
   of ``AutoRollbackConfiguration`` in ALARM state, rolls back at once;
4. switch: rewrite the state file atomically (``os.replace``) so ``Url`` and ``EndpointConfigName`` are
   green's; wait ``TerminationWaitInSeconds``; SIGTERM blue (uvicorn finishes in-flight requests);
5. emit ``SageMaker Endpoint State Change`` with the final DescribeEndpoint.

On failure green is stopped and the endpoint stays ``InService`` on the old config with
``FailureReason`` set (SageMaker's auto-rollback outcome); a failed first deploy leaves ``Failed``.

Canary size: one local "instance" is the whole fleet; ``canary_requests`` invocations stand for
100 % of its capacity, so ``CanarySize`` ``CAPACITY_PERCENT`` p sends ``ceil(p/100 ×
canary_requests)`` (≥ 1) probes, ``INSTANCE_COUNT`` sends ``canary_requests``; ``ALL_AT_ONCE`` sends
``canary_requests``; ``LINEAR`` sends ``LinearStepSize``'s share and bakes once per step. Unlike
SageMaker no live client traffic is routed to green before the switch, so clients never see a
canary's errors.

Alarms: SageMaker names CloudWatch alarms; their definitions live outside the DeploymentConfig (the
CDK app creates them). Locally an alarm is defined by the ``alarms`` mapping given to
``LocalHosting`` (defaults: ``default_alarms``) or inline in the Alarms entry (local extension), with
CloudWatch ``PutMetricAlarm`` fields ``MetricName`` (``ModelLatency`` in microseconds as CloudWatch
reports it, ``Invocation5XXErrors``, ``Invocation4XXErrors``, ``Invocations``), ``Statistic``
(``Average`` | ``Maximum`` | ``Minimum`` | ``Sum`` | ``SampleCount``) or ``ExtendedStatistic``
(``p50`` … ``p99.9``), ``Threshold`` and ``ComparisonOperator``. An alarm without a definition stays
INSUFFICIENT_DATA (never triggers), as in CloudWatch.

``deploy`` runs synchronously in the caller's thread; ``invoke`` and ``describe_endpoint`` only read
the state file, so they are never blocked by a deploy. Processes are stopped by ``stop_all`` (also
registered with ``atexit`` and called by the context manager); a server also exits by itself when its
owning process dies (``OCRLOOP_PARENT_PID``).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import fcntl
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import unquote, urlparse

from .. import events
from ..config import Names
from ..ocr.artifact import ArtifactError, extract_model_archive, find_model_folder

log = logging.getLogger("ocrloop.hosting")

REPO = Path(__file__).resolve().parents[2]
SERVE_SCRIPT = REPO / "inference_image" / "serve.py"
_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_RETRYABLE = ("ConnectError", "RemoteProtocolError", "ReadError", "WriteError")


class EndpointNotFound(KeyError):
    """No endpoint of that name (SageMaker: ValidationException "Could not find endpoint")."""


class EndpointBusy(RuntimeError):
    """A deploy is already running for the endpoint (SageMaker rejects UpdateEndpoint while Updating)."""


class EndpointUnavailable(RuntimeError):
    """The endpoint has no reachable server (not InService, or connection failed after a retry)."""


class InvocationError(RuntimeError):
    """The model server answered with an error status (SageMaker's ModelError).

    Attributes:
        status_code: HTTP status (400/413/415 for bad input, 5xx for server errors).
        body: the response body (JSON ``{"detail": message}``).
    """

    def __init__(self, status_code: int, body: str) -> None:
        super().__init__(f"model server returned {status_code}: {body[:500]}")
        self.status_code = status_code
        self.body = body


class DeployFailed(Exception):
    """Internal: the green fleet failed to start or failed the canary; the message is the FailureReason."""


def default_alarms(names: Names = Names()) -> dict[str, dict[str, Any]]:
    """Local definitions of the alarms ``handlers.deployment_config`` names
    (``<endpoint>-5xx``, ``<endpoint>-latency``); the CDK app should create the same CloudWatch alarms.

    ``<endpoint>-5xx``: any 5xx during the canary. ``<endpoint>-latency``: average ModelLatency over
    5 s (5,000,000 µs) for one page.
    """
    ep = names.endpoint_name
    return {
        f"{ep}-5xx": {"MetricName": "Invocation5XXErrors", "Statistic": "Sum", "Threshold": 0,
                      "ComparisonOperator": "GreaterThanThreshold"},
        f"{ep}-latency": {"MetricName": "ModelLatency", "Statistic": "Average", "Threshold": 5_000_000,
                          "ComparisonOperator": "GreaterThanThreshold"},
    }


def blue_green_deployment_config(*, canary_percent: int = 10, bake_s: int = 0, termination_wait_s: int = 0,
                                 max_execution_s: int = 1800,
                                 alarm_names: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """A SageMaker ``DeploymentConfig``: blue/green CANARY with ``canary_percent`` % capacity, bake
    ``bake_s`` s, then all at once; auto-rollback on ``alarm_names``."""
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {
                "Type": "CANARY", "WaitIntervalInSeconds": int(bake_s),
                "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": int(canary_percent)},
            },
            "TerminationWaitInSeconds": int(termination_wait_s),
            "MaximumExecutionTimeoutInSeconds": int(max_execution_s),
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a} for a in alarm_names]},
    }


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def endpoint_config_name(endpoint_name: str, model_version: str) -> str:
    """``<endpoint>-<model_version>`` cut to SageMaker's 63 characters (``handlers.endpoint_config_name``
    uses the same rule to verify a rollout)."""
    return f"{endpoint_name}-{model_version}"[:63]


def model_path_from_url(url: str) -> Path:
    """``file:///abs/path`` (or a plain path) → Path.

    Raises:
        ValueError: another scheme (``s3://`` is the AWS adapter's).
    """
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path if parsed.scheme else url))
    raise ValueError(f"local hosting serves file:// model data, got {url!r}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _canary_image_png() -> bytes:
    """A small rendered test page (BGR 320×480, three printed lines) as PNG bytes."""
    import cv2
    import numpy as np

    page = np.full((320, 480, 3), 255, dtype=np.uint8)
    for i, text in enumerate(("OCRLOOP CANARY", "SCALE 1:50", "PART 4711-B")):
        cv2.putText(page, text, (24, 80 + 80 * i), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (0, 0, 0), 2, cv2.LINE_AA)
    ok, buf = cv2.imencode(".png", page)
    if not ok:
        raise RuntimeError("cannot encode the canary image")
    return buf.tobytes()


class _Server:
    """One server process (a fleet of one instance)."""

    def __init__(self, proc: subprocess.Popen, url: str, workdir: Path, log_file: Any, owns_model: bool):
        self.proc, self.url, self.workdir, self.log_file, self.owns_model = proc, url, workdir, log_file, owns_model

    def log_tail(self, n: int = 1500) -> str:
        try:
            return (self.workdir / "server.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""


class _Canary:
    """Collected canary datapoints and local CloudWatch-like alarm evaluation."""

    def __init__(self) -> None:
        self.samples: list[dict[str, float]] = []  # {"status": int, "latency_us": float}

    def add(self, status: int, latency_us: float) -> None:
        self.samples.append({"status": status, "latency_us": latency_us})

    def values(self, metric: str) -> list[float]:
        if metric == "ModelLatency":
            return [s["latency_us"] for s in self.samples if s["status"] < 500]
        if metric == "Invocation5XXErrors":
            return [1.0 if s["status"] >= 500 else 0.0 for s in self.samples]
        if metric == "Invocation4XXErrors":
            return [1.0 if 400 <= s["status"] < 500 else 0.0 for s in self.samples]
        if metric == "Invocations":
            return [1.0 for _ in self.samples]
        raise ValueError(f"unsupported alarm metric {metric!r} (ModelLatency, Invocation5XXErrors, "
                         "Invocation4XXErrors, Invocations)")

    def breached(self, name: str, alarm: Mapping[str, Any]) -> str | None:
        """FailureReason if ``alarm`` is in ALARM state on the samples so far, else None."""
        values = self.values(alarm["MetricName"])
        if not values:
            return None  # INSUFFICIENT_DATA
        stat = alarm.get("ExtendedStatistic") or alarm.get("Statistic", "Average")
        if stat == "Average":
            value = statistics.fmean(values)
        elif stat == "Maximum":
            value = max(values)
        elif stat == "Minimum":
            value = min(values)
        elif stat == "Sum":
            value = sum(values)
        elif stat == "SampleCount":
            value = float(len(values))
        elif re.fullmatch(r"p\d{1,2}(\.\d+)?", stat):
            ordered = sorted(values)
            value = ordered[min(len(ordered) - 1, math.ceil(float(stat[1:]) / 100 * len(ordered)) - 1)]
        else:
            raise ValueError(f"alarm {name}: unsupported statistic {stat!r}")
        threshold = float(alarm["Threshold"])
        op = alarm.get("ComparisonOperator", "GreaterThanThreshold")
        compare = {"GreaterThanThreshold": value > threshold, "GreaterThanOrEqualToThreshold": value >= threshold,
                   "LessThanThreshold": value < threshold, "LessThanOrEqualToThreshold": value <= threshold}
        if op not in compare:
            raise ValueError(f"alarm {name}: unsupported ComparisonOperator {op!r}")
        if compare[op]:
            return (f"alarm {name} in ALARM: {stat} {alarm['MetricName']} = {value:g} {op} {threshold:g} "
                    f"over {len(values)} canary datapoints")
        return None


class LocalHosting:
    """Hosting port on local processes.

    Args:
        home: folder for endpoint state files, logs and extracted models (created).
        emit: receives ``SageMaker Endpoint State Change`` events (EventBridge envelope).
        names: resource names (variant name; default alarm names).
        alarms: local alarm definitions by AlarmName (default: ``default_alarms(names)``).
        canary_requests: probe invocations standing for 100 % of the fleet's capacity.
        ready_timeout_s: longest wait for a new server's ``/ping`` (also bounded by
            ``MaximumExecutionTimeoutInSeconds``).
        invoke_timeout_s: HTTP timeout of one invocation (SageMaker allows 60 s).
        drain_timeout_s: longest wait for a SIGTERMed server to finish in-flight requests before
            SIGKILL.
        python / serve_script: how to start a server (default: this interpreter and
            ``inference_image/serve.py``).
        server_env: extra environment for servers (e.g. ``OCRLOOP_MAX_CONCURRENCY``).
    """

    def __init__(self, home: Path, emit: Callable[[dict[str, Any]], None], *, names: Names = Names(),
                 alarms: Mapping[str, Mapping[str, Any]] | None = None, canary_requests: int = 10,
                 ready_timeout_s: float = 120.0, invoke_timeout_s: float = 60.0, drain_timeout_s: float = 35.0,
                 python: str = sys.executable, serve_script: Path = SERVE_SCRIPT,
                 server_env: Mapping[str, str] | None = None) -> None:
        import httpx

        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.emit = emit
        self.names = names
        self.alarms = dict(default_alarms(names) if alarms is None else alarms)
        self.canary_requests = canary_requests
        self.ready_timeout_s = ready_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.python = python
        self.serve_script = Path(serve_script)
        self.server_env = dict(server_env or {})
        self._client = httpx.Client(timeout=invoke_timeout_s, trust_env=False)
        self._servers: dict[str, _Server] = {}  # endpoint → serving process started here
        self._starting: set[_Server] = set()  # green fleets not switched in yet
        self._lock = threading.Lock()
        self._canary_png: bytes | None = None
        self._closed = False
        atexit.register(self.stop_all)

    # -- state file ----------------------------------------------------------------------

    def _state_path(self, endpoint_name: str) -> Path:
        return self.home / f"{endpoint_name}.json"

    def _read(self, endpoint_name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._state_path(endpoint_name).read_text())
        except FileNotFoundError:
            return None

    def _write(self, state: dict[str, Any]) -> None:
        path = self._state_path(state["EndpointName"])
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, path)  # atomic: readers see the old or the new file, never a mix

    @contextlib.contextmanager
    def _deploy_lock(self, endpoint_name: str) -> Iterator[None]:
        with open(self.home / f".{endpoint_name}.lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise EndpointBusy(f"endpoint {endpoint_name} is being updated; retry when it is InService") from exc
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- Hosting port --------------------------------------------------------------------

    def describe_endpoint(self, endpoint_name: str) -> dict[str, Any]:
        """DescribeEndpoint response (JSON-safe: times are ISO-8601 strings) plus local ``Url`` and
        ``ServerPid``; ``ProductionVariants[0]`` also carries ``ModelDataUrl``, ``ModelPackageArn`` and
        ``ModelVersion``. An InService endpoint whose server process is gone reads ``OutOfService``.

        Raises:
            EndpointNotFound: no such endpoint.
        """
        state = self._read(endpoint_name)
        if state is None:
            raise EndpointNotFound(endpoint_name)
        pid = state.get("ServerPid")
        if state.get("EndpointStatus") == "InService" and pid and not self._alive(pid):
            state["EndpointStatus"] = "OutOfService"
            state["FailureReason"] = f"server process {pid} is not running"
        return state

    def invoke(self, endpoint_name: str, body: bytes, content_type: str) -> bytes:
        """POST ``body`` to the endpoint's ``/invocations``; returns the JSON response bytes.

        A connection-level failure (refused, reset, closed without response) is retried once after
        re-reading the state file, so a request racing a blue/green switch lands on the new fleet.

        Raises:
            EndpointNotFound: no such endpoint.
            EndpointUnavailable: no serving process, or the retry failed too.
            InvocationError: the server answered 4xx/5xx (bad input, model error).
        """
        import httpx

        for attempt in (1, 2):
            state = self._read(endpoint_name)
            if state is None:
                raise EndpointNotFound(endpoint_name)
            url = state.get("Url")
            if not url:
                raise EndpointUnavailable(f"endpoint {endpoint_name} is {state.get('EndpointStatus')}: "
                                          f"{state.get('FailureReason') or 'no server'}")
            try:
                response = self._client.post(f"{url}/invocations", content=body,
                                             headers={"Content-Type": content_type})
            except httpx.TransportError as exc:
                if attempt == 2 or type(exc).__name__ not in _RETRYABLE:
                    raise EndpointUnavailable(f"endpoint {endpoint_name} at {url}: {exc!r}") from exc
                log.info("invoke %s: %r on %s; re-reading state and retrying", endpoint_name, exc, url)
                continue
            if response.status_code >= 400:
                raise InvocationError(response.status_code, response.text)
            return response.content
        raise AssertionError("unreachable")

    def deploy(self, endpoint_name: str, model_package_arn: str, model_data_url: str,
               deployment_config: dict[str, Any]) -> str:
        """Create the endpoint or blue/green-update it (see the module doc); returns the
        EndpointConfigName requested (``<endpoint>-<model_version>``, the version read from the
        artifact's ``model_card.json``; the package ARN's last segment when unreadable).

        A failure of the new fleet does not raise: the outcome is in ``describe_endpoint`` and the
        emitted event (InService on the old config with FailureReason, or Failed for a first deploy).

        Raises:
            ValueError: invalid endpoint name, non-file model URL, or a malformed DeploymentConfig.
            EndpointBusy: another deploy of this endpoint is running.
            RuntimeError: ``stop_all`` was called.
        """
        if self._closed:
            raise RuntimeError("LocalHosting is stopped")
        if not _NAME_RE.match(endpoint_name):
            raise ValueError(f"invalid endpoint name {endpoint_name!r} (SageMaker: [a-zA-Z0-9](-*[a-zA-Z0-9]){{0,62}})")
        source = model_path_from_url(model_data_url)
        plan = _Plan.parse(deployment_config or {}, self.canary_requests)
        with self._deploy_lock(endpoint_name):
            config_name, final = self._deploy_locked(endpoint_name, model_package_arn, model_data_url, source,
                                                     deployment_config, plan)
        self.emit(events.endpoint_state_change(final))
        return config_name

    # -- deploy steps --------------------------------------------------------------------

    def _deploy_locked(self, endpoint_name: str, package_arn: str, model_data_url: str, source: Path,
                       deployment_config: dict[str, Any], plan: "_Plan") -> tuple[str, dict[str, Any]]:
        """Returns (EndpointConfigName requested, final DescribeEndpoint)."""
        started = time.monotonic()
        deadline = started + plan.max_execution_s
        prev = self._read(endpoint_name)
        creating = prev is None or prev.get("EndpointStatus") == "Failed"
        stamp = f"{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        workdir = self.home / endpoint_name / stamp
        workdir.mkdir(parents=True)
        model_dir, version, prep_error = self._prepare_model(source, workdir)
        config_name = endpoint_config_name(endpoint_name, version or events.name_from_arn(package_arn))
        now = _now()
        variant = {
            "VariantName": self.names.variant_name,
            "DeployedImages": [{"SpecifiedImage": str(self.serve_script),
                                "ResolvedImage": f"{self.python} {self.serve_script}", "ResolutionTime": now}],
            "CurrentWeight": 1.0, "DesiredWeight": 1.0, "CurrentInstanceCount": 1, "DesiredInstanceCount": 1,
            "ModelDataUrl": model_data_url, "ModelPackageArn": package_arn, "ModelVersion": version,
        }
        if creating:
            state = {"EndpointName": endpoint_name, "EndpointArn": events.arn("endpoint", endpoint_name),
                     "EndpointConfigName": config_name, "EndpointStatus": "Creating", "ProductionVariants": [],
                     "CreationTime": now, "LastModifiedTime": now, "Url": None, "ServerPid": None}
        else:
            state = dict(prev)
            state.update(EndpointStatus="Updating", LastModifiedTime=now, PendingDeploymentSummary={
                "EndpointConfigName": config_name, "StartTime": now,
                "ProductionVariants": [dict(variant, CurrentInstanceCount=0)]})
            state.pop("FailureReason", None)
        self._write(state)
        log.info("%s %s → %s (%s)", "creating" if creating else "updating", endpoint_name, config_name, model_data_url)

        green: _Server | None = None
        try:
            if prep_error:
                raise DeployFailed(prep_error)
            green = self._start(endpoint_name, model_dir, workdir, owns_model=model_dir != source, deadline=deadline)
            ready_s = time.monotonic() - started
            self._run_canary(green, deployment_config, plan, deadline)
        except Exception as exc:  # DeployFailed, or anything unexpected: roll back either way
            reason = str(exc) if isinstance(exc, DeployFailed) else f"internal error: {exc!r}"
            if not isinstance(exc, DeployFailed):
                log.exception("deploy of %s failed unexpectedly", config_name)
            log.warning("deploy %s → %s failed: %s", endpoint_name, config_name, reason)
            if green is not None:
                self._stop(green)
            final = dict(prev) if not creating else dict(state, EndpointStatus="Failed")
            final.pop("PendingDeploymentSummary", None)
            final.update(FailureReason=f"{config_name}: {reason}"[:1024], LastModifiedTime=_now())
            if not creating:
                final["EndpointStatus"] = "InService"
            final["LastDeploymentConfig"] = deployment_config
            self._write(final)
            return config_name, self.describe_endpoint(endpoint_name)

        # Switch: one atomic rename moves all new traffic to green.
        final = dict(state)
        final.pop("PendingDeploymentSummary", None)
        final.pop("FailureReason", None)
        final.update(EndpointConfigName=config_name, EndpointStatus="InService", LastModifiedTime=_now(),
                     ProductionVariants=[variant], LastDeploymentConfig=deployment_config,
                     Url=green.url, ServerPid=green.proc.pid)
        with self._lock:
            blue = self._servers.get(endpoint_name)
            self._servers[endpoint_name] = green
            self._starting.discard(green)
        self._write(final)
        log.info("%s now serves %s at %s (ready in %.1f s, deploy %.1f s)", endpoint_name, config_name,
                 green.url, ready_s, time.monotonic() - started)
        if blue is not None:
            if plan.termination_wait_s:
                time.sleep(plan.termination_wait_s)
            self._stop(blue)
        elif prev and prev.get("ServerPid") and self._alive(prev["ServerPid"]):
            log.warning("old server pid %s of %s was started by another process; leaving it to its owner",
                        prev["ServerPid"], endpoint_name)
        return config_name, self.describe_endpoint(endpoint_name)

    def _prepare_model(self, source: Path, workdir: Path) -> tuple[Path, str | None, str | None]:
        """(model folder, model_version, error): a folder is used in place, a ``.tar.gz`` is extracted
        into ``workdir/model`` as SageMaker extracts ``model.tar.gz`` into ``/opt/ml/model``."""
        try:
            if source.is_file():
                model_dir = extract_model_archive(source, workdir / "model")
            elif source.is_dir():
                model_dir = find_model_folder(source)
            else:
                return source, None, f"model data {source} does not exist"
        except ArtifactError as exc:
            return source, None, str(exc)
        try:
            version = str(json.loads((model_dir / "model_card.json").read_text())["model_version"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return model_dir, None, f"{model_dir}/model_card.json has no model_version ({exc!r})"
        return model_dir, version, None

    def _start(self, endpoint_name: str, model_dir: Path, workdir: Path, owns_model: bool, deadline: float) -> _Server:
        """Start a server and wait for ``/ping`` 200; retries on a lost port race.

        Raises:
            DeployFailed: the process exited or did not become healthy in time.
        """
        for _attempt in range(3):
            port = _free_port()
            env = dict(os.environ)
            env.update(self.server_env)
            env.update(SM_MODEL_DIR=str(model_dir), SAGEMAKER_BIND_TO_PORT=str(port), OCRLOOP_BIND_HOST="127.0.0.1",
                       OCRLOOP_PARENT_PID=str(os.getpid()), PYTHONUNBUFFERED="1",
                       PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
            log_file = open(workdir / "server.log", "ab")
            proc = subprocess.Popen([self.python, str(self.serve_script), "serve"], env=env, cwd=workdir,
                                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            server = _Server(proc, f"http://127.0.0.1:{port}", workdir, log_file, owns_model)
            with self._lock:
                self._starting.add(server)
            try:
                self._wait_ready(server, min(deadline, time.monotonic() + self.ready_timeout_s))
                return server
            except DeployFailed:
                tail = server.log_tail()
                self._stop(server, remove_model=False)
                if "address already in use" in tail.lower():
                    continue
                raise
        raise DeployFailed("could not bind a free port for the server")

    def _wait_ready(self, server: _Server, until: float) -> None:
        import httpx

        while time.monotonic() < until:
            code = server.proc.poll()
            if code is not None:
                raise DeployFailed(f"server exited with code {code} before /ping was healthy: "
                                   f"{server.log_tail(600).strip()}")
            try:
                if self._client.get(f"{server.url}/ping", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise DeployFailed("server did not answer /ping with 200 within the time limit: "
                           f"{server.log_tail(600).strip()}")

    def _run_canary(self, green: _Server, deployment_config: dict[str, Any], plan: "_Plan", deadline: float) -> None:
        """Send ``plan.requests`` probe invocations over ``plan.bake_s`` s and check each result and
        the alarms after each one.

        Raises:
            DeployFailed: a probe failed (transport error, non-2xx, bad body), an alarm breached, the
                server died, or the deploy ran past MaximumExecutionTimeoutInSeconds.
        """
        import httpx

        if self._canary_png is None:
            self._canary_png = _canary_image_png()
        alarms = self._resolve_alarms(deployment_config)
        canary = _Canary()
        start = time.monotonic()
        for i in range(plan.requests):
            if time.monotonic() > deadline:
                raise DeployFailed("deployment exceeded MaximumExecutionTimeoutInSeconds during the canary")
            t0 = time.perf_counter()
            try:
                r = self._client.post(f"{green.url}/invocations", content=self._canary_png,
                                      headers={"Content-Type": "image/png"})
            except httpx.TransportError as exc:
                raise DeployFailed(f"canary invocation {i + 1}/{plan.requests} failed: {exc!r}; "
                                   f"{green.log_tail(400).strip()}") from exc
            latency_us = (time.perf_counter() - t0) * 1e6
            canary.add(r.status_code, latency_us)
            for name, alarm in alarms.items():
                reason = canary.breached(name, alarm)
                if reason:
                    raise DeployFailed(f"auto-rollback: {reason}")
            if r.status_code >= 300:
                raise DeployFailed(f"canary invocation {i + 1}/{plan.requests} returned {r.status_code}: "
                                   f"{r.text[:300]}")
            try:
                body = r.json()
                assert isinstance(body["lines"], list) and isinstance(body["model_version"], str)
            except Exception as exc:
                raise DeployFailed(f"canary invocation {i + 1}/{plan.requests} returned a malformed body: "
                                   f"{r.text[:300]!r}") from exc
            # Spread the probes over the baking period.
            pause = start + plan.bake_s * (i + 1) / plan.requests - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        if green.proc.poll() is not None:
            raise DeployFailed(f"server exited with code {green.proc.returncode} during the canary")
        log.info("canary passed: %d invocations, mean ModelLatency %.0f ms", len(canary.samples),
                 statistics.fmean(s["latency_us"] for s in canary.samples) / 1000)

    def _resolve_alarms(self, deployment_config: dict[str, Any]) -> dict[str, Mapping[str, Any]]:
        entries = (deployment_config.get("AutoRollbackConfiguration") or {}).get("Alarms") or []
        out: dict[str, Mapping[str, Any]] = {}
        for entry in entries:
            name = entry.get("AlarmName", "")
            definition = entry if "MetricName" in entry else self.alarms.get(name)
            if definition is None:
                log.warning("alarm %s has no local definition: INSUFFICIENT_DATA, never triggers", name)
                continue
            if "Threshold" not in definition:
                raise DeployFailed(f"alarm {name} has no Threshold")
            out[name] = definition
        return out

    # -- processes -----------------------------------------------------------------------

    def _alive(self, pid: int) -> bool:
        with self._lock:
            mine = [s for s in [*self._servers.values(), *self._starting] if s.proc.pid == pid]
        if mine:
            return mine[0].proc.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _stop(self, server: _Server, remove_model: bool = True) -> None:
        """SIGTERM (uvicorn drains in-flight requests), SIGKILL after ``drain_timeout_s``."""
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(self.drain_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("server %s did not drain in %.0f s; killing it", server.url, self.drain_timeout_s)
                server.proc.kill()
                server.proc.wait()
        server.log_file.close()
        with self._lock:
            self._starting.discard(server)
        if remove_model and server.owns_model:
            shutil.rmtree(server.workdir / "model", ignore_errors=True)

    def stop_all(self) -> None:
        """Stop every server this object started (SIGTERM all, then wait for each). Idempotent."""
        with self._lock:
            servers = [*self._servers.values(), *self._starting]
            self._servers.clear()
            self._starting.clear()
        for server in servers:
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        for server in servers:
            self._stop(server)
        if not self._closed:
            self._closed = True
            self._client.close()
            atexit.unregister(self.stop_all)

    def __enter__(self) -> "LocalHosting":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_all()


class _Plan:
    """What a DeploymentConfig asks of the local canary."""

    def __init__(self, requests: int, bake_s: float, termination_wait_s: float, max_execution_s: float) -> None:
        self.requests, self.bake_s = requests, bake_s
        self.termination_wait_s, self.max_execution_s = termination_wait_s, max_execution_s

    @classmethod
    def parse(cls, config: Mapping[str, Any], canary_requests: int) -> "_Plan":
        """Raises ValueError on an unknown routing type or a malformed size."""
        policy = config.get("BlueGreenUpdatePolicy") or {}
        routing = policy.get("TrafficRoutingConfiguration") or {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}
        kind = routing.get("Type", "ALL_AT_ONCE")
        wait = float(routing.get("WaitIntervalInSeconds", 0))
        if kind == "ALL_AT_ONCE":
            share, steps = 1.0, 1
        elif kind in ("CANARY", "LINEAR"):
            size = routing.get("CanarySize" if kind == "CANARY" else "LinearStepSize")
            if not isinstance(size, Mapping) or size.get("Type") not in ("CAPACITY_PERCENT", "INSTANCE_COUNT"):
                raise ValueError(f"{kind} routing needs {'CanarySize' if kind == 'CANARY' else 'LinearStepSize'} "
                                 f"with Type CAPACITY_PERCENT or INSTANCE_COUNT, got {size!r}")
            value = float(size.get("Value", 0))
            if value <= 0:
                raise ValueError(f"{kind} size Value must be > 0, got {value}")
            share = min(1.0, value / 100.0) if size["Type"] == "CAPACITY_PERCENT" else 1.0
            steps = math.ceil(1.0 / share) if kind == "LINEAR" else 1
        else:
            raise ValueError(f"unsupported TrafficRoutingConfiguration Type {kind!r} (ALL_AT_ONCE, CANARY, LINEAR)")
        return cls(requests=max(1, math.ceil(share * canary_requests - 1e-9)), bake_s=wait * steps,
                   termination_wait_s=float(policy.get("TerminationWaitInSeconds", 0)),
                   max_execution_s=float(policy.get("MaximumExecutionTimeoutInSeconds", 3600)))


__all__ = ["LocalHosting", "EndpointNotFound", "EndpointBusy", "EndpointUnavailable", "InvocationError",
           "default_alarms", "blue_green_deployment_config", "endpoint_config_name", "model_path_from_url"]
