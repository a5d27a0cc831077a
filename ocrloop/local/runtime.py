"""The embedded default: the whole loop on one machine, under one home folder.

::

    <home>/buckets/<bucket>/     four versioned "buckets" (FolderBlobStore)
    <home>/registry.sqlite       model registry
    <home>/labeling/             labeling jobs
    <home>/training/<job>/       training jobs (ml root, log, describe.json)
    <home>/endpoints/            endpoint state + server logs (LocalHosting)
    <home>/index/                faiss index versions + alias
    <home>/dlq/                  events that failed delivery

Rules on the in-process bus are ``Names().patterns()``, the same dicts the CDK app deploys, and
their targets are the same handler functions the Lambdas call.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path
from typing import Any

from .. import config as cfg
from .. import events, handlers, indexing
from ..config import LoopConfig, Names
from ..runtime import Runtime
from .blobstore import FolderBlobStore
from .bus import LocalBus
from .labeling import LocalLabeling
from .registry import SqliteRegistry
from .training import LocalTraining, uri_to_path

log = logging.getLogger("ocrloop.local")
REPO = Path(__file__).resolve().parents[2]


class LocalRuntime:
    """Build and own every local adapter.

    Args:
        home: the runtime folder (created).
        config: loop settings (defaults: ``LoopConfig()``).
        with_index: create the embedder + faiss index and the ``index_drawing`` rule.
        train_env: extra environment for training processes.
    """

    def __init__(self, home: Path, config: LoopConfig | None = None, *, with_index: bool = True,
                 train_env: dict[str, str] | None = None):
        self.home = Path(home).resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        self.names = Names()
        self.config = config or LoopConfig()
        self.bus = LocalBus(self.home / "dlq")
        emit = lambda event: self.bus.put_events([event])  # noqa: E731
        stores = {}
        for bucket in (self.names.raw_bucket, self.names.labeling_bucket, self.names.datasets_bucket,
                       self.names.models_bucket):
            on_put = self._object_created if bucket == self.names.raw_bucket else None
            stores[bucket] = FolderBlobStore(self.home / "buckets" / bucket, bucket, on_put)
        self.stores = stores
        from .hosting import LocalHosting

        self.hosting = LocalHosting(self.home / "endpoints", emit, names=self.names)
        self.registry = SqliteRegistry(self.home / "registry.sqlite", emit)
        self.labeling = LocalLabeling(self.home / "labeling", self.read_uri, self.write_uri, emit)
        self.training = LocalTraining(self.home / "training", self.write_uri, emit, self.bus.hold, self.bus.release,
                                      env=train_env)
        self.embedder = None
        self.index = None
        refresh = None
        if with_index:
            from ..index.embed import ResNetDrawingEmbedder
            from ..index.faiss_index import FaissIndex

            self.embedder = ResNetDrawingEmbedder()
            self.index = FaissIndex(self.home / "index", self.embedder.dim, embedder_name=self.embedder.name)
            refresh = indexing.make_refresh(self.embed_bytes)
        self.rt = Runtime(
            names=self.names, config=self.config,
            raw=stores[self.names.raw_bucket], labeling_store=stores[self.names.labeling_bucket],
            datasets=stores[self.names.datasets_bucket], models=stores[self.names.models_bucket],
            bus=self.bus, labeling=self.labeling, training=self.training, registry=self.registry,
            hosting=self.hosting, index=self.index,
            training_image=str(REPO / "training_image" / "train.py"),
            inference_image=str(REPO / "inference_image" / "serve.py"),
            notify=self._notify, refresh_index=refresh,
        )
        self.notifications: list[tuple[str, str]] = []
        patterns = self.names.patterns()
        for name, fn in handlers.HANDLERS.items():
            self.bus.add_rule(name, patterns[name], self._target(fn))
        if with_index:
            self.bus.add_rule(cfg.INDEX_DRAWING, patterns[cfg.INDEX_DRAWING],
                              self._target(indexing.make_index_handler(self.embed_bytes)))

    # -- wiring ---------------------------------------------------------------------------
    def _target(self, fn):
        return lambda event: fn(event, self.rt)

    def _notify(self, subject: str, message: str) -> None:
        log.warning("NOTIFY %s: %s", subject, message)
        self.notifications.append((subject, message))

    def _object_created(self, bucket: str, key: str, size: int, version: str) -> None:
        self.bus.put_events([events.object_created(bucket, key, size, version)])

    def embed_bytes(self, image: bytes):
        """Embedding float32 [D] of an encoded image (PNG/JPEG/TIFF…). Raises ValueError if undecodable."""
        from ..index.embed import decode_image

        return self.embedder.embed([decode_image(image)])[0]  # type: ignore[union-attr]

    def _store_for(self, uri: str) -> tuple[FolderBlobStore, str]:
        for store in self.stores.values():
            root = store.uri("")
            if uri.startswith(root):
                return store, uri[len(root):]
        raise KeyError(f"{uri} is in none of the local buckets")

    def read_uri(self, uri: str) -> bytes:
        store, key = self._store_for(uri)
        return store.get(key)

    def write_uri(self, uri: str, data: bytes) -> None:
        store, key = self._store_for(uri)
        store.put(key, data)

    # -- operations -----------------------------------------------------------------------
    def bootstrap(self, model_dir: Path, base_train: list[dict[str, Any]], olddomain: list[dict[str, Any]],
                  crops: dict[str, bytes]) -> str:
        """Register the base model v0 as champion (Approved → deployed) and store the base pool.

        Args:
            model_dir: v0 model artifact folder (``ocrloop.model.base.ensure_base_model``).
            base_train: replay pool samples ``{"id", "image", "text"}`` (``image`` = key in ``crops``).
            olddomain: old-domain regression samples, same shape (disjoint from ``base_train``).
            crops: PNG bytes by image key, stored in the datasets bucket.

        Returns the v0 model package ARN. Idempotent.
        """
        ds = self.rt.datasets
        for key, data in crops.items():
            if not ds.exists(key):
                ds.put(key, data)
        for name, samples in ((handlers.BASE_TRAIN, base_train), (handlers.BASE_OLDDOMAIN, olddomain)):
            if not ds.exists(name):
                ds.put(name, "".join(json.dumps(dict(s, dataset_version="base"), ensure_ascii=False) + "\n"
                                     for s in samples).encode(), if_absent=True)
        models = self.rt.models
        card = json.loads((Path(model_dir) / "model_card.json").read_text())
        version = card.get("model_version", "v0")
        key = f"{version}/model.tar.gz"
        if not models.exists(key):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                for path in sorted(Path(model_dir).iterdir()):
                    tar.add(path, arcname=path.name)
            models.put(key, buf.getvalue(), if_absent=True)
        arn = self.registry.create_model_package({
            "ModelPackageGroupName": self.names.model_package_group,
            "ModelPackageDescription": f"{version}: base model ({card.get('base_model', '')})",
            "ClientToken": version,
            "InferenceSpecification": {"Containers": [{"Image": self.rt.inference_image,
                                                       "ModelDataUrl": models.uri(key)}],
                                       "SupportedContentTypes": ["image/png", "image/jpeg", "application/json"],
                                       "SupportedResponseMIMETypes": ["application/json"]},
            "ModelApprovalStatus": "Approved",
            "CustomerMetadataProperties": {"ocrloop:version": version, "ocrloop:parent": "",
                                           "ocrloop:training-job": "", "ocrloop:dataset-versions": "[]",
                                           handlers.STAGE: "Registered"},
        })
        return arn

    def resume_serving(self) -> str | None:
        """Start the endpoint again on the Deployed model after a restart (``ocrloop up`` on an
        existing home): server processes do not outlive the runtime that started them.

        Returns the endpoint config name now serving, or None when nothing was ever deployed."""
        try:
            state = self.hosting.describe_endpoint(self.names.endpoint_name)
        except KeyError:
            state = None
        if state and state.get("EndpointStatus") == "InService":
            return state.get("EndpointConfigName")
        champ = handlers.champion(self.rt)
        if champ is None or (champ.get("CustomerMetadataProperties") or {}).get(handlers.STAGE) != "Deployed":
            return None
        name = self.hosting.deploy(self.names.endpoint_name, champ["ModelPackageArn"], handlers.model_data_url(champ),
                                   handlers.deployment_config(self.rt))
        self.bus.run_until_idle(60)
        return name

    def upload_drawing(self, drawing_id: str, png: bytes) -> str:
        """Put a drawing into the raw bucket (publishes S3 Object Created → label + index)."""
        key = f"{indexing.DRAWINGS_PREFIX}{drawing_id}.png"
        self.rt.raw.put(key, png)
        return key

    def run_until_idle(self, timeout_s: float = 3600.0) -> int:
        return self.bus.run_until_idle(timeout_s)

    def start_pump(self, interval_s: float = 0.5) -> "threading.Thread":
        """Deliver bus events in a background thread (for ``ocrloop up``: API uploads and approvals
        then flow through the loop while the server runs). Stops at ``close()``."""
        import threading

        self._stop = threading.Event()

        def pump() -> None:
            while not self._stop.is_set():
                try:
                    self.bus.run_until_idle(timeout_s=interval_s)
                except TimeoutError:
                    pass  # a training job is still running; keep delivering
                self._stop.wait(interval_s)

        thread = threading.Thread(target=pump, name="ocrloop-bus", daemon=True)
        thread.start()
        return thread

    def models_table(self) -> list[dict[str, Any]]:
        out = []
        for s in self.registry.list_model_packages(self.names.model_package_group):
            d = self.registry.describe_model_package(s["ModelPackageArn"])
            props = d.get("CustomerMetadataProperties", {})
            out.append({"version": props.get("ocrloop:version"), "package_version": d["ModelPackageVersion"],
                        "approval": d["ModelApprovalStatus"], "stage": props.get(handlers.STAGE),
                        "parent": props.get("ocrloop:parent"), "arn": d["ModelPackageArn"],
                        "model_data_url": handlers.model_data_url(d)})
        return out

    def api_services(self):
        from ..api import ApiServices

        return ApiServices(hosting=self.hosting, registry=self.registry, index=self.index, embedder=self.embedder,
                           names=self.names, drawings=self.rt.raw)

    def close(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        self.hosting.stop_all()

    def __enter__(self) -> "LocalRuntime":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["LocalRuntime", "uri_to_path"]
