"""The policy documents the seed articles (shared/seeds/) publish, verbatim.

Seed 001: three connecting-user policies and the instance profile; seed 004: a
per-instance StartSession policy with TerminateSession limited to the caller's
own sessions.
"""

from pathlib import Path

SEED_001_CONNECT = """{
   "Version": "2012-10-17",
   "Statement": [
       {
           "Sid": "1",
           "Effect": "Allow",
           "Action": [
               "ec2:DescribeInstances",
               "ssm:DescribeInstanceInformation",
               "ssm:GetConnectionStatus",
               "ssm:StartSession"
           ],
           "Resource": "*"
       }
   ]
}"""

SEED_001_BROWSE = """{
   "Version": "2012-10-17",
   "Statement": [
       {
           "Sid": "2",
           "Effect": "Allow",
           "Action": [
               "ec2:describeInstances",
               "ssm:DescribeInstanceInformation",
               "ssm:GetConnectionStatus",
               "ssm:StartSession",
               "ssm:ListAssociations",
               "ssm:DescribeSessions",
               "ssm:DescribeInstanceProperties"
           ],
           "Resource": "*"
       }
   ]
}"""

SEED_001_CONFIGURE = """{
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "1",
            "Effect": "Allow",
            "Action": [
                "ec2:describeInstances",
                "ssm:DescribeInstanceInformation",
                "ssm:GetConnectionStatus",
                "ssm:StartSession",
                "ssm:ListAssociations",
                "ssm:DescribeSessions",
                "ssm:DescribeInstanceProperties",
                "ssm:CreateDocument",
                "ssm:GetDocument",
                "ssm:UpdateDocument",
                "ssm:DeleteDocument"
            ],
            "Resource": "*"
        }
    ]
}"""

SEED_INSTANCE_PROFILE = """{
   "Version": "2012-10-17",
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
               "ssm:UpdateInstanceInformation"
           ],
           "Resource": "*"
       },
       {
           "Effect": "Allow",
           "Action": [
               "ssmmessages:CreateControlChannel",
               "ssmmessages:CreateDataChannel",
               "ssmmessages:OpenControlChannel",
               "ssmmessages:OpenDataChannel"
           ],
           "Resource": "*"
       },
       {
           "Effect": "Allow",
           "Action": [
               "ec2messages:AcknowledgeMessage",
               "ec2messages:DeleteMessage",
               "ec2messages:FailMessage",
               "ec2messages:GetEndpoint",
               "ec2messages:GetMessages",
               "ec2messages:SendReply"
           ],
           "Resource": "*"
       }
   ]
}"""

SEED_004_PER_INSTANCE = """{
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "ssm:StartSession"
            ],
            "Resource": [
                "arn:aws:ec2:us-east-2:123456789012:instance/i-1234567890EXAMPLE",
                "arn:aws:ec2:us-east-2:123456789012:instance/i-abcdefghijEXAMPLE",
                "arn:aws:ec2:us-east-2:123456789012:instance/i-0e9d8c7b6aEXAMPLE"
            ]
        },
        {
            "Effect": "Allow",
            "Action": [
                "ssm:TerminateSession"
            ],
            "Resource": [
                "arn:aws:ssm:*:*:session/${aws:username}-*"
            ]
        }
    ]
}"""

SEEDS_DIR = Path(__file__).resolve().parents[2] / "shared" / "seeds"
"""The seed articles themselves, beside the project's root as in every checkout."""
