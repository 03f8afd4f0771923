"""tlserve.processes: free ports, the bounded poll, starting `tlserve` and stopping a child gracefully."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from tlserve.processes import ProcessExited, free_ports, start_tlserve, stop_process, wait_until


def test_free_ports_are_distinct_and_bindable():
    import socket

    ports = free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("", port))


def test_wait_until_returns_the_first_truthy_answer():
    calls = itertools.count(1)
    assert (
        wait_until(lambda: next(calls) >= 3 and "ready", timeout_s=5, what="three calls", interval_s=0.001) == "ready"
    )


def test_wait_until_times_out_naming_what_and_the_details():
    with pytest.raises(TimeoutError, match=r"(?s)the impossible: not within 0s.*last seen: nothing"):
        wait_until(
            lambda: False, timeout_s=0.05, what="the impossible", interval_s=0.01, details=lambda: "last seen: nothing"
        )


def test_wait_until_stops_as_soon_as_the_process_exits():
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(ProcessExited, match="exited with code 3 before listening") as caught:
        wait_until(lambda: False, timeout_s=60, what="listening", process=process)
    assert caught.value.returncode == 3


def test_stop_process_kills_a_child_that_ignores_sigterm():
    ignore_sigterm = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"
    )
    process = subprocess.Popen([sys.executable, "-c", ignore_sigterm], stdout=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.readline()  # the handler is installed
    assert stop_process(process, timeout_s=0.2) == -9
    process.stdout.close()


def test_stop_process_returns_the_exit_code_of_a_graceful_stop():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert stop_process(process) == -15


def test_start_tlserve_runs_this_interpreters_tlserve():
    process = start_tlserve(["--version"], stdout=subprocess.PIPE)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert output.decode().startswith("tlserve ")
