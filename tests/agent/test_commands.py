"""NonInteractiveCommands: direct execution, stdout/stderr/exit code, Ctrl-C as SIGINT."""

from __future__ import annotations

import asyncio
import pwd

import pytest

from portless.agent.datachannel import FAST_PATH_OFFER
from portless.agent.runtime import Agent
from portless.agent.sessions.runas import RunAsError, resolve_run_as
from tests.agent import documents
from tests.agent.relay import LoopbackServer

SCRIPT = "sh -c 'echo to-stdout; echo to-stderr >&2; id -un; exit 7'"


async def test_portless_client_gets_separate_streams_and_exit_code(
        server: LoopbackServer, agent: Agent) -> None:
    client = await server.start_session(documents.non_interactive_commands(),
                                        parameters={"command": SCRIPT},
                                        fast_path=FAST_PATH_OFFER)
    assert client.params is not None and client.params.session_type == "NonInteractiveCommands"
    await client.wait_for(lambda: client.exit_code is not None, what="exit code")
    assert client.exit_code == 7
    assert client.output == b"to-stdout\nssm-user\n"
    assert client.stderr == b"to-stderr\n"
    done = await server.completion(client.side.session_id)
    assert done.final_status == "Success"
    await client.wait_closed()
    assert client.states[-1] == "Terminating"
    await client.stop()


async def test_stock_client_default_mode_gets_one_combined_output(
        server: LoopbackServer, agent: Agent) -> None:
    client = await server.start_session(documents.non_interactive_commands(),
                                        parameters={"command": SCRIPT})
    done = await server.completion(client.side.session_id)
    assert done.final_status == "Success"
    assert b"to-stdout" in client.output and b"to-stderr" in client.output
    assert client.stderr == b""
    assert client.exit_code is None
    await client.stop()


async def test_stock_client_separate_output_stream_with_prefixes(
        server: LoopbackServer, agent: Agent) -> None:
    doc = documents.non_interactive_commands(separateOutputStream=True,
                                             stdOutSeparatorPrefix="OUT:",
                                             stdErrSeparatorPrefix="ERR:")
    client = await server.start_session(doc, parameters={"command": SCRIPT})
    await client.wait_for(lambda: client.exit_code is not None, what="exit code")
    assert client.exit_code == 7
    assert client.output.startswith(b"OUT:to-stdout\n")
    assert client.stderr == b"ERR:to-stderr\n"
    await client.stop()


async def test_ctrl_c_interrupts_the_command(server: LoopbackServer, agent: Agent) -> None:
    client = await server.start_session(documents.non_interactive_commands(),
                                        parameters={"command": "sleep 30"},
                                        fast_path=FAST_PATH_OFFER)
    await asyncio.sleep(0.3)
    await client.type(b"\x03")
    await client.wait_for(lambda: client.exit_code is not None, timeout=5, what="exit code")
    assert client.exit_code == 130            # killed by SIGINT
    await client.stop()


async def test_missing_program_fails_with_stderr_text(server: LoopbackServer,
                                                      agent: Agent) -> None:
    client = await server.start_session(documents.non_interactive_commands(),
                                        parameters={"command": "no-such-program-xyz --flag"})
    done = await server.completion(client.side.session_id)
    assert done.final_status == "Failed"
    assert "no-such-program-xyz" in done.output
    assert b"no-such-program-xyz" in client.stderr
    await client.stop()


async def test_run_as_user_gets_an_allowlisted_environment(
        server: LoopbackServer, agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTLESS_TEST_SECRET", "s3cret-value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cret-key")
    monkeypatch.setenv("LC_TIME", "C")
    client = await server.start_session(documents.non_interactive_commands(),
                                        parameters={"command": "env"},
                                        fast_path=FAST_PATH_OFFER)
    await client.wait_for(lambda: client.exit_code is not None, what="exit code")
    assert client.exit_code == 0
    env = dict(line.split("=", 1) for line in client.output.decode().splitlines()
               if "=" in line)
    assert b"s3cret" not in client.output
    assert "PORTLESS_TEST_SECRET" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    entry = pwd.getpwnam("ssm-user")
    assert env["USER"] == env["LOGNAME"] == "ssm-user"
    assert env["HOME"] == entry.pw_dir
    assert env["SHELL"] == (entry.pw_shell or "/bin/sh")
    assert env["LC_TIME"] == "C"
    assert "PATH" in env and "TERM" in env
    await client.stop()


def test_root_is_never_the_default_run_as_user() -> None:
    with pytest.raises(RunAsError, match="must not be root"):
        resolve_run_as(run_as_enabled=False, run_as_user="", default_user="", ssm_user="root")
