"""The retrain CronJob's command line is one the real `tlserve` parser accepts, with the meaning intended."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.conftest import OVERLAYS, find, load_documents


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_retrain_cronjob_args_parse_as_a_promoting_retrain_against_tf_serving(
    rendered: dict[str, Path], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tlserve.cli import build_parser
    from training import cli_models

    cronjob = find(load_documents(rendered[overlay]), "CronJob", "retrain-and-promote")
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = next(item for item in pod["containers"] if item["name"] == "retrain")
    for item in container.get("env", []):
        monkeypatch.setenv(item["name"], item["value"])  # argparse defaults read the container's environment

    args = build_parser().parse_args(container["args"])  # exits (SystemExit 2) on any flag tlserve does not know

    assert args.handler is cli_models._retrain
    assert (args.data, args.name, args.models_dir) == (Path("/data"), "demo", Path("/models"))
    assert args.promote_if_better is True
    assert args.keep == 5
    assert (args.offline, args.server) == (False, "tfserving:8500")
