"""Which OS user a shell or command session runs as (agent spec §12.5).

1. `runAsElevated` (command types only): the agent's own user (root).
2. `runAsEnabled`: the task's RunAsUser, else `runAsDefaultUser`; it must exist and must
   not be root.
3. Otherwise, as root: `ssm-user`, created on demand with `useradd -m`. Unlike the stock
   agent, portless gives it **no** sudo rights (no sudoers drop-in).
4. Otherwise (agent not root): the agent's own user.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import threading
from dataclasses import dataclass

DEFAULT_USER = "ssm-user"

_create_lock = threading.Lock()


class RunAsError(Exception):
    """No usable run-as user; the text becomes the session's failure Output."""


@dataclass(frozen=True, slots=True)
class RunAsUser:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    shell: str = "/bin/sh"

    @property
    def is_self(self) -> bool:
        """True when the session runs as the agent's own user (no identity switch)."""
        return self.uid == os.getuid() and self.gid == os.getgid()

    def become(self) -> None:
        """Take on this user's identity; run in the child between fork and exec.

        Only system calls, no locks: safe as a `preexec_fn`, which is how both event
        loops (asyncio's and uvloop's, which lacks `user=`/`group=`) can use it.
        """
        os.setgroups(list(self.groups))
        os.setgid(self.gid)
        os.setuid(self.uid)

    @classmethod
    def from_passwd(cls, entry: pwd.struct_passwd, *, home: str | None = None) -> RunAsUser:
        try:
            groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        except OSError:
            groups = (entry.pw_gid,)
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, groups,
                   home if home is not None else entry.pw_dir or f"/home/{entry.pw_name}",
                   entry.pw_shell or "/bin/sh")


def agent_user() -> RunAsUser:
    entry = pwd.getpwuid(os.getuid())
    return RunAsUser.from_passwd(entry, home="/root" if entry.pw_uid == 0 else None)


def resolve_run_as(*, run_as_enabled: bool, run_as_user: str, default_user: str,
                   elevated: bool = False, ssm_user: str = DEFAULT_USER) -> RunAsUser:
    """Pick the run-as user; may create `ssm-user` (blocking: call it from a thread)."""
    if elevated:
        return agent_user()
    if run_as_enabled:
        name = run_as_user.strip() or default_user.strip()
        if not name:
            raise RunAsError("please set the RunAs default user")
        if os.getuid() != 0:
            raise RunAsError("the agent must run as root to run sessions as another user")
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise RunAsError(
                f"failed to start pty since RunAs user {name} does not exist") from None
        return _not_root(entry)
    if os.getuid() != 0:
        return agent_user()
    return _not_root(ensure_default_user(ssm_user))


def _not_root(entry: pwd.struct_passwd) -> RunAsUser:
    """`entry` as a run-as user; root (uid or gid 0) never is one."""
    if entry.pw_uid <= 0 or entry.pw_gid <= 0:
        raise RunAsError(
            f"RunAs user {entry.pw_name} must not be root (uid and gid must be above 0)")
    return RunAsUser.from_passwd(entry)


def ensure_default_user(name: str = DEFAULT_USER) -> pwd.struct_passwd:
    """Look up `ssm-user`, creating it (home directory, no sudo rights) when missing."""
    with _create_lock:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        try:
            proc = subprocess.run(["useradd", "-m", name], capture_output=True, timeout=30,
                                  check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise RunAsError(f"Failed to create user {name}: {exc}") from None
        if proc.returncode not in (0, 9):          # 9: already exists (raced another creator)
            detail = proc.stderr.decode(errors="replace").strip()
            raise RunAsError(f"Failed to create user {name}: {detail}")
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise RunAsError(f"Failed to create user {name}") from None
