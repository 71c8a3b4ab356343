"""The policies the seed articles publish, verbatim, and what each allows and refuses.

Seed 001 gives three connecting-user policies (connect only; connect and browse sessions;
also manage documents) and the instance-profile policy; seed 004 gives the instance
profile again and a per-instance StartSession policy whose TerminateSession is limited to
the caller's own sessions through ``session/${aws:username}-*``.
"""

from __future__ import annotations

import json

import pytest

from portless.iam.context import RequestContext
from portless.iam.evaluation import evaluate
from portless.iam.managed import AMAZON_SSM_MANAGED_INSTANCE_CORE
from portless.iam.policy import Policy, parse_policy
from tests.seed_policies import (
    SEED_001_BROWSE,
    SEED_001_CONFIGURE,
    SEED_001_CONNECT,
    SEED_004_PER_INSTANCE,
    SEEDS_DIR,
)

from .helpers import ACCOUNT, NODE


def _decide(policy_text: str, action: str, resource: str = "*", **kw: object) -> bool:
    policy = parse_policy(policy_text, name="seed")
    ctx = RequestContext.build(action, resource, **kw)  # type: ignore[arg-type]
    return evaluate([policy], ctx).allowed


CONNECTING_USER_ACTIONS = [
    # (action, connect, browse, configure)
    ("ec2:DescribeInstances", True, True, True),
    ("ssm:DescribeInstanceInformation", True, True, True),
    ("ssm:GetConnectionStatus", True, True, True),
    ("ssm:StartSession", True, True, True),
    ("ssm:ListAssociations", False, True, True),
    ("ssm:DescribeSessions", False, True, True),
    ("ssm:DescribeInstanceProperties", False, True, True),
    ("ssm:CreateDocument", False, False, True),
    ("ssm:GetDocument", False, False, True),
    ("ssm:UpdateDocument", False, False, True),
    ("ssm:DeleteDocument", False, False, True),
    ("ssm:TerminateSession", False, False, False),
    ("ssm:ResumeSession", False, False, False),
    ("ssm:UpdateDocumentDefaultVersion", False, False, False),
    ("ssm:SendCommand", False, False, False),
    ("ssmmessages:OpenDataChannel", False, False, False),
    ("iam:CreateUser", False, False, False),
    ("ec2:TerminateInstances", False, False, False),
]


@pytest.mark.parametrize(("action", "connect", "browse", "configure"), CONNECTING_USER_ACTIONS)
def test_seed_001_connecting_user_policies(
    action: str, connect: bool, browse: bool, configure: bool
) -> None:
    resource = NODE if action == "ssm:StartSession" else "*"
    assert _decide(SEED_001_CONNECT, action, resource, username="alice") is connect
    assert _decide(SEED_001_BROWSE, action, resource, username="alice") is browse
    assert _decide(SEED_001_CONFIGURE, action, resource, username="alice") is configure


def test_seed_001_lowercase_action_still_matches() -> None:
    """Seed 001 writes ``ec2:describeInstances``; actions compare case-insensitively."""
    assert _decide(SEED_001_BROWSE, "ec2:DescribeInstances")
    assert _decide(SEED_001_CONFIGURE, "EC2:DESCRIBEINSTANCES")


def test_seed_001_decision_names_sid() -> None:
    decision = evaluate(
        [parse_policy(SEED_001_BROWSE, name="SessionBrowse")],
        RequestContext.build("ssm:DescribeSessions"),
    )
    assert (decision.policy_name, decision.statement_index, decision.sid) == ("SessionBrowse", 0, "2")
    assert decision.describe() == 'allowed by policy SessionBrowse Statement[0] (Sid "2")'


@pytest.mark.parametrize(
    ("action", "allowed"),
    [
        ("ssm:UpdateInstanceInformation", True),
        ("ssm:GetDocument", True),
        ("ssm:ListInstanceAssociations", True),
        ("ssmmessages:CreateControlChannel", True),
        ("ssmmessages:OpenDataChannel", True),
        ("ec2messages:GetMessages", True),
        ("ec2messages:SendReply", True),
        # A node's credentials cannot open sessions or look at other nodes.
        ("ssm:StartSession", False),
        ("ssm:TerminateSession", False),
        ("ssm:DescribeInstanceInformation", False),
        ("ssm:DescribeSessions", False),
        ("ssm:SendCommand", False),
        ("iam:ListUsers", False),
    ],
)
def test_instance_profile_policy(action: str, allowed: bool) -> None:
    resource = NODE if action == "ssm:StartSession" else "*"
    managed: Policy = AMAZON_SSM_MANAGED_INSTANCE_CORE.policy()
    assert evaluate([managed], RequestContext.build(action, resource)).allowed is allowed


def _instance(instance_id: str, region: str = "us-east-2", account: str = ACCOUNT) -> str:
    return f"arn:aws:ec2:{region}:{account}:instance/{instance_id}"


def _session(session_id: str, region: str = "us-east-2", account: str = ACCOUNT) -> str:
    return f"arn:aws:ssm:{region}:{account}:session/{session_id}"


@pytest.mark.parametrize(
    ("resource", "allowed"),
    [
        (_instance("i-1234567890EXAMPLE"), True),
        (_instance("i-abcdefghijEXAMPLE"), True),
        (_instance("i-0e9d8c7b6aEXAMPLE"), True),
        (_instance("i-1234567890example"), False),  # resources are case-sensitive
        (_instance("i-0000000000EXAMPLE"), False),  # an instance not listed
        (_instance("i-1234567890EXAMPLE", region="us-east-1"), False),
        (_instance("i-1234567890EXAMPLE", account="999999999999"), False),
        (NODE, False),  # a managed instance not listed
        ("*", False),
    ],
)
def test_seed_004_start_session_only_on_listed_instances(resource: str, allowed: bool) -> None:
    assert _decide(SEED_004_PER_INSTANCE, "ssm:StartSession", resource, username="alice") is allowed


@pytest.mark.parametrize(
    ("username", "session", "allowed"),
    [
        ("alice", _session("alice-0123456789abcdef0"), True),
        ("alice", _session("alice-0123456789abcdef0", region="eu-west-1"), True),  # any region
        ("alice", _session("alice-0123456789abcdef0", account="999999999999"), True),  # any account
        ("alice", _session("alice-"), True),  # "*" may match nothing
        ("bob", _session("alice-0123456789abcdef0"), False),  # someone else's session
        ("ali", _session("alice-0123456789abcdef0"), False),  # a prefix of the name is not enough
        ("alice", _session("alicex-0123456789abcdef0"), False),
        ("alice", _session("bob-alice-0123"), False),
        ("Alice", _session("alice-0123456789abcdef0"), False),  # substituted text is case-sensitive
        (None, _session("alice-0123456789abcdef0"), False),  # no aws:username (e.g. a node)
    ],
)
def test_seed_004_terminate_only_own_sessions(
    username: str | None, session: str, allowed: bool
) -> None:
    assert (
        _decide(SEED_004_PER_INSTANCE, "ssm:TerminateSession", session, username=username)
        is allowed
    )


@pytest.mark.parametrize(
    "action",
    ["ssm:ResumeSession", "ssm:DescribeSessions", "ssm:DescribeInstanceInformation", "ssm:SendCommand"],
)
def test_seed_004_nothing_else(action: str) -> None:
    assert not _decide(SEED_004_PER_INSTANCE, action, _session("alice-1"), username="alice")
    assert not _decide(SEED_004_PER_INSTANCE, action, "*", username="alice")


def test_seed_004_start_session_decided_by_first_statement() -> None:
    decision = evaluate(
        [parse_policy(SEED_004_PER_INSTANCE, name="OneMachine")],
        RequestContext.build("ssm:StartSession", _instance("i-abcdefghijEXAMPLE")),
    )
    assert decision.allowed and decision.statement_index == 0
    decision = evaluate(
        [parse_policy(SEED_004_PER_INSTANCE, name="OneMachine")],
        RequestContext.build("ssm:TerminateSession", _session("alice-1"), username="alice"),
    )
    assert decision.allowed and decision.statement_index == 1


MANAGED_INSTANCE_CORE_TEXT = json.dumps(AMAZON_SSM_MANAGED_INSTANCE_CORE.document, indent=1)


@pytest.mark.parametrize(("text", "seed"), [
    (SEED_001_CONNECT, "001"), (SEED_001_BROWSE, "001"), (SEED_001_CONFIGURE, "001"),
    # The seeds' instance-profile document is our AmazonSSMManagedInstanceCore, exactly.
    (MANAGED_INSTANCE_CORE_TEXT, "001"), (MANAGED_INSTANCE_CORE_TEXT, "004"),
    (SEED_004_PER_INSTANCE, "004"),
])
def test_policies_are_the_seeds_word_for_word(text: str, seed: str) -> None:
    (article,) = SEEDS_DIR.glob(f"{seed}_*.txt")
    # Compare up to whitespace: the articles indent with spaces of their own.
    assert " ".join(text.split()) in " ".join(article.read_text().split())
