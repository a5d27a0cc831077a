"""Model Registry on SQLite, with SageMaker's model-package fields and states.

Each ``create_model_package`` / ``update_model_package`` publishes a ``SageMaker Model Package State
Change`` event whose detail mirrors DescribeModelPackage, as SageMaker does. ``ClientToken`` makes a
create idempotent (same token → same package, no second event).
"""

from __future__ import annotations

import datetime as _dt
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable

from ..events import DEFAULT_ACCOUNT, DEFAULT_REGION, model_package_state_change

STATES = ("PendingManualApproval", "Approved", "Rejected")


class SqliteRegistry:
    """Registry port. ``emit`` receives the state-change events."""

    def __init__(self, path: Path, emit: Callable[[dict[str, Any]], None] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.emit = emit
        self._lock = threading.Lock()
        with self._db() as db:
            db.execute("""CREATE TABLE IF NOT EXISTS model_packages (
                arn TEXT PRIMARY KEY, grp TEXT NOT NULL, version INTEGER NOT NULL,
                client_token TEXT, body TEXT NOT NULL, UNIQUE (grp, version), UNIQUE (grp, client_token))""")

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level="IMMEDIATE")

    @staticmethod
    def _now() -> str:
        return _dt.datetime.now(_dt.timezone.utc).isoformat()

    def create_model_package(self, request: dict[str, Any]) -> str:
        """CreateModelPackage. Raises ``ValueError`` on an unknown ModelApprovalStatus."""
        group = request["ModelPackageGroupName"]
        status = request.get("ModelApprovalStatus", "PendingManualApproval")
        if status not in STATES:
            raise ValueError(f"ModelApprovalStatus must be one of {STATES}, got {status!r}")
        token = request.get("ClientToken")
        with self._lock, self._db() as db:
            if token:
                row = db.execute("SELECT arn FROM model_packages WHERE grp=? AND client_token=?",
                                 (group, token)).fetchone()
                if row:
                    return row[0]
            version = (db.execute("SELECT MAX(version) FROM model_packages WHERE grp=?", (group,)).fetchone()[0] or 0) + 1
            arn = f"arn:aws:sagemaker:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:model-package/{group}/{version}"
            body = {
                "ModelPackageGroupName": group,
                "ModelPackageVersion": version,
                "ModelPackageArn": arn,
                "ModelPackageDescription": request.get("ModelPackageDescription", ""),
                "CreationTime": self._now(),
                "LastModifiedTime": self._now(),
                "InferenceSpecification": request.get("InferenceSpecification", {}),
                "ModelPackageStatus": "Completed",
                "ModelApprovalStatus": status,
                "CustomerMetadataProperties": dict(request.get("CustomerMetadataProperties", {})),
                "ModelMetrics": request.get("ModelMetrics", {}),
            }
            db.execute("INSERT INTO model_packages VALUES (?,?,?,?,?)",
                       (arn, group, version, token, json.dumps(body, ensure_ascii=False)))
        self._emit(body)
        return arn

    def describe_model_package(self, arn: str) -> dict[str, Any]:
        """DescribeModelPackage. Raises ``KeyError`` for an unknown ARN."""
        with self._db() as db:
            row = db.execute("SELECT body FROM model_packages WHERE arn=?", (arn,)).fetchone()
        if row is None:
            raise KeyError(f"model package {arn} does not exist")
        return json.loads(row[0])

    def list_model_packages(self, group: str, approval_status: str | None = None) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.execute("SELECT body FROM model_packages WHERE grp=? ORDER BY version DESC", (group,)).fetchall()
        out = []
        for (body,) in rows:
            d = json.loads(body)
            if approval_status and d["ModelApprovalStatus"] != approval_status:
                continue
            out.append({k: d[k] for k in ("ModelPackageGroupName", "ModelPackageVersion", "ModelPackageArn",
                                          "ModelPackageDescription", "CreationTime", "ModelPackageStatus",
                                          "ModelApprovalStatus")})
        return out

    def update_model_package(self, request: dict[str, Any]) -> None:
        """UpdateModelPackage (ModelApprovalStatus, ApprovalDescription, CustomerMetadataProperties,
        CustomerMetadataPropertiesToRemove). Raises ``KeyError``/``ValueError`` on bad input."""
        arn = request["ModelPackageArn"]
        with self._lock:
            body = self.describe_model_package(arn)
            if "ModelApprovalStatus" in request:
                if request["ModelApprovalStatus"] not in STATES:
                    raise ValueError(f"ModelApprovalStatus must be one of {STATES}")
                body["ModelApprovalStatus"] = request["ModelApprovalStatus"]
            if "ApprovalDescription" in request:
                body["ApprovalDescription"] = request["ApprovalDescription"]
            props = dict(body.get("CustomerMetadataProperties", {}))
            props.update(request.get("CustomerMetadataProperties", {}))
            for key in request.get("CustomerMetadataPropertiesToRemove", []):
                props.pop(key, None)
            body["CustomerMetadataProperties"] = props
            body["LastModifiedTime"] = self._now()
            with self._db() as db:
                db.execute("UPDATE model_packages SET body=? WHERE arn=?", (json.dumps(body, ensure_ascii=False), arn))
        self._emit(body)

    def _emit(self, body: dict[str, Any]) -> None:
        if self.emit is not None:
            self.emit(model_package_state_change(body))
