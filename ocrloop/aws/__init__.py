"""AWS implementations of the ports (``ocrloop.ports``) and the AWS runtime.

=====================  ==========================================================================
``s3``                 ``S3BlobStore`` — versioned SSE-KMS bucket, conditional (If-None-Match) puts
``eventbridge``        ``EventBridgeBus`` — PutEvents in batches of ≤ 10 entries / 256 KB
``groundtruth``        ``GroundTruthLabeling`` + the custom task's pre-/post-annotation logic
``sagemaker``          ``SageMakerTraining`` (spot | warm pool), ``SageMakerRegistry``,
                       ``SageMakerHosting`` (blue/green UpdateEndpoint, autoscaling)
``opensearch``         ``OpenSearchIndex`` — k-NN (faiss HNSW) with versions behind an alias
``search``             index bootstrap/rebuild (template, versions, security role mapping)
``models``             powertools parser models of the events the functions receive
``settings``           the environment contract between the CDK app and the functions
``runtime``            ``from_env() -> Runtime``
=====================  ==========================================================================

boto3 comes with the Lambda runtime; opensearch-py only in the search/API container image (imported
lazily by ``opensearch.connect``).
"""
