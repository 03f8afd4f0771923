"""`tlserve serve` exposes every gateway Settings field as a flag: flag > TLSERVE_* env var > default, bad = exit 2."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from service.gateway import cli as gateway_cli
from service.gateway.settings import Settings
from service.gateway.settings_cli import env_name, flag_name
from tlserve.cli import build_parser, main

UPSTREAM = "127.0.0.1:9"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("TLSERVE_"):
            monkeypatch.delenv(name)


def serve_parser() -> argparse.ArgumentParser:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices["serve"]


def settings_from(*argv: str) -> Settings:
    args = build_parser().parse_args(["serve", *argv])
    return gateway_cli.gateway_settings(args, UPSTREAM)


def test_every_settings_field_has_a_serve_flag():
    options = {option for action in serve_parser()._actions for option in action.option_strings}
    missing = [flag_name(name) for name in Settings.model_fields if flag_name(name) not in options]
    assert missing == []


def test_settings_flags_are_grouped_and_their_help_names_the_env_var_and_default():
    help_text = " ".join(serve_parser().format_help().split())
    assert "gateway settings:" in help_text
    assert "--max-batch-size INT env TLSERVE_MAX_BATCH_SIZE; default 32" in help_text
    assert "--batching-enabled, --no-batching-enabled env TLSERVE_BATCHING_ENABLED; default on" in help_text
    assert "share of unpinned requests sent to canary_label; env TLSERVE_CANARY_SHARE; default 0.0" in help_text


def test_without_flags_or_env_the_settings_defaults_apply():
    # Without --upstream the embedded model server loads --models-dir, so that repository names the served models.
    assert settings_from() == Settings(upstream=UPSTREAM, repository=Path("models"))


def test_flags_set_every_kind_of_field():
    settings = settings_from(
        "--request-timeout-s",
        "2.5",
        "--max-batch-size",
        "7",
        "--no-batching-enabled",
        "--api-keys",
        "a, b",
        "--canary-share",
        "0.1",
        "--default-label",
        "",
        "--http-port",
        "8081",
    )
    assert settings.request_timeout_s == 2.5
    assert settings.max_batch_size == 7
    assert settings.batching_enabled is False
    assert settings.api_keys == ("a", "b")
    assert settings.canary_share == 0.1
    assert settings.default_label == ""
    assert settings.http_port == 8081


def test_env_var_applies_without_a_flag(monkeypatch):
    monkeypatch.setenv(env_name(Settings, "max_batch_size"), "5")
    monkeypatch.setenv("TLSERVE_BATCHING_ENABLED", "false")
    monkeypatch.setenv("TLSERVE_API_KEYS", "k1,k2")
    settings = settings_from()
    assert (settings.max_batch_size, settings.batching_enabled, settings.api_keys) == (5, False, ("k1", "k2"))


def test_flag_overrides_the_env_var(monkeypatch):
    monkeypatch.setenv("TLSERVE_MAX_BATCH_SIZE", "5")
    monkeypatch.setenv("TLSERVE_BATCHING_ENABLED", "false")
    monkeypatch.setenv("TLSERVE_GRPC_PORT", "9500")
    settings = settings_from("--max-batch-size", "9", "--batching-enabled", "--grpc-port", "9501")
    assert (settings.max_batch_size, settings.batching_enabled, settings.grpc_port) == (9, True, 9501)


def test_serve_runs_the_gateway_with_flag_settings(monkeypatch, tmp_path):
    started: list[Settings] = []
    monkeypatch.setattr(gateway_cli, "_check_ports_free", lambda ports: None)
    monkeypatch.setattr(gateway_cli, "_run_gateway", started.append)
    monkeypatch.setenv("TLSERVE_CANARY_SHARE", "0.5")
    assert main(["serve", "--upstream", UPSTREAM, "--canary-share", "0.25", "--default-label", "prod"]) == 0
    (settings,) = started
    assert (settings.upstream, settings.canary_share, settings.default_label) == (UPSTREAM, 0.25, "prod")


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--canary-share", "2"], "--canary-share 2: input should be less than or equal to 1"),
        (["--max-batch-size", "0"], "--max-batch-size 0: input should be greater than 0"),
        (
            ["--request-timeout-s", "soon"],
            "--request-timeout-s soon: input should be a valid number, unable to parse string as a number",
        ),
        (["--default-label", "a-b"], "--default-label a-b: string should match pattern '^[a-zA-Z0-9_]*$'"),
    ],
)
def test_bad_flag_value_exits_2_with_one_line_naming_the_flag_and_rule(capsys, tmp_path, argv, line):
    assert main(["serve", "--models-dir", str(tmp_path), *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"tlserve: error: {line}"]
    assert captured.out == ""


def test_bad_env_value_exits_2_naming_the_env_var(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TLSERVE_MAX_BATCH_SIZE", "-1")
    assert main(["serve", "--models-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "tlserve: error: TLSERVE_MAX_BATCH_SIZE=-1: input should be greater than 0"
    ]


def test_bad_settings_are_reported_before_a_missing_models_dir(capsys, tmp_path):
    assert main(["serve", "--models-dir", str(tmp_path / "nowhere"), "--max-batch-size", "0"]) == 2
    assert "--max-batch-size 0" in capsys.readouterr().err


def test_hand_written_port_flags_still_reject_port_0_before_any_settings(capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--http-port", "0"])
    assert exited.value.code == 2
    assert "argument --http-port: must be at least 1: 0" in capsys.readouterr().err
