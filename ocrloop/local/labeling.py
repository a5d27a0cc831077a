"""Local labeling jobs: the Ground Truth job lifecycle in a folder.

``create_labeling_job`` takes the CreateLabelingJob request unchanged and records the job as
``InProgress``. Annotators complete it by importing their annotations (Ground Truth output
manifest, PPOCRLabel ``Label.txt`` or LabelMe JSON — see ``ocrloop.importers``) with ``complete``;
the output manifest lands where Ground Truth writes it
(``<S3OutputPath><job>/manifests/output/output.manifest``) and a ``SageMaker Ground Truth Labeling
Job State Change`` event is published.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
from pathlib import Path
from typing import Any, Callable

from ..events import arn, labeling_job_state_change
from ..ports import ObjectExists


class LocalLabeling:
    """Labeling port.

    Args:
        home: folder for job records.
        read_uri / write_uri: blob access by URI (the runtime's stores).
        emit: receives state-change events.
    """

    def __init__(self, home: Path, read_uri: Callable[[str], bytes], write_uri: Callable[[str, bytes], None],
                 emit: Callable[[dict[str, Any]], None]):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.read_uri, self.write_uri, self.emit = read_uri, write_uri, emit
        self._lock = threading.Lock()

    def _file(self, name: str) -> Path:
        return self.home / f"{name}.json"

    def create_labeling_job(self, request: dict[str, Any]) -> str:
        """Raises ``ObjectExists`` if a job of that name exists (as SageMaker's ResourceInUse)."""
        name = request["LabelingJobName"]
        now = _dt.datetime.now(_dt.timezone.utc).isoformat()
        job = {
            "LabelingJobName": name,
            "LabelingJobArn": arn("labeling-job", name),
            "LabelingJobStatus": "InProgress",
            "LabelAttributeName": request["LabelAttributeName"],
            "InputConfig": request["InputConfig"],
            "OutputConfig": request["OutputConfig"],
            "RoleArn": request["RoleArn"],
            "HumanTaskConfig": request["HumanTaskConfig"],
            "Tags": request.get("Tags", []),
            "CreationTime": now,
            "LastModifiedTime": now,
            "LabelCounters": {"TotalLabeled": 0, "HumanLabeled": 0, "MachineLabeled": 0,
                              "FailedNonRetryableError": 0, "Unlabeled": 0},
        }
        with self._lock:
            if self._file(name).exists():
                raise ObjectExists(name)
            self._file(name).write_text(json.dumps(job, indent=2, ensure_ascii=False))
        return job["LabelingJobArn"]

    def describe_labeling_job(self, name: str) -> dict[str, Any]:
        """DescribeLabelingJob. Raises ``KeyError`` for an unknown job."""
        try:
            return json.loads(self._file(name).read_text())
        except FileNotFoundError:
            raise KeyError(f"labeling job {name} does not exist") from None

    def list_labeling_jobs(self, status: str | None = None) -> list[dict[str, Any]]:
        jobs = [json.loads(p.read_text()) for p in sorted(self.home.glob("*.json"))]
        return [j for j in jobs if status is None or j["LabelingJobStatus"] == status]

    def input_items(self, name: str) -> list[dict[str, Any]]:
        """The job's input manifest lines (source-ref + pre-annotations), what annotators see."""
        job = self.describe_labeling_job(name)
        text = self.read_uri(job["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]).decode()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def complete(self, name: str, output_manifest: str) -> dict[str, Any]:
        """Finish the job with the annotators' output manifest (JSON Lines text).

        Raises:
            KeyError: unknown job. ValueError: the job is not InProgress.
        """
        with self._lock:
            job = self.describe_labeling_job(name)
            if job["LabelingJobStatus"] != "InProgress":
                raise ValueError(f"labeling job {name} is {job['LabelingJobStatus']}, not InProgress")
            out_uri = job["OutputConfig"]["S3OutputPath"].rstrip("/") + f"/{name}/manifests/output/output.manifest"
            self.write_uri(out_uri, output_manifest.encode())
            n = sum(1 for line in output_manifest.splitlines() if line.strip())
            job["LabelingJobStatus"] = "Completed"
            job["LabelingJobOutput"] = {"OutputDatasetS3Uri": out_uri}
            job["LabelCounters"].update({"TotalLabeled": n, "HumanLabeled": n})
            job["LastModifiedTime"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
            self._file(name).write_text(json.dumps(job, indent=2, ensure_ascii=False))
        self.emit(labeling_job_state_change(name, "Completed"))
        return job
