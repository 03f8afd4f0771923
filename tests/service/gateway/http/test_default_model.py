"""Issue 9.3: the default model and /readyz follow what the upstream serves, not a hard-wired `demo`."""

from __future__ import annotations

from tests.conftest import random_images


def predict(client, query: str = ""):
    return client.post(f"/predict{query}", files=[("files", ("a.png", random_images(1)[0], "image/png"))])


def write_config(models_dir, *names: str) -> None:
    entries = "".join(
        f'  config {{\n    name: "{name}"  # a comment: name: "not-a-model"\n    base_path: "{name}"\n'
        f'    model_platform: "tensorflow"\n    version_labels {{ key: "stable" value: 1 }}\n  }}\n'
        for name in names
    )
    (models_dir / "models.config").write_text(f"model_config_list {{\n{entries}}}\n")


def test_own_images_path_one_model_named_pets_is_ready_and_the_default(make_client, fake_upstream, tmp_path):
    # README: `tlserve train ~/imgs --name pets` then `tlserve serve` — no model called demo anywhere.
    fake_upstream.models.clear()
    fake_upstream.models["pets"] = {1: "stable"}
    write_config(tmp_path, "pets")
    client = make_client(default_model=None, repository=tmp_path)
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["models"] == {"pets": "AVAILABLE"}
    answer = predict(client)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "pets"


def test_repository_without_config_counts_model_folders(make_client, fake_upstream, tmp_path):
    fake_upstream.models.clear()
    fake_upstream.models["pets"] = {1: None}
    (tmp_path / "pets" / "1").mkdir(parents=True)
    (tmp_path / "pets" / "staging-tmp").mkdir()
    (tmp_path / "empty").mkdir()
    client = make_client(default_model=None, repository=tmp_path)
    assert client.get("/readyz").status_code == 200
    assert predict(client).json()["model"] == "pets"


def test_several_models_without_default_is_a_400_naming_them(make_client, fake_upstream, tmp_path):
    fake_upstream.models["pets"] = {1: None}
    write_config(tmp_path, "demo", "pets")
    client = make_client(default_model=None, repository=tmp_path)
    answer = predict(client)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "several models are served (demo, pets); name one with model="
    assert predict(client, "?model=pets").json()["model"] == "pets"
    assert client.get("/readyz").status_code == 200


def test_readyz_names_the_served_models_without_an_available_version(make_client, fake_upstream, tmp_path):
    write_config(tmp_path, "demo", "pets")  # pets is configured but the upstream has not loaded it
    ready = make_client(default_model=None, repository=tmp_path).get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["not_ready"] == ["pets"]
    assert body["models"]["demo"] == "AVAILABLE"
    assert "pets" in body["reason"]


def test_served_models_setting_for_an_upstream_the_gateway_cannot_read(make_client, fake_upstream):
    fake_upstream.models["pets"] = {1: None}
    client = make_client(default_model=None, served_models="demo,pets")
    assert client.get("/readyz").json()["models"] == {"demo": "AVAILABLE", "pets": "AVAILABLE"}
    assert predict(client).status_code == 400


def test_nothing_known_is_not_ready_and_says_which_setting_to_give(make_client):
    client = make_client(default_model=None)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "--default-model" in ready.json()["reason"]
    answer = predict(client)
    assert answer.status_code == 400
    assert "--default-model" in answer.json()["error"]["message"]


def test_an_empty_repository_is_not_ready(make_client, tmp_path):
    client = make_client(default_model=None, repository=tmp_path)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "no model is served yet" in ready.json()["reason"]


def test_explicit_default_model_wins(make_client, fake_upstream):
    fake_upstream.models["pets"] = {1: None}
    client = make_client(default_model="pets", served_models="demo,pets")
    assert predict(client).json()["model"] == "pets"


def test_serve_gives_the_embedded_models_dir_as_repository(tmp_path):
    import argparse

    from service.gateway import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    embedded = parser.parse_args(["serve", "--models-dir", str(tmp_path)])
    assert cli.gateway_settings(embedded, "127.0.0.1:8600").repository == tmp_path
    upstream = parser.parse_args(["serve", "--upstream", "tfs:8500", "--served-models", "a,b"])
    settings = cli.gateway_settings(upstream, "tfs:8500")
    assert settings.repository is None
    assert settings.served_models == ("a", "b")
    assert settings.default_model is None
