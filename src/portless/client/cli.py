"""`portless <verb>`: the client's command line.

`start-session` takes the same arguments as `aws ssm start-session`; the short verbs
(shell, exec, forward, ssh-proxy, ssh-config, nodes, sessions, terminate) are built on
the same calls.  Every verb takes --endpoint-url, --profile and --region (plus the AWS
CLI's --ca-bundle and --no-verify-ssl); errors are one line on stderr, never a traceback
(PORTLESS_DEBUG=1 in the environment shows debug logs and tracebacks instead).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from portless.client.config import ClientOptions, ConfigError, Resolved
from portless.client.params import ParameterError, parse_parameters

PROG = "portless"
API_ERROR_STATUS = 255
"""Exit status for API and configuration errors, as the AWS CLI uses."""

DOC_SHELL = "SSM-SessionManagerRunShell"
DOC_SSH = "AWS-StartSSHSession"
DOC_FORWARD = "AWS-StartPortForwardingSession"
DOC_FORWARD_REMOTE = "AWS-StartPortForwardingSessionToRemoteHost"
DOC_COMMAND = "AWS-StartNonInteractiveCommand"

SSH_CONFIG = """\
# SSH over Session Manager, through portless
Host i-* mi-*
  ProxyCommand {command} ssh-proxy %h %p
"""


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_globals(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    g = p.add_argument_group("connection options")
    g.add_argument("--endpoint-url", default=default, metavar="URL",
                   help="SSM API endpoint (default: AWS_ENDPOINT_URL_SSM, AWS_ENDPOINT_URL, "
                        "the profile's endpoint_url, else AWS)")
    g.add_argument("--profile", default=default, help="named profile from the AWS config files")
    g.add_argument("--region", default=default, help="region (default: the AWS chain)")
    g.add_argument("--ca-bundle", default=default, metavar="PATH",
                   help="CA bundle for verifying TLS (default: AWS_CA_BUNDLE)")
    g.add_argument("--no-verify-ssl", action="store_true",
                   default=argparse.SUPPRESS if suppress else False,
                   help="do not verify TLS certificates")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Session Manager client for portless and AWS.")
    _add_globals(parser, suppress=False)
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True

    def verb(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        _add_globals(p, suppress=True)
        return p

    p = verb("start-session", "start a session, like `aws ssm start-session`")
    p.add_argument("--target", required=True, help="managed node id (i-…, mi-…)")
    p.add_argument("--document-name", help="session document (default: a shell)")
    p.add_argument("--parameters", help="document parameters: shorthand, JSON or file://")
    p.add_argument("--reason", help="reason for the session")

    p = verb("shell", "open an interactive shell on a node")
    p.add_argument("target", help="managed node id")
    p.add_argument("--reason")

    p = verb("exec", "run a command on a node; its exit status becomes ours")
    p.add_argument("target", help="managed node id")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    p.add_argument("--reason")

    p = verb("forward", "forward a local port to HOST:PORT as seen from the node")
    p.add_argument("spec", metavar="[LOCAL:]HOST:PORT")
    p.add_argument("--target", required=True, help="managed node id")
    p.add_argument("--reason")

    p = verb("ssh-proxy", "ProxyCommand for ssh: stdin/stdout to the node's SSH port")
    p.add_argument("host", help="managed node id (ssh's %%h)")
    p.add_argument("port", nargs="?", default="22", help="port on the node (ssh's %%p)")

    p = verb("ssh-config", "print an ~/.ssh/config block that uses portless")
    p.add_argument("--command", default=PROG, help=argparse.SUPPRESS)

    verb("nodes", "list managed nodes")

    p = verb("sessions", "list active sessions (--history: ended ones)")
    p.add_argument("--history", action="store_true")

    p = verb("terminate", "terminate a session")
    p.add_argument("session_id", metavar="SESSION_ID")
    return parser


def options_from(args: argparse.Namespace) -> ClientOptions:
    return ClientOptions(endpoint_url=args.endpoint_url, profile=args.profile,
                         region=args.region, ca_bundle=args.ca_bundle,
                         verify_ssl=not args.no_verify_ssl)


# ------------------------------------------------------------------- parsing


_FORWARD_SPEC = re.compile(r"^(?:(\d+):)?(\[[^\]]+\]|[^:\[\]]+):(\d+)$")


def parse_forward_spec(spec: str) -> tuple[int, str, int]:
    """`[LOCAL:]HOST:PORT` → (local port, host, port); an IPv6 host goes in brackets."""
    m = _FORWARD_SPEC.match(spec.strip())
    if not m:
        raise UsageError(f"expected [LOCAL:]HOST:PORT, got {spec!r}")
    local, host, remote = m.group(1) or "0", m.group(2), m.group(3)
    if host.startswith("["):
        host = host[1:-1]
    for value, what in ((local, "local port"), (remote, "port")):
        if int(value) > 65535:
            raise UsageError(f"invalid {what} {value} in {spec!r}")
    if int(remote) == 0:
        raise UsageError(f"invalid port 0 in {spec!r}")
    return int(local), host, int(remote)


def forward_request(target: str, spec: str) -> dict[str, Any]:
    """localhost → AWS-StartPortForwardingSession, any other host → …ToRemoteHost."""
    local, host, remote = parse_forward_spec(spec)
    params = {"portNumber": [str(remote)], "localPortNumber": [str(local)]}
    if host == "localhost":
        return {"Target": target, "DocumentName": DOC_FORWARD, "Parameters": params}
    return {"Target": target, "DocumentName": DOC_FORWARD_REMOTE,
            "Parameters": {"host": [host], **params}}


def exec_request(target: str, command: Sequence[str]) -> dict[str, Any]:
    """AWS-StartNonInteractiveCommand with `command` built from the words after `--`.

    The agent splits the command line like a shell and runs it without one, so several
    words are quoted with shlex.join (each arrives as one argument); a single word is
    taken as a command line as it stands (`portless exec T -- "ls -la /tmp"`).  For
    pipes and the like, run a shell: `portless exec T -- sh -c 'a | b'`.
    """
    words = list(command)
    if words and words[0] == "--":
        words = words[1:]
    if not words:
        raise UsageError("exec needs a command: portless exec TARGET -- COMMAND [ARG...]")
    line = words[0] if len(words) == 1 else shlex.join(words)
    return {"Target": target, "DocumentName": DOC_COMMAND, "Parameters": {"command": [line]}}


def start_session_request(args: argparse.Namespace) -> dict[str, Any]:
    request: dict[str, Any] = {"Target": args.target}
    if args.document_name:
        request["DocumentName"] = args.document_name
    if args.reason:
        request["Reason"] = args.reason
    if args.parameters is not None:
        request["Parameters"] = parse_parameters(args.parameters)
    return request


def ssh_config_text(options: ClientOptions, command: str = PROG) -> str:
    """The seeds' `Host i-* mi-*` block, with portless as the ProxyCommand."""
    words = [command]
    if options.profile:
        words += ["--profile", options.profile]
    if options.region:
        words += ["--region", options.region]
    if options.endpoint_url:
        words += ["--endpoint-url", options.endpoint_url]
    if options.ca_bundle:
        words += ["--ca-bundle", options.ca_bundle]
    if not options.verify_ssl:
        words += ["--no-verify-ssl"]
    return SSH_CONFIG.format(command=" ".join(shlex.quote(w) for w in words))


# ------------------------------------------------------------------- verbs


def _err(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


def start_and_run(resolved: Resolved, request: dict[str, Any], *, mode: str) -> int:
    """StartSession, then run the session in `mode` (see session.RunMode)."""
    from portless.client.api import BotoSessionApi, kms_data_key_provider
    from portless.client.session import SessionInfo, run_mode

    client = resolved.ssm()
    resp = client.start_session(**request)
    info = SessionInfo(session_id=resp["SessionId"], token=resp["TokenValue"],
                       stream_url=resp["StreamUrl"], target=request["Target"])
    api = BotoSessionApi(resolved.ssm)
    kms = kms_data_key_provider(resolved.kms, info.session_id, info.target)
    return run_mode(info, api, resolved.ssl_context(), mode, data_key_provider=kms)


def cmd_start_session(args: argparse.Namespace, resolved: Resolved) -> int:
    return start_and_run(resolved, start_session_request(args), mode="start-session")


def cmd_shell(args: argparse.Namespace, resolved: Resolved) -> int:
    request: dict[str, Any] = {"Target": args.target}
    if args.reason:
        request["Reason"] = args.reason
    return start_and_run(resolved, request, mode="shell")


def cmd_exec(args: argparse.Namespace, resolved: Resolved) -> int:
    request = exec_request(args.target, args.command)
    if args.reason:
        request["Reason"] = args.reason
    return start_and_run(resolved, request, mode="exec")


def cmd_forward(args: argparse.Namespace, resolved: Resolved) -> int:
    request = forward_request(args.target, args.spec)
    if args.reason:
        request["Reason"] = args.reason
    return start_and_run(resolved, request, mode="forward")


def cmd_ssh_proxy(args: argparse.Namespace, resolved: Resolved) -> int:
    if not str(args.port).isdigit():
        raise UsageError(f"invalid port {args.port!r}")
    request = {"Target": args.host, "DocumentName": DOC_SSH,
               "Parameters": {"portNumber": [str(args.port)]}}
    return start_and_run(resolved, request, mode="ssh-proxy")


def cmd_nodes(args: argparse.Namespace, resolved: Resolved) -> int:
    from portless.client.tables import render_nodes

    client = resolved.ssm()
    nodes: list[dict[str, Any]] = []
    for page in client.get_paginator("describe_instance_information").paginate():
        nodes.extend(page.get("InstanceInformationList", []))
    sys.stdout.write(render_nodes(nodes))
    return 0


def cmd_sessions(args: argparse.Namespace, resolved: Resolved) -> int:
    from portless.client.tables import render_sessions

    client = resolved.ssm()
    state = "History" if args.history else "Active"
    sessions: list[dict[str, Any]] = []
    for page in client.get_paginator("describe_sessions").paginate(State=state):
        sessions.extend(page.get("Sessions", []))
    sys.stdout.write(render_sessions(sessions, history=args.history))
    return 0


def cmd_terminate(args: argparse.Namespace, resolved: Resolved) -> int:
    resp = resolved.ssm().terminate_session(SessionId=args.session_id)
    sys.stdout.write(f"{resp.get('SessionId') or args.session_id}\n")
    return 0


VERBS: dict[str, Callable[[argparse.Namespace, Resolved], int]] = {
    "start-session": cmd_start_session,
    "shell": cmd_shell,
    "exec": cmd_exec,
    "forward": cmd_forward,
    "ssh-proxy": cmd_ssh_proxy,
    "nodes": cmd_nodes,
    "sessions": cmd_sessions,
    "terminate": cmd_terminate,
}


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    debug = bool(os.environ.get("PORTLESS_DEBUG"))
    if debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # A flag given after the verb wins over the same flag before it.
    options = options_from(args)
    if args.verb == "ssh-config":
        sys.stdout.write(ssh_config_text(options, args.command))
        return 0
    try:
        resolved = Resolved(options)
        return VERBS[args.verb](args, resolved)
    except UsageError as exc:
        _err(str(exc))
        return 2
    except ParameterError as exc:
        _err(str(exc))
        return API_ERROR_STATUS
    except ConfigError as exc:
        _err(str(exc))
        return API_ERROR_STATUS
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if debug:
            raise
        return _report(exc)


def _report(exc: Exception) -> int:
    from portless.client.config import api_errors, describe_error

    if isinstance(exc, api_errors()):
        _err(describe_error(exc))
        return API_ERROR_STATUS
    _err(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    return 1
