"""The running agent (`portless agent run`): credentials, health, control channel, sessions.

Start order as the stock agent's (agent spec §6.1): a token first, then the minimal
UpdateInstanceInformation (which must succeed before anything else starts), then
concurrently the full report (every 5 minutes), ListInstanceAssociations (after 15 s, again
30 s later if empty, then every 10 minutes) and the control channel. Each
`interactive_shell` becomes a DataChannel task whose end is reported with
`agent_task_complete`. The agent opens outbound connections only; it never listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from portless.agent.api import AgentApi, NetworkError, http_session, ssl_context
from portless.agent.control import ControlChannel, ControlTiming
from portless.agent.credentials import CredentialManager
from portless.agent.datachannel import FAILED, DataChannel, DataChannelTiming, TaskResult
from portless.agent.platform_info import full_report, minimal_report
from portless.agent.sessions.document import DocumentError, resolve_task
from portless.agent.state import Registration, StateDir
from portless.aws.errors import AwsError
from portless.protocol.payloads import AgentTaskPayload

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AgentTiming:
    health_interval: float = 300.0
    associations_first: float = 15.0
    associations_empty_retry: float = 30.0
    associations_interval: float = 600.0
    hibernate_first: float = 5.0
    hibernate_max: float = 300.0
    max_sessions: int = 1000
    control: ControlTiming = field(default_factory=ControlTiming)
    data: DataChannelTiming = field(default_factory=DataChannelTiming)


class Agent:
    def __init__(self, state: StateDir, registration: Registration, *,
                 timing: AgentTiming | None = None, ca_file: str | None = None) -> None:
        self.state = state
        self.registration = registration
        self.timing = timing or AgentTiming()
        self.ca_file = ca_file if ca_file is not None else registration.ca_file
        self.sessions: dict[str, DataChannel] = {}
        self._session_tasks: set[asyncio.Task[None]] = set()
        self.api: AgentApi | None = None
        self.control: ControlChannel | None = None

    @property
    def instance_id(self) -> str:
        return self.registration.instance_id

    async def run(self, stop: asyncio.Event) -> None:
        reg = self.registration
        ctx = ssl_context(self.ca_file) if reg.endpoint.lower().startswith("https") else None
        async with http_session() as http:
            api = self.api = AgentApi(http, reg.endpoint, reg.region, ssl_ctx=ctx)
            creds = CredentialManager(api, self.state, reg)
            api.credentials = creds.current
            self.control = ControlChannel(api, self.instance_id, self,
                                          timing=self.timing.control)
            tasks = [asyncio.create_task(creds.run(), name="credentials")]
            main = asyncio.create_task(self._main(api, creds), name="agent")
            tasks.append(main)
            stopper = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({stopper, main}, return_when=asyncio.FIRST_COMPLETED)
                if main.done() and not main.cancelled() and main.exception() is not None:
                    raise main.exception()  # type: ignore[misc]
            finally:
                stopper.cancel()
                log.info("agent stopping")
                await self._stop_sessions()
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _main(self, api: AgentApi, creds: CredentialManager) -> None:
        await creds.ready.wait()
        await self._first_ping(api)
        assert self.control is not None
        async with asyncio.TaskGroup() as group:
            group.create_task(self._health(api), name="health")
            group.create_task(self._associations(api), name="associations")
            group.create_task(self.control.run(), name="control channel")

    async def _first_ping(self, api: AgentApi) -> None:
        """The minimal UpdateInstanceInformation must succeed before anything starts."""
        delay = self.timing.hibernate_first
        while True:
            try:
                await api.update_instance_information(minimal_report(self.instance_id))
                return
            except (AwsError, NetworkError) as exc:
                log.warning("UpdateInstanceInformation failed (%s); hibernating %.0f s",
                            exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.timing.hibernate_max)

    async def _health(self, api: AgentApi) -> None:
        while True:
            channel = "ssmmessages" if self.control and self.control.connected.is_set() else ""
            try:
                report = await asyncio.to_thread(full_report, self.instance_id, channel)
                await api.update_instance_information(report)
            except Exception as exc:
                log.warning("UpdateInstanceInformation failed: %s", exc)
            await asyncio.sleep(self.timing.health_interval)

    async def _associations(self, api: AgentApi) -> None:
        await asyncio.sleep(self.timing.associations_first)
        retried_empty = False
        while True:
            delay = self.timing.associations_interval
            try:
                found = await api.list_instance_associations(self.instance_id)
                if not found and not retried_empty:
                    retried_empty = True
                    delay = self.timing.associations_empty_retry
            except Exception as exc:
                log.info("ListInstanceAssociations failed: %s", exc)
            await asyncio.sleep(delay)

    # ------------------------------------------------------------- sessions

    def start_session(self, task: AgentTaskPayload) -> None:
        sid = task.session_id
        if sid in self.sessions:
            log.info("session %s is already running; ignoring the repeat", sid)
            return
        if len(self.sessions) >= self.timing.max_sessions:
            self._spawn(self._report(sid, TaskResult(
                FAILED, f"the agent already runs {len(self.sessions)} sessions")))
            return
        try:
            spec = resolve_task(task)
        except DocumentError as exc:
            log.warning("session %s rejected: %s", sid, exc)
            self._spawn(self._report(sid, TaskResult(FAILED, str(exc))))
            return
        assert self.api is not None
        channel = DataChannel(self.api, self.instance_id, spec, timing=self.timing.data)
        self.sessions[sid] = channel
        self._spawn(self._run_session(sid, channel))

    def cancel_session(self, session_id: str) -> None:
        channel = self.sessions.get(session_id)
        if channel is None:
            log.info("channel_closed for unknown session %s", session_id)
            return
        channel.cancel("channel_closed on the control channel")

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._session_tasks.add(task)
        task.add_done_callback(self._session_tasks.discard)

    async def _run_session(self, sid: str, channel: DataChannel) -> None:
        try:
            result = await channel.run()
        except Exception as exc:
            log.exception("session %s crashed", sid)
            result = TaskResult(FAILED, f"internal error: {exc}")
        finally:
            self.sessions.pop(sid, None)
        await self._report(sid, result)

    async def _report(self, sid: str, result: TaskResult) -> None:
        if self.control is None:
            return
        acked = await self.control.task_complete(sid, result.status, result.output)
        if not acked:
            log.info("agent_task_complete for %s was not acknowledged", sid)

    async def _stop_sessions(self) -> None:
        for channel in list(self.sessions.values()):
            channel.cancel("agent shutting down")
        if self._session_tasks:
            await asyncio.wait(set(self._session_tasks), timeout=5)
        for task in list(self._session_tasks):
            task.cancel()
