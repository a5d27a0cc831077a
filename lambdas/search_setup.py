"""Lambda (container image): CloudFormation custom resource that prepares the vector index.

On Create/Update (every deploy of a new search image): put the index template, create the index
version of the image's embedder and serve it if nothing is served yet (``ocrloop.aws.search.
setup_index``), map the API role (``ApiRoleArns``) to its security role; when another version is
being served, start a rebuild on the indexer (async invoke).
On Delete: nothing (the domain's data outlives the stack only if the domain is retained).

Invoked by the CDK ``custom_resources.Provider`` framework, so it returns the resource's data and
raises on failure (the framework reports to CloudFormation).
"""

from __future__ import annotations

import json
import os
from typing import Any

import boto3

from ocrloop.aws.search import map_api_roles, setup_index
from ocrloop.aws.settings import AwsSettings

from ._common import runtime


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event["RequestType"] == "Delete":
        return {"PhysicalResourceId": event.get("PhysicalResourceId", "ocrloop-search-setup")}
    from .indexer import embedder

    rt = runtime()
    name = embedder().name
    result = setup_index(rt.index, name)
    mapping = map_api_roles(rt.index, list(event.get("ResourceProperties", {}).get("ApiRoleArns", [])))
    if result["rebuild_needed"]:
        function = os.environ[AwsSettings.env_name("indexer_function")]
        boto3.client("lambda").invoke(FunctionName=function, InvocationType="Event",
                                      Payload=json.dumps({"action": "rebuild"}).encode())
    return {"PhysicalResourceId": f"{rt.names.index_alias}-template",
            "Data": {"Index": result["index"], "Served": result["served"] or "",
                     "RebuildStarted": str(result["rebuild_needed"]).lower(), "SecurityRole": mapping["role"]}}
