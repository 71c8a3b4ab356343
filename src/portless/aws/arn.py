"""Amazon Resource Names: parsing, formatting and builders for the ARNs portless hands out.

Shapes follow AWS: managed instances ``arn:aws:ssm:R:A:managed-instance/mi-…``, EC2 instances
``arn:aws:ec2:R:A:instance/i-…``, sessions ``arn:aws:ssm:R:A:session/ID``, documents
``arn:aws:ssm:R:A:document/NAME`` with an empty account for AWS-owned documents
(``arn:aws:ssm:R::document/AWS-StartSSHSession``; the SSM document ARN pattern is
``arn:[a-z0-9-]+:ssm:[a-z0-9-]+:([0-9]{12})?:document/…``) and IAM users
``arn:aws:iam::A:user/PATH/NAME`` (IAM is global, so no region).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_PARTITION",
    "Arn",
    "aws_document_arn",
    "document_arn",
    "ec2_instance_arn",
    "iam_role_arn",
    "iam_user_arn",
    "instance_arn",
    "managed_instance_arn",
    "session_arn",
]

DEFAULT_PARTITION = "aws"


@dataclass(frozen=True)
class Arn:
    """``arn:partition:service:region:account:resource``; the resource may contain ``:``."""

    partition: str
    service: str
    region: str
    account: str
    resource: str

    @classmethod
    def parse(cls, text: str) -> Arn:
        """Parse an ARN; ValueError if it does not have the six ``:``-separated fields."""
        fields = text.split(":", 5)
        if len(fields) != 6 or fields[0] != "arn":
            raise ValueError(f"not an ARN: {text!r}")
        _arn, partition, service, region, account, resource = fields
        if not partition or not service or not resource:
            raise ValueError(f"not an ARN (empty partition, service or resource): {text!r}")
        return cls(partition, service, region, account, resource)

    def __str__(self) -> str:
        return f"arn:{self.partition}:{self.service}:{self.region}:{self.account}:{self.resource}"

    def format(self) -> str:
        """The ARN text (same as ``str(arn)``)."""
        return str(self)

    @property
    def resource_type(self) -> str:
        """The part of the resource before the first ``/`` or ``:`` (``managed-instance``)."""
        return self._split_resource()[0]

    @property
    def resource_id(self) -> str:
        """The part of the resource after the first ``/`` or ``:`` (``mi-…``), or the whole
        resource if it has no separator."""
        return self._split_resource()[1]

    def _split_resource(self) -> tuple[str, str]:
        cut = [i for i in (self.resource.find("/"), self.resource.find(":")) if i >= 0]
        if not cut:
            return "", self.resource
        i = min(cut)
        return self.resource[:i], self.resource[i + 1 :]


def managed_instance_arn(
    region: str, account: str, instance_id: str, *, partition: str = DEFAULT_PARTITION
) -> Arn:
    """``arn:aws:ssm:REGION:ACCOUNT:managed-instance/mi-…``."""
    return Arn(partition, "ssm", region, account, f"managed-instance/{instance_id}")


def ec2_instance_arn(
    region: str, account: str, instance_id: str, *, partition: str = DEFAULT_PARTITION
) -> Arn:
    """``arn:aws:ec2:REGION:ACCOUNT:instance/i-…``."""
    return Arn(partition, "ec2", region, account, f"instance/{instance_id}")


def instance_arn(
    region: str, account: str, instance_id: str, *, partition: str = DEFAULT_PARTITION
) -> Arn:
    """The ARN AWS uses for a target: managed-instance for ``mi-…``, EC2 instance otherwise."""
    if instance_id.startswith("mi-"):
        return managed_instance_arn(region, account, instance_id, partition=partition)
    return ec2_instance_arn(region, account, instance_id, partition=partition)


def session_arn(
    region: str, account: str, session_id: str, *, partition: str = DEFAULT_PARTITION
) -> Arn:
    """``arn:aws:ssm:REGION:ACCOUNT:session/ID``."""
    return Arn(partition, "ssm", region, account, f"session/{session_id}")


def document_arn(
    region: str, account: str | None, name: str, *, partition: str = DEFAULT_PARTITION
) -> Arn:
    """``arn:aws:ssm:REGION:ACCOUNT:document/NAME``; ``account`` None or empty for AWS-owned
    documents, which gives ``arn:aws:ssm:REGION::document/NAME``."""
    return Arn(partition, "ssm", region, account or "", f"document/{name}")


def aws_document_arn(region: str, name: str, *, partition: str = DEFAULT_PARTITION) -> Arn:
    """An AWS-owned document: ``arn:aws:ssm:REGION::document/AWS-…``."""
    return document_arn(region, None, name, partition=partition)


def _iam_resource(kind: str, name: str, path: str) -> str:
    if not path.startswith("/") or not path.endswith("/"):
        raise ValueError(f"IAM path must begin and end with '/': {path!r}")
    return f"{kind}{path}{name}"


def iam_user_arn(
    account: str, name: str, *, path: str = "/", partition: str = DEFAULT_PARTITION
) -> Arn:
    """``arn:aws:iam::ACCOUNT:user/NAME`` (``user/PATH/NAME`` with a non-root path)."""
    return Arn(partition, "iam", "", account, _iam_resource("user", name, path))


def iam_role_arn(
    account: str, name: str, *, path: str = "/", partition: str = DEFAULT_PARTITION
) -> Arn:
    """``arn:aws:iam::ACCOUNT:role/NAME`` (used for activation IAM roles)."""
    return Arn(partition, "iam", "", account, _iam_resource("role", name, path))
