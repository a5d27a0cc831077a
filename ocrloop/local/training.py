"""Local training jobs: ``training_image``'s entrypoint in a child process under the SageMaker
training container contract
(https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-training-algo-running-container.html).

For each CreateTrainingJob request the adapter lays out ``<job>/ml`` as ``/opt/ml``:
``input/config/hyperparameters.json`` (all values strings), ``inputdataconfig.json``,
``resourceconfig.json``, ``input/data/<channel>/`` (copied from the channel URIs),
``checkpoints/`` (kept at the CheckpointConfig URI so a restarted job resumes), ``model/`` and
``output/failure``. When the process exits, ``model/`` is packed as
``<S3OutputPath><job>/output/model.tar.gz``, the ``METRIC name=value`` lines become
``FinalMetricDataList`` and a ``SageMaker Training Job State Change`` event is published.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..events import arn, training_job_state_change
from ..ports import ObjectExists

METRIC_LINE = re.compile(r"^METRIC (\w+)=([-+0-9.eE]+|nan|inf)\s*$")


def uri_to_path(uri: str) -> Path:
    if not uri.startswith("file://"):
        raise ValueError(f"local training reads file:// URIs, got {uri}")
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(uri).path))


class LocalTraining:
    """Training port.

    Args:
        home: folder holding one sub-folder per job.
        write_uri: store bytes at a blob URI (the model artifact).
        emit: receives state-change events.
        hold / release: tell the bus background work is in flight.
        python: interpreter for the entrypoint (default: this one).
        env: extra environment for the process (e.g. thread counts).
    """

    def __init__(self, home: Path, write_uri: Callable[[str, bytes], None], emit: Callable[[dict[str, Any]], None],
                 hold: Callable[[], None] = lambda: None, release: Callable[[], None] = lambda: None,
                 python: str = sys.executable, env: dict[str, str] | None = None):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.write_uri, self.emit, self.hold, self.release = write_uri, emit, hold, release
        self.python = python
        self.env = env or {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _state_file(self, name: str) -> Path:
        return self.home / name / "describe.json"

    def _save(self, desc: dict[str, Any]) -> None:
        path = self._state_file(desc["TrainingJobName"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(desc, indent=2, ensure_ascii=False))
        os.replace(tmp, path)

    def create_training_job(self, request: dict[str, Any]) -> str:
        """Start the job in the background. Raises ``ObjectExists`` for a duplicate name."""
        name = request["TrainingJobName"]
        with self._lock:
            job_dir = self.home / name
            if job_dir.exists():
                raise ObjectExists(name)
            ml = job_dir / "ml"
            (ml / "input" / "config").mkdir(parents=True)
        config = ml / "input" / "config"
        (config / "hyperparameters.json").write_text(json.dumps(
            {k: str(v) for k, v in request.get("HyperParameters", {}).items()}, indent=2, ensure_ascii=False))
        channels = {}
        for ch in request.get("InputDataConfig", []):
            src = uri_to_path(ch["DataSource"]["S3DataSource"]["S3Uri"])
            dst = ml / "input" / "data" / ch["ChannelName"]
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                dst.mkdir(parents=True)
                shutil.copy2(src, dst / src.name)
            channels[ch["ChannelName"]] = {"TrainingInputMode": ch.get("InputMode", "File"),
                                           "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        (config / "inputdataconfig.json").write_text(json.dumps(channels, indent=2))
        (config / "resourceconfig.json").write_text(json.dumps(
            {"current_host": "algo-1", "hosts": ["algo-1"], "current_instance_type": "local"}))
        ckpt_uri = (request.get("CheckpointConfig") or {}).get("S3Uri")
        if ckpt_uri:
            ckpt = uri_to_path(ckpt_uri)
            ckpt.mkdir(parents=True, exist_ok=True)
            (ml / "checkpoints").symlink_to(ckpt, target_is_directory=True)
        now = _dt.datetime.now(_dt.timezone.utc).isoformat()
        desc = {
            "TrainingJobName": name,
            "TrainingJobArn": arn("training-job", name),
            "TrainingJobStatus": "InProgress",
            "SecondaryStatus": "Training",
            "AlgorithmSpecification": request["AlgorithmSpecification"],
            "RoleArn": request.get("RoleArn"),
            "HyperParameters": request.get("HyperParameters", {}),
            "InputDataConfig": request.get("InputDataConfig", []),
            "OutputDataConfig": request["OutputDataConfig"],
            "ResourceConfig": request.get("ResourceConfig", {}),
            "StoppingCondition": request.get("StoppingCondition", {}),
            "EnableManagedSpotTraining": request.get("EnableManagedSpotTraining", False),
            "CheckpointConfig": request.get("CheckpointConfig"),
            "CreationTime": now,
            "TrainingStartTime": now,
            "Tags": request.get("Tags", []),
        }
        self._save(desc)
        self.hold()
        thread = threading.Thread(target=self._run, args=(desc, ml), name=f"train-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return desc["TrainingJobArn"]

    def _run(self, desc: dict[str, Any], ml: Path) -> None:
        try:
            self._run_inner(desc, ml)
        finally:
            self.release()

    def _run_inner(self, desc: dict[str, Any], ml: Path) -> None:
        name = desc["TrainingJobName"]
        entry = desc["AlgorithmSpecification"]["TrainingImage"]
        env = dict(os.environ, OCRLOOP_ML_ROOT=str(ml), PYTHONUNBUFFERED="1", **self.env)
        metrics: dict[str, float] = {}
        started = time.time()
        log_path = self.home / name / "train.log"
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.Popen([self.python, entry, "train"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env=env, text=True, encoding="utf-8", errors="replace")
            for line in proc.stdout:  # type: ignore[union-attr]
                log.write(line)
                log.flush()
                m = METRIC_LINE.match(line.strip())
                if m:
                    metrics[m.group(1)] = float(m.group(2))
            rc = proc.wait()
        desc["TrainingEndTime"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
        desc["TrainingTimeInSeconds"] = int(time.time() - started)
        desc["BillableTimeInSeconds"] = desc["TrainingTimeInSeconds"]
        desc["FinalMetricDataList"] = [{"MetricName": k, "Value": v, "Timestamp": desc["TrainingEndTime"]}
                                       for k, v in sorted(metrics.items())]
        failure = ml / "output" / "failure"
        if rc == 0 and (ml / "model").is_dir() and any((ml / "model").iterdir()):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                for path in sorted((ml / "model").iterdir()):
                    tar.add(path, arcname=path.name)
            out = desc["OutputDataConfig"]["S3OutputPath"].rstrip("/") + f"/{name}/output/model.tar.gz"
            self.write_uri(out, buf.getvalue())
            desc.update(TrainingJobStatus="Completed", SecondaryStatus="Completed",
                        ModelArtifacts={"S3ModelArtifacts": out})
        else:
            reason = failure.read_text()[:1024] if failure.exists() else f"entrypoint exited with code {rc}"
            desc.update(TrainingJobStatus="Failed", SecondaryStatus="Failed", FailureReason=reason)
        self._save(desc)
        self.emit(training_job_state_change(desc))

    def describe_training_job(self, name: str) -> dict[str, Any]:
        """DescribeTrainingJob. Raises ``KeyError`` for an unknown job."""
        try:
            return json.loads(self._state_file(name).read_text())
        except FileNotFoundError:
            raise KeyError(f"training job {name} does not exist") from None

    def wait(self, timeout_s: float | None = None) -> None:
        for t in list(self._threads):
            t.join(timeout_s)
