"""Where a `%%codestral` cell's request runs, kept between cells: a target made for the
settings' `where()`. A changed setting, or a shared engine that exited when idle, makes a new
one; a request the shared engine refused while exiting is asked again once, on a fresh engine."""

from __future__ import annotations

from IPython.core.error import UsageError

from codestral_engine import EngineError, choose_model, connection

from ..client.engine_client import EngineClient
from ..client.local_engine import stop_local_server
from ..client.settings import CodestralSettings, Where
from ..errors import CodestralError
from .live_output import LiveOutput
from .status import describe
from .targets import HTTPTarget, InProcessTarget, Target


class TargetLink:
    def __init__(self, settings: CodestralSettings):
        self.settings = settings  # read on every request: a change takes effect right away
        self.target: Target | None = None
        self.made_for: Where | None = None  # where the target was made for

    def connect(self) -> Target:
        """The target for the current settings (a changed setting takes effect right away)."""
        try:
            wanted = self.settings.where()
            # (a shared engine that exited when idle is started again)
            reusable = wanted.engine != "shared" or _still_running(self.target)
            if self.target is not None and self.made_for == wanted and reusable:
                return self.target
            self.drop()
            if wanted.remote:
                client = EngineClient(wanted.url, wanted.api_key, protocol_name=wanted.protocol)
                target = HTTPTarget(
                    client,
                    f"remote server at {wanted.url} ({wanted.protocol} protocol)",
                    wanted.model,
                    remote=True,
                )
            else:
                choice = choose_model(wanted.model or None)
                if choice.note and not (wanted.engine == "shared" and connection.read_live()):
                    print(f"Codestral: {choice.note}")
                if wanted.engine == "in-process":
                    target = InProcessTarget(choice)
                else:
                    client = EngineClient.local(choice, idle_timeout=self.settings.idle_timeout)
                    target = HTTPTarget(client, f"shared engine at {client.url}")
        except (CodestralError, EngineError) as exc:
            raise UsageError(str(exc)) from exc
        self.target, self.made_for = target, wanted
        return target

    def drop(self) -> None:
        """Close the current target: its HTTP connections, or the in-process engine."""
        if self.target is not None:
            self.target.close()
        self.target = None

    def forget_broken(self, exc: CodestralError) -> None:
        if exc.status is None:  # unreachable: reconnect (or restart the engine) next time
            self.drop()

    def ask(self, request, live: LiveOutput) -> tuple[str, bool]:
        """Send `request(target)` and stream its answer into `live`: (text, interrupted).

        Once, when the shared engine went away before answering (it refused the request
        because it was exiting after its idle timeout, or it had exited), ask again: the
        reconnect starts a fresh engine."""
        retry = True
        while True:
            try:
                target = self.connect()
                if note := target.waiting_note():  # e.g. "2 requests ahead" on a busy engine
                    live.waiting(note)
                stream = request(target)
            except CodestralError as exc:
                live.finish("failed")
                self.forget_broken(exc)
                raise UsageError(str(exc)) from exc
            except (UsageError, KeyboardInterrupt):
                live.finish("failed")
                raise
            try:
                return self._show(stream, live)
            except CodestralError as exc:
                if not (retry and self._went_away(exc) and not live.text):
                    live.finish("failed")
                    self.forget_broken(exc)
                    raise UsageError(str(exc)) from exc
                retry = False
                self.drop()

    def _went_away(self, exc: CodestralError) -> bool:
        """Whether the shared engine this request went to exited under it (idle exit)."""
        if self.settings.engine != "shared":
            return False
        gone = exc.kind == "unreachable" and not _still_running(self.target)
        return exc.kind == "engine_idle_exit" or gone

    def _show(self, stream, live: LiveOutput) -> tuple[str, bool]:
        interrupted = False
        try:
            with stream:  # leaving it cancels the request, also on interrupt
                for delta in stream:
                    live.append(delta)
        except KeyboardInterrupt:
            interrupted = True
        note = "interrupted" if interrupted else ""
        if stream.finish_reason == "length":
            note = "stopped at max_tokens; raise --max-tokens for more"
        live.finish(note)
        return live.text, interrupted

    def status(self) -> str:
        try:
            if self.target is not None and self.made_for != self.settings.where():
                self.drop()  # a setting changed: report where the next cell goes
            if self.settings.engine == "shared" and not _still_running(self.target):
                self.drop()  # it exited (idle, or stopped elsewhere)
        except CodestralError as exc:
            raise UsageError(str(exc)) from exc
        if self.target is None:
            running = connection.read_live() if self.settings.engine == "shared" else None
            if running is None and self.settings.engine != "remote":
                return (
                    "Codestral: unloaded — starts on the next request (`%codestral start` "
                    "starts it now)."
                )
            self.connect()  # remote: only a client, nothing starts
        try:
            status = self.target.status()
        except CodestralError as exc:
            self.forget_broken(exc)
            raise UsageError(str(exc)) from exc
        return describe(self.target.description, status)

    def stop(self) -> str:
        if isinstance(self.target, InProcessTarget):
            self.drop()
            return "Codestral: the in-process engine is closed."
        self.drop()
        try:
            stopped = stop_local_server()
        except CodestralError as exc:
            raise UsageError(str(exc)) from exc
        if stopped is None:
            return "Codestral: no shared engine is running."
        return f"Codestral: stopped the shared engine (pid {stopped.pid})."


def _still_running(target: Target) -> bool:
    """Whether the shared engine a target talks to still runs (it exits when idle)."""
    info = connection.read_live()
    if info is None or not isinstance(target, HTTPTarget):
        return False
    return (target.client.url, target.client.api_key) == (info.url, info.token)
