"""`tlserve model-server` flags → ModelServerSettings, in-process: env fallback, TF Serving spellings, bad values."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from service.modelserver.cli import settings_from_args, start_server
from service.modelserver.settings import ModelServerSettings
from tlserve.cli import build_parser, main
from tlserve.console import CommandError

DOCS = Path(__file__).resolve().parents[3] / "docs" / "model-server.md"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No TLSERVE_MODEL_SERVER_* / TLSERVE_MODELS_DIR from the developer's shell leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("TLSERVE_MODEL_SERVER_") or name == "TLSERVE_MODELS_DIR":
            monkeypatch.delenv(name)


def settings_for(*flags: str) -> ModelServerSettings:
    return settings_from_args(build_parser().parse_args(["model-server", *flags]))


def test_without_flags_or_env_the_settings_defaults_apply():
    assert settings_for() == ModelServerSettings()
    assert settings_for().port == 8600


def test_env_port_applies_when_no_port_flag_is_given(monkeypatch):
    monkeypatch.setenv("TLSERVE_MODEL_SERVER_PORT", "0")
    assert settings_for().port == 0


def test_env_enables_batching_and_sets_poll_interval(monkeypatch):
    monkeypatch.setenv("TLSERVE_MODEL_SERVER_ENABLE_BATCHING", "true")
    monkeypatch.setenv("TLSERVE_MODEL_SERVER_FILE_SYSTEM_POLL_WAIT_SECONDS", "7.5")
    monkeypatch.setenv("TLSERVE_MODEL_SERVER_ENABLE_MODEL_WARMUP", "false")
    settings = settings_for()
    assert settings.enable_batching is True
    assert settings.file_system_poll_wait_seconds == 7.5
    assert settings.enable_model_warmup is False


def test_env_models_dir_applies_when_no_models_dir_flag_is_given(monkeypatch, tmp_path):
    monkeypatch.setenv("TLSERVE_MODELS_DIR", str(tmp_path))
    assert settings_for().models_dir == tmp_path
    assert settings_for("--models-dir", "elsewhere").models_dir == Path("elsewhere")


def test_a_given_flag_wins_over_the_env(monkeypatch):
    monkeypatch.setenv("TLSERVE_MODEL_SERVER_PORT", "0")
    monkeypatch.setenv("TLSERVE_MODEL_SERVER_ENABLE_BATCHING", "true")
    settings = settings_for("--port", "9001", "--enable_batching=false")
    assert settings.port == 9001
    assert settings.enable_batching is False


def test_env_model_name_and_base_path_select_one_model(monkeypatch, tmp_path):
    monkeypatch.setenv("TLSERVE_MODEL_SERVER_MODEL_NAME", "demo")
    monkeypatch.setenv("TLSERVE_MODEL_SERVER_MODEL_BASE_PATH", str(tmp_path))
    settings = settings_for()
    assert (settings.model_name, settings.model_base_path) == ("demo", tmp_path)


# (TF Serving's spelling, ours) for every flag docs/model-server.md lists with a TF Serving name; none is a default.
TF_SERVING_SPELLINGS = [
    (["--model_config_file=/srv/models.config"], ["--model-config-file", "/srv/models.config"]),
    (["--model_name=x", "--model_base_path=/srv/x"], ["--model-name", "x", "--model-base-path", "/srv/x"]),
    (["--port=8500"], ["--port", "8500"]),
    (["--rest_api_port=8501"], ["--rest-api-port", "8501"]),
    (["--file_system_poll_wait_seconds=3"], ["--file-system-poll-wait-seconds", "3"]),
    (["--model_config_file_poll_wait_seconds=30"], ["--model-config-file-poll-wait-seconds", "30"]),
    (["--enable_batching"], ["--enable-batching"]),
    (["--enable_batching=true"], ["--enable-batching"]),
    (["--batching_parameters_file=/srv/batching.config"], ["--batching-parameters-file", "/srv/batching.config"]),
    (["--enable_model_warmup=false"], ["--no-model-warmup"]),
    (["--allow_version_labels_for_unavailable_models"], ["--allow-version-labels-for-unavailable-models"]),
    (["--max_num_load_retries=2"], ["--max-num-load-retries", "2"]),
    (["--load_retry_interval_micros=1000000"], ["--load-retry-interval-micros", "1000000"]),
    (["--enable_grpc_healthcheck_service"], ["--enable-grpc-healthcheck-service"]),
    (["--grpc_max_threads=4"], ["--grpc-max-threads", "4"]),
]


@pytest.mark.parametrize(("tf_serving", "ours"), TF_SERVING_SPELLINGS, ids=lambda flags: " ".join(flags))
def test_tf_serving_flag_spelling_gives_the_same_settings_as_ours(tf_serving, ours):
    assert settings_for(*tf_serving) == settings_for(*ours)
    assert settings_for(*ours) != ModelServerSettings()  # the flag changed something


def test_a_tf_serving_command_line_parses_as_written():
    settings = settings_for(
        "--model_config_file=/srv/models.config",
        "--model_config_file_poll_wait_seconds=60",
        "--file_system_poll_wait_seconds=1",
        "--enable_batching",
        "--batching_parameters_file=/srv/batching.config",
        "--rest_api_port=8501",
        "--port=8500",
        "--load_retry_interval_micros=500000",
    )
    assert settings.model_config_file == Path("/srv/models.config")
    assert settings.model_config_file_poll_wait_seconds == 60
    assert settings.enable_batching is True
    assert settings.batching_parameters_file == Path("/srv/batching.config")
    assert (settings.port, settings.rest_api_port) == (8500, 8501)
    assert settings.load_retry_interval_s == 0.5


def test_every_tf_serving_spelling_in_the_docs_is_tested_here():
    flag_rows = [line for line in DOCS.read_text().splitlines() if line.startswith("| `--")]
    documented = {flag for row in flag_rows for flag in re.findall(r"\[`(--[a-z_]+)", row)}
    tested = {flag.split("=")[0] for tf_serving, _ in TF_SERVING_SPELLINGS for flag in tf_serving}
    assert documented
    assert documented <= tested


def test_negative_port_flag_is_a_one_line_usage_error(capsys):
    assert main(["model-server", "--port", "-1"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.splitlines() == ["tlserve: error: --port: Input should be greater than or equal to 0"]


def test_bad_env_value_names_the_env_variable(monkeypatch):
    monkeypatch.setenv("TLSERVE_MODEL_SERVER_PORT", "-5")
    with pytest.raises(CommandError, match=r"^TLSERVE_MODEL_SERVER_PORT: Input should be greater"):
        settings_for()


def test_bad_flag_value_names_the_flag_it_came_from():
    with pytest.raises(CommandError, match=r"^--load-retry-interval-micros: "):
        settings_for("--load_retry_interval_micros=-1")


def test_bad_boolean_value_is_an_argparse_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["model-server", "--enable_batching=maybe"])
    assert exit_info.value.code == 2
    assert "expected true or false, got 'maybe'" in capsys.readouterr().err


def test_model_name_without_base_path_is_refused_also_from_env(monkeypatch):
    with pytest.raises(CommandError, match="go together"):
        settings_for("--model_name=x")
    monkeypatch.setenv("TLSERVE_MODEL_SERVER_MODEL_NAME", "x")
    with pytest.raises(CommandError, match="go together"):
        settings_for()


@pytest.mark.parametrize(
    ("file_name", "text", "message"),
    [
        ("models.config", "model_config_list { config { nme: 'x' } }", "cannot parse model config"),
        ("models.config", None, "cannot read model config file"),
    ],
)
def test_bad_model_config_file_fails_start_with_one_line(tmp_path, file_name, text, message):
    config_file = tmp_path / file_name
    if text is not None:
        config_file.write_text(text)
    settings = ModelServerSettings(model_config_file=config_file, host="127.0.0.1", port=0)
    with pytest.raises(CommandError, match=message) as error:
        start_server(settings)
    assert "\n" not in str(error.value)


def test_missing_batching_parameters_file_fails_start_with_one_line(tmp_path):
    settings = ModelServerSettings(
        models_dir=tmp_path, batching_parameters_file=tmp_path / "missing.config", host="127.0.0.1", port=0
    )
    with pytest.raises(CommandError, match="cannot read batching parameters file") as error:
        start_server(settings)
    assert "\n" not in str(error.value)
