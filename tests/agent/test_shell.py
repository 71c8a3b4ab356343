"""Shell sessions for real: a pty, a real OS user, resize, Ctrl-C, exit codes."""

from __future__ import annotations

import pwd
import subprocess
from pathlib import Path

import pytest

from portless.agent.datachannel import FAST_PATH_OFFER
from portless.agent.runtime import Agent
from portless.agent.sessions.shell import split_utf8
from portless.protocol.handshake import FastPath
from portless.protocol.message import FLAG_SYN, MessageType, PayloadType
from portless.protocol.payloads import TerminalSize
from tests.agent import documents
from tests.agent.relay import LoopbackServer

RUNAS_USER = "portless-runas"


def ensure_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)


def foreground_process(argv: list[str]) -> int | None:
    """Pid of a process running `argv` as the foreground job of its terminal."""
    want = "\0".join(argv).encode() + b"\0"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "cmdline").read_bytes() != want:
                continue
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[2] == fields[5]:           # pgrp == tpgid: it owns the terminal
            return int(entry.name)
    return None


async def test_shell_as_ssm_user_with_size_resize_interrupt_and_exit_code(
        server: LoopbackServer, agent: Agent) -> None:
    client = await server.start_session(documents.shell(), fast_path=FAST_PATH_OFFER,
                                        size=TerminalSize(123, 45))
    assert client.params is not None and client.params.fast_path is not None
    sid = client.side.session_id
    assert client.states[:1] == ["Connected"]
    assert client.side.opens[0].client_instance_id == agent.instance_id
    assert client.side.opens[0].client_id == ""

    await client.type("id -un; stty size; tty; echo marker-$((40+2))\r")
    await client.expect(r"marker-42")
    text = client.output.decode()
    assert "ssm-user" in text
    assert "45 123" in text
    assert "/dev/pts/" in text

    # ssm-user exists, has a home, and no sudo rights of any kind.
    entry = pwd.getpwnam("ssm-user")
    assert entry.pw_uid > 0 and Path(entry.pw_dir).is_dir()
    assert not Path("/etc/sudoers.d/ssm-agent-users").exists()
    groups = subprocess.run(["id", "-Gn", "ssm-user"], capture_output=True, text=True).stdout
    assert not {"sudo", "wheel", "admin", "root"} & set(groups.split())

    await client.send(PayloadType.SIZE, TerminalSize(91, 17).to_json())
    await client.type("stty size; echo resized-$((1+1))\r")
    await client.expect(r"17 91\s+\S*\s*resized-2")

    await client.type("sleep 31; echo slept-$((2+3))\r")
    await client.wait_for(lambda: foreground_process(["sleep", "31"]), what="sleep in front")
    await client.type(b"\x03")
    await client.type("echo interrupted-$((3*3))\r")
    await client.expect(r"interrupted-9", timeout=5)
    assert b"slept-5" not in client.output

    await client.type("exit 7\r")
    await client.wait_for(lambda: client.exit_code is not None, what="exit code")
    assert client.exit_code == 7
    done = await server.completion(sid)
    assert done.final_status == "Success"
    assert done.instance_id == agent.instance_id
    await client.wait_closed()
    assert client.states[-1] == "Terminating"
    await client.stop()


async def test_stock_client_gets_stock_framing(server: LoopbackServer, agent: Agent) -> None:
    client = await server.start_session(documents.shell(shellProfile={
        "linux": "echo PROFILE-RAN", "windows": ""}))
    assert client.params is not None and client.params.fast_path is None
    await client.expect(r"PROFILE-RAN\r\n")
    await client.type("for i in $(seq 700); do printf 'ééé€'; done; echo; echo done-$((1+1))\r")
    await client.expect(r"done-2")
    # ≤ 1024 bytes per read plus at most 3 carried bytes of an incomplete UTF-8 sequence,
    # and never a split character.
    assert max(client.output_sizes) <= 1027
    client.output.decode("utf-8")
    data = [m for m in client.messages if m.message_type == MessageType.OUTPUT_STREAM_DATA]
    assert data[0].sequence_number == 0 and data[0].flags == FLAG_SYN
    assert data[0].payload_type == PayloadType.HANDSHAKE_REQUEST
    assert all(len(m.payload_digest) == 32 and any(m.payload_digest) for m in data)
    await client.type("exit 3\r")
    done = await server.completion(client.side.session_id)
    assert done.final_status == "Success"
    assert client.exit_code is None          # a stock plugin would print it: not sent
    await client.stop()


async def test_fast_path_output_never_exceeds_the_agreed_max_payload(
        server: LoopbackServer, agent: Agent) -> None:
    small = FastPath(max_payload=1024, window=32, digest=False, smux_version=2)
    client = await server.start_session(documents.shell(), fast_path=small)
    assert client.params is not None and client.params.fast_path is not None
    assert client.params.fast_path.max_payload == 1024
    await client.type("for i in $(seq 700); do printf 'ééé€'; done; echo; echo done-$((1+1))\r")
    await client.expect(r"done-2")
    assert max(client.output_sizes) <= 1024
    client.output.decode("utf-8")
    await client.type("exit\r")
    await server.completion(client.side.session_id)
    await client.stop()


async def test_run_as_user_and_missing_user(server: LoopbackServer, agent: Agent) -> None:
    ensure_user(RUNAS_USER)
    doc = documents.shell(runAsEnabled=True, runAsDefaultUser="nobody-such-default")
    client = await server.start_session(doc, run_as_user=RUNAS_USER)
    await client.type("id -un; echo home=$HOME\r")
    await client.expect(rf"{RUNAS_USER}\s+home=/home/{RUNAS_USER}")
    await client.type("exit\r")
    assert (await server.completion(client.side.session_id)).final_status == "Success"
    await client.stop()

    client = await server.start_session(doc)          # falls back to runAsDefaultUser
    done = await server.completion(client.side.session_id)
    assert done.final_status == "Failed"
    assert done.output == ("Unable to start command: failed to start pty since RunAs user "
                           "nobody-such-default does not exist")
    await client.stop()


async def test_channel_closed_cancels_the_shell(server: LoopbackServer, agent: Agent) -> None:
    client = await server.start_session(documents.shell())
    await client.type("sleep 301\r")
    pid = await client.wait_for(lambda: foreground_process(["sleep", "301"]), what="sleep")
    sid = client.side.session_id
    await server.close_session(sid)
    done = await server.completion(sid)
    assert done.final_status == "Success"
    await client.wait_closed()
    await client.wait_for(lambda: not Path(f"/proc/{pid}").exists(), what="sleep killed")
    await client.stop()


async def test_interactive_commands(server: LoopbackServer, agent: Agent) -> None:
    client = await server.start_session(
        documents.interactive_commands(),
        parameters={"command": "echo from-commands-$((6*7)); tty; exit 4"},
        fast_path=FAST_PATH_OFFER)
    await client.wait_for(lambda: client.exit_code is not None, what="exit code")
    assert client.exit_code == 4
    assert b"from-commands-42" in client.output
    assert b"/dev/pts/" in client.output
    assert (await server.completion(client.side.session_id)).final_status == "Success"
    await client.stop()


@pytest.mark.parametrize(("data", "complete", "rest"), [
    (b"abc", b"abc", b""),
    ("aé".encode(), "aé".encode(), b""),
    ("aé".encode()[:-1], b"a", "é".encode()[:1]),
    ("x€".encode()[:-1], b"x", "€".encode()[:2]),
    ("x😀".encode()[:-1], b"x", "😀".encode()[:3]),
    (b"\x80\x80", b"\x80\x80", b""),
])
def test_split_utf8(data: bytes, complete: bytes, rest: bytes) -> None:
    assert split_utf8(data) == (complete, rest)
