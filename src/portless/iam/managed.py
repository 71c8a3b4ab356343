"""The AWS managed policies portless ships, under the names and ARNs AWS uses.

People's runbooks say "attach AmazonSSMManagedInstanceCore to the instance role" or "give
them AmazonSSMReadOnlyAccess"; those names must exist here and mean the same thing.
``AmazonSSMManagedInstanceCore`` carries the document the seeds quote, statement for
statement. The others are written for portless: they grant what their AWS namesakes grant
for the services portless implements (SSM, its message channels, and the EC2/IAM reads
the Session Manager console and CLI make).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from portless.iam.policy import VERSION_2012, Policy, parse_policy

__all__ = [
    "ADMINISTRATOR_ACCESS",
    "AMAZON_SSM_FULL_ACCESS",
    "AMAZON_SSM_MANAGED_INSTANCE_CORE",
    "AMAZON_SSM_READ_ONLY_ACCESS",
    "AWS_MANAGED_POLICIES",
    "AWS_MANAGED_POLICY_ARN_PREFIX",
    "ManagedPolicy",
    "get_managed_policy",
]

AWS_MANAGED_POLICY_ARN_PREFIX = "arn:aws:iam::aws:policy/"


@dataclass(frozen=True, slots=True)
class ManagedPolicy:
    """An AWS managed policy: its identity, a description and its (single) document."""

    name: str
    description: str
    document: Mapping[str, Any]
    path: str = "/"
    version_id: str = "v1"

    @property
    def arn(self) -> str:
        """``arn:aws:iam::aws:policy/PATH/NAME`` as AWS spells managed policy ARNs."""
        return f"{AWS_MANAGED_POLICY_ARN_PREFIX}{self.path.lstrip('/')}{self.name}"

    @property
    def text(self) -> str:
        """The document as JSON text, for GetPolicyVersion."""
        return json.dumps(self.document, indent=4)

    def policy(self) -> Policy:
        """The parsed document, labelled with this policy's name and ARN."""
        return parse_policy(self.document, name=self.name, arn=self.arn, max_chars=None)


AMAZON_SSM_MANAGED_INSTANCE_CORE = ManagedPolicy(
    name="AmazonSSMManagedInstanceCore",
    description="What a managed node needs to register, report and carry sessions.",
    document={
        "Version": VERSION_2012,
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "ssm:DescribeAssociation",
                    "ssm:GetDeployablePatchSnapshotForInstance",
                    "ssm:GetDocument",
                    "ssm:DescribeDocument",
                    "ssm:GetManifest",
                    "ssm:GetParameter",
                    "ssm:GetParameters",
                    "ssm:ListAssociations",
                    "ssm:ListInstanceAssociations",
                    "ssm:PutInventory",
                    "ssm:PutComplianceItems",
                    "ssm:PutConfigurePackageResult",
                    "ssm:UpdateAssociationStatus",
                    "ssm:UpdateInstanceAssociationStatus",
                    "ssm:UpdateInstanceInformation",
                ],
                "Resource": "*",
            },
            {
                "Effect": "Allow",
                "Action": [
                    "ssmmessages:CreateControlChannel",
                    "ssmmessages:CreateDataChannel",
                    "ssmmessages:OpenControlChannel",
                    "ssmmessages:OpenDataChannel",
                ],
                "Resource": "*",
            },
            {
                "Effect": "Allow",
                "Action": [
                    "ec2messages:AcknowledgeMessage",
                    "ec2messages:DeleteMessage",
                    "ec2messages:FailMessage",
                    "ec2messages:GetEndpoint",
                    "ec2messages:GetMessages",
                    "ec2messages:SendReply",
                ],
                "Resource": "*",
            },
        ],
    },
)

AMAZON_SSM_FULL_ACCESS = ManagedPolicy(
    name="AmazonSSMFullAccess",
    description="Everything in Systems Manager, Session Manager included, for operators.",
    document={
        "Version": VERSION_2012,
        "Statement": [
            {
                "Sid": "SystemsManager",
                "Effect": "Allow",
                "Action": ["ssm:*", "ssmmessages:*", "ec2messages:*"],
                "Resource": "*",
            },
            {
                "Sid": "ConsoleReads",
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeInstances",
                    "ec2:DescribeInstanceStatus",
                    "iam:ListRoles",
                    "iam:GetRole",
                ],
                "Resource": "*",
            },
        ],
    },
)

AMAZON_SSM_READ_ONLY_ACCESS = ManagedPolicy(
    name="AmazonSSMReadOnlyAccess",
    description="Look, do not touch: describe, get and list in Systems Manager.",
    document={
        "Version": VERSION_2012,
        "Statement": [
            {
                "Sid": "SystemsManagerReads",
                "Effect": "Allow",
                "Action": ["ssm:Describe*", "ssm:Get*", "ssm:List*"],
                "Resource": "*",
            },
        ],
    },
)

ADMINISTRATOR_ACCESS = ManagedPolicy(
    name="AdministratorAccess",
    description="Every action on every resource.",
    document={
        "Version": VERSION_2012,
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    },
)

AWS_MANAGED_POLICIES: Mapping[str, ManagedPolicy] = {
    p.name: p
    for p in (
        AMAZON_SSM_MANAGED_INSTANCE_CORE,
        AMAZON_SSM_FULL_ACCESS,
        AMAZON_SSM_READ_ONLY_ACCESS,
        ADMINISTRATOR_ACCESS,
    )
}
"""The shipped managed policies by name."""


def get_managed_policy(name_or_arn: str) -> ManagedPolicy | None:
    """Look a managed policy up by its name or its ``arn:aws:iam::aws:policy/...`` ARN."""
    if name_or_arn.startswith(AWS_MANAGED_POLICY_ARN_PREFIX):
        found = AWS_MANAGED_POLICIES.get(name_or_arn.rsplit("/", 1)[-1])
        return found if found is not None and found.arn == name_or_arn else None
    return AWS_MANAGED_POLICIES.get(name_or_arn)
