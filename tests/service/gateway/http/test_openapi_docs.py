"""Issue 9.5: /docs works offline, the OpenAPI document validates, every $ref resolves, content types are declared."""

from __future__ import annotations

import re
from typing import Any

import pytest
from openapi_spec_validator import validate


@pytest.fixture
def document(client) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in refs(item)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), ref
        assert part in node, f"{ref} does not resolve at {part!r}"
        node = node[part]
    return node


def test_openapi_document_validates(document):
    validate(document)  # openapi-spec-validator: OpenAPI 3.1 schema and semantics


def test_every_ref_resolves_from_the_document_root(document):
    # The JSON request schema of /predict had a `$ref` to `#/$defs/B64Image`, which does not exist at the root.
    found = refs(document)
    assert found, "expected some component references"
    for ref in found:
        resolve(document, ref)
    assert "$defs" not in str(document)


def test_predict_json_schema_shows_the_b64_instances_inline(document):
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["instances"]["items"]["properties"]["b64"]["type"] == "string"


def test_every_response_declares_its_content_type(client, document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                assert response.get("content"), f"{method.upper()} {path} {status} declares no content type"
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == [client.get("/metrics").headers["content-type"]]
    assert next(iter(metrics)).startswith("text/plain; version=")


def test_docs_page_loads_only_assets_the_gateway_serves(client):
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert urls, page.text
    for url in urls:
        assert url.startswith("/"), f"/docs loads {url} from elsewhere (blank offline)"
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    assert "http://" not in page.text
    assert "https://" not in page.text
    assert '"validatorUrl": null' in page.text  # no badge fetched from validator.swagger.io


def test_redoc_is_not_offered_with_cdn_assets(client):
    assert client.get("/redoc").status_code == 404


def test_rest_predict_documents_classes_scores_and_probabilities_order(document):
    operation = document["paths"]["/v1/models/{name}:predict"]["post"]
    assert "label-index order" in operation["description"]
    assert "best first" in operation["description"]
    prediction = operation["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["predictions"]
    fields = prediction["items"]["properties"]
    assert "label-index order" in fields["probabilities"]["description"]
    assert "best first" in fields["classes"]["description"]
