"""Table definitions (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Timestamps are DOUBLE epoch seconds (UTC); open-shaped values are JSON text.
These objects describe the *current* schema; the migration runner
(:mod:`portless.store.migrations`) is what creates and alters tables.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied_at", Double, nullable=False),
)

activations = Table(
    "activations",
    metadata,
    Column("activation_id", String(36), primary_key=True),
    Column("code_hash", String(64), nullable=False),
    Column("iam_role", String(256), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("default_instance_name", String(256)),
    Column("registration_limit", Integer, nullable=False),
    Column("registrations_count", Integer, nullable=False, default=0),
    Column("expiration_date", Double, nullable=False),
    Column("created_date", Double, nullable=False),
    Column("tags", Text, nullable=False, default="{}"),
    Index("ix_activations_created", "created_date", "activation_id"),
)

instances = Table(
    "instances",
    metadata,
    Column("instance_id", String(32), primary_key=True),
    Column("activation_id", String(36)),
    Column("iam_role", String(256), nullable=False, default=""),
    Column("name", String(256)),
    Column("public_key", Text),
    Column("public_key_type", String(16)),
    Column("public_key_date", Double),
    Column("fingerprint", String(64)),
    Column("registration_date", Double, nullable=False),
    Column("region", String(64)),
    Column("resource_type", String(32), nullable=False, default="ManagedInstance"),
    Column("agent_name", String(128)),
    Column("agent_version", String(64)),
    Column("platform_type", String(32)),
    Column("platform_name", String(256)),
    Column("platform_version", String(128)),
    Column("ip_address", String(64)),
    Column("computer_name", String(256)),
    Column("last_ping_date", Double),
    Column("ssm_connection_channel", String(32)),
    Index("ix_instances_activation", "activation_id"),
    Index("ix_instances_platform", "platform_type"),
    Index("ix_instances_ping", "last_ping_date"),
)

instance_tags = Table(
    "instance_tags",
    metadata,
    Column(
        "instance_id",
        String(32),
        ForeignKey("instances.instance_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("key", String(128), primary_key=True),
    Column("value", String(256), nullable=False, default=""),
    Index("ix_instance_tags_kv", "key", "value"),
)

issued_credentials = Table(
    "issued_credentials",
    metadata,
    Column("access_key_id", String(32), primary_key=True),
    Column("secret_enc", Text, nullable=False),
    Column("session_token_hash", String(64), nullable=False),
    Column("principal_type", String(16), nullable=False),
    Column("principal_id", String(256), nullable=False),
    Column("expiration", Double, nullable=False),
    Column("created_date", Double, nullable=False),
    Index("ix_credentials_principal", "principal_type", "principal_id"),
    Index("ix_credentials_expiration", "expiration"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("session_id", String(96), primary_key=True),
    Column("owner_arn", String(2048), nullable=False),
    Column("owner_name", String(256), nullable=False),
    Column("target", String(400), nullable=False),
    Column("document_name", String(128), nullable=False),
    Column("reason", String(256)),
    Column("status", String(16), nullable=False),
    Column("start_date", Double, nullable=False),
    Column("end_date", Double),
    Column("details", Text),
    Column("parameters", Text, nullable=False, default="{}"),
    Column("run_as_user", String(256)),
    Column("client_token_hash", String(64)),
    Column("max_session_duration", Integer),
    Column("access_type", String(16), nullable=False, default="Standard"),
    Column("s3_output_url", Text),
    Column("cloudwatch_output_url", Text),
    Column("bytes_in", BigInteger, nullable=False, default=0),
    Column("bytes_out", BigInteger, nullable=False, default=0),
    Index("ix_sessions_start", "start_date", "session_id"),
    Index("ix_sessions_status_start", "status", "start_date"),
    Index("ix_sessions_target", "target"),
    Index("ix_sessions_owner", "owner_arn"),
)

channel_tokens = Table(
    "channel_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("subject", String(128), nullable=False),
    Column("instance_id", String(32)),
    Column("expires", Double, nullable=False),
    Column("used", Boolean, nullable=False, default=False),
    Column("created_date", Double, nullable=False),
    Index("ix_channel_tokens_expires", "expires"),
    Index("ix_channel_tokens_instance", "instance_id"),
)

documents = Table(
    "documents",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("document_type", String(64), nullable=False),
    Column("document_format", String(8), nullable=False),
    Column("owner", String(2048), nullable=False),
    Column("created_date", Double, nullable=False),
    Column("default_version", Integer, nullable=False),
    Column("latest_version", Integer, nullable=False),
    Column("display_name", String(1024)),
    Column("target_type", String(200)),
    Column("tags", Text, nullable=False, default="{}"),
    Index("ix_documents_type", "document_type"),
)

document_versions = Table(
    "document_versions",
    metadata,
    Column(
        "name",
        String(128),
        ForeignKey("documents.name", ondelete="CASCADE", onupdate="CASCADE"),
        primary_key=True,
    ),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("content", Text, nullable=False),
    Column("document_format", String(8), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("version_name", String(128)),
    Column("created_date", Double, nullable=False),
    Index("ix_document_versions_hash", "name", "content_hash"),
)

users = Table(
    "users",
    metadata,
    Column("user_id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("arn", String(2048), nullable=False),
    Column("created_date", Double, nullable=False),
    Column("tags", Text, nullable=False, default="{}"),
)

access_keys = Table(
    "access_keys",
    metadata,
    Column("access_key_id", String(32), primary_key=True),
    Column(
        "user_name",
        String(64),
        ForeignKey("users.name", ondelete="CASCADE", onupdate="CASCADE"),
        nullable=False,
    ),
    Column("secret_enc", Text, nullable=False),
    Column("status", String(16), nullable=False, default="Active"),
    Column("created_date", Double, nullable=False),
    Index("ix_access_keys_user", "user_name"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    ),
    Column("time", Double, nullable=False),
    Column("actor_arn", String(2048)),
    Column("action", String(256), nullable=False),
    Column("resource", String(2048)),
    Column("decision", String(8), nullable=False),
    Column("reason", Text),
    Column("request_id", String(128)),
    Column("source_ip", String(64)),
    Column("details", Text, nullable=False, default="{}"),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_time", "time"),
)

# One row (id = 1): the id and hash of the newest audit event. Appenders lock
# it, which serializes appends across connections and server replicas.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_id", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
)

V1_TABLES = [
    activations,
    instances,
    instance_tags,
    issued_credentials,
    sessions,
    channel_tokens,
    documents,
    document_versions,
    users,
    access_keys,
    audit_events,
    audit_head,
]

# --------------------------------------------------------------------------- IAM (step 2)
# Groups, policies and MFA devices. Principals are referenced by id (users.user_id,
# iam_groups.group_id), so a user deleted and re-created under the same name inherits
# nothing; deleting a user or group cascades to its memberships, inline policies and
# attachments. Managed policies are referenced by ARN text: AWS managed ones
# (``arn:aws:iam::aws:policy/NAME``) live in code, customer managed ones in iam_policies.

iam_groups = Table(
    "iam_groups",
    metadata,
    Column("group_id", String(32), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("path", String(512), nullable=False, default="/"),
    Column("arn", String(2048), nullable=False),
    Column("created_date", Double, nullable=False),
)

iam_group_members = Table(
    "iam_group_members",
    metadata,
    Column(
        "group_id",
        String(32),
        ForeignKey("iam_groups.group_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "user_id", String(32), ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True
    ),
    Column("added_date", Double, nullable=False),
    Index("ix_iam_group_members_user", "user_id"),
)

iam_user_policies = Table(
    "iam_user_policies",
    metadata,
    Column(
        "user_id", String(32), ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True
    ),
    Column("policy_name", String(128), primary_key=True),
    Column("document", Text, nullable=False),
    Column("updated_date", Double, nullable=False),
)

iam_group_policies = Table(
    "iam_group_policies",
    metadata,
    Column(
        "group_id",
        String(32),
        ForeignKey("iam_groups.group_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("policy_name", String(128), primary_key=True),
    Column("document", Text, nullable=False),
    Column("updated_date", Double, nullable=False),
)

iam_role_policies = Table(
    "iam_role_policies",
    metadata,
    Column("role_name", String(64), primary_key=True),
    Column("policy_name", String(128), primary_key=True),
    Column("document", Text, nullable=False),
    Column("updated_date", Double, nullable=False),
)

iam_policies = Table(
    "iam_policies",
    metadata,
    Column("policy_id", String(32), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("path", String(512), nullable=False, default="/"),
    Column("arn", String(2048), nullable=False, unique=True),
    Column("description", String(1000), nullable=False, default=""),
    Column("default_version_id", String(16), nullable=False),
    Column("next_version", Integer, nullable=False),
    Column("created_date", Double, nullable=False),
    Column("updated_date", Double, nullable=False),
    Column("tags", Text, nullable=False, default="{}"),
)

iam_policy_versions = Table(
    "iam_policy_versions",
    metadata,
    Column(
        "policy_id",
        String(32),
        ForeignKey("iam_policies.policy_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("version_id", String(16), primary_key=True),
    Column("document", Text, nullable=False),
    Column("created_date", Double, nullable=False),
)

iam_user_attachments = Table(
    "iam_user_attachments",
    metadata,
    Column(
        "user_id", String(32), ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True
    ),
    Column("policy_arn", String(2048), primary_key=True),
    Column("attached_date", Double, nullable=False),
    Index("ix_iam_user_attachments_arn", "policy_arn"),
)

iam_group_attachments = Table(
    "iam_group_attachments",
    metadata,
    Column(
        "group_id",
        String(32),
        ForeignKey("iam_groups.group_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("policy_arn", String(2048), primary_key=True),
    Column("attached_date", Double, nullable=False),
    Index("ix_iam_group_attachments_arn", "policy_arn"),
)

iam_role_attachments = Table(
    "iam_role_attachments",
    metadata,
    Column("role_name", String(64), primary_key=True),
    Column("policy_arn", String(2048), primary_key=True),
    Column("attached_date", Double, nullable=False),
    Index("ix_iam_role_attachments_arn", "policy_arn"),
)

iam_mfa_devices = Table(
    "iam_mfa_devices",
    metadata,
    Column("serial_number", String(256), primary_key=True),
    Column("name", String(226), nullable=False),
    Column("path", String(512), nullable=False, default="/"),
    Column("secret_enc", Text, nullable=False),
    Column("user_id", String(32), ForeignKey("users.user_id", ondelete="SET NULL")),
    Column("enable_date", Double),
    Column("last_used_step", BigInteger),
    Column("created_date", Double, nullable=False),
    Column("tags", Text, nullable=False, default="{}"),
    Index("ix_iam_mfa_devices_user", "user_id"),
)

# MFA facts of temporary credentials (GetSessionToken with SerialNumber/TokenCode).
iam_credential_mfa = Table(
    "iam_credential_mfa",
    metadata,
    Column(
        "access_key_id",
        String(32),
        ForeignKey("issued_credentials.access_key_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("mfa_serial", String(256), nullable=False),
    Column("authenticated_at", Double, nullable=False),
)

V2_IAM_TABLES = [
    iam_groups,
    iam_group_members,
    iam_user_policies,
    iam_group_policies,
    iam_role_policies,
    iam_policies,
    iam_policy_versions,
    iam_user_attachments,
    iam_group_attachments,
    iam_role_attachments,
    iam_mfa_devices,
    iam_credential_mfa,
]
