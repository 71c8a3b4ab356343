"""The agent's persistent state: registration record and machine fingerprint.

Everything lives in one directory (default /var/lib/portless-agent), mode 0700, with
every file mode 0600 and written atomically, like the stock agent's vault (agent spec §3.6).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = Path("/var/lib/portless-agent")

REGISTRATION_FILE = "registration.json"
FINGERPRINT_FILE = "fingerprint.json"


class StateError(Exception):
    """The state directory is missing, unreadable or holds a broken record."""


@dataclass(slots=True)
class Registration:
    """What `portless agent register` stores and `portless agent run` needs."""

    endpoint: str
    region: str
    instance_id: str
    private_key: str
    """Base64 of the PKCS#1 DER RSAPrivateKey (the stock agent's vault format)."""
    private_key_created: str
    """ISO-8601 UTC time the key pair was generated."""
    fingerprint: str
    ca_file: str | None = None

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Registration:
        try:
            return cls(
                endpoint=str(obj["endpoint"]),
                region=str(obj["region"]),
                instance_id=str(obj["instance_id"]),
                private_key=str(obj["private_key"]),
                private_key_created=str(obj.get("private_key_created", "")),
                fingerprint=str(obj["fingerprint"]),
                ca_file=None if obj.get("ca_file") in (None, "") else str(obj["ca_file"]),
            )
        except (KeyError, TypeError) as exc:
            raise StateError(f"registration record is incomplete: missing {exc}") from None

    @property
    def complete(self) -> bool:
        return bool(self.instance_id and self.region and self.private_key)


class StateDir:
    """The agent's state directory."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def ensure(self) -> None:
        """Create the directory (0700) if needed and tighten its mode."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)

    @property
    def registration_path(self) -> Path:
        return self.path / REGISTRATION_FILE

    def load_registration(self) -> Registration | None:
        """The stored registration, or None when the agent was never registered."""
        obj = self._read_json(self.registration_path)
        if obj is None:
            return None
        reg = Registration.from_dict(obj)
        return reg if reg.complete else None

    def save_registration(self, reg: Registration) -> None:
        self.ensure()
        self._write_json(self.registration_path, asdict(reg))

    def lock(self) -> int:
        """Take the directory's run lock (one agent per state directory); returns the fd.

        Raises StateError when another agent holds it. The lock goes with the process.
        """
        self.ensure()
        fd = os.open(self.path / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(f"another portless agent is running with {self.path}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def clear_registration(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.registration_path.unlink()

    def fingerprint(self) -> str:
        """The machine fingerprint: a UUID v4 created on first use and kept across registrations."""
        path = self.path / FINGERPRINT_FILE
        obj = self._read_json(path)
        if obj is not None and isinstance(obj.get("fingerprint"), str) and obj["fingerprint"]:
            return str(obj["fingerprint"])
        value = str(uuid.uuid4())
        self.ensure()
        self._write_json(path, {"fingerprint": value, "similarityThreshold": -1})
        return value

    # ------------------------------------------------------------------ files

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any] | None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror}") from None
        try:
            obj = json.loads(text)
        except ValueError:
            raise StateError(f"{path} is not valid JSON") from None
        if not isinstance(obj, dict):
            raise StateError(f"{path} does not hold a JSON object")
        return obj

    @staticmethod
    def _write_json(path: Path, obj: dict[str, Any]) -> None:
        """Write atomically: a 0600 temporary file in the same directory, fsync, rename."""
        data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
