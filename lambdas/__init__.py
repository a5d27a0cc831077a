"""Lambda entry points (thin): build the AWS ``Runtime`` once per container, validate the event,
guard it with powertools idempotency, call the core handler in ``ocrloop.handlers``.

Zip functions (loop handlers, Ground Truth task, autoscaling) import only the standard library, boto3
(in the Lambda runtime) and the dependency layer built from ``lambdas/requirements.txt``
(powertools + pydantic + Pillow). The API and indexer functions are container images
(``lambdas/Dockerfile``) because embeddings need numpy/onnxruntime.
"""
