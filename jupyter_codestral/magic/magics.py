"""`%%codestral` / `%codestral`: ask Codestral from a notebook cell and watch the answer stream in.

The options choose a mode and a placement from `modes` (the default answers the cell as a
question; `--insert` / `--replace` write code into a new cell / this one; `--fill` fills the
<FILL> gap, combinable with both). This module parses options, connects to where the model runs
(`settings`, `targets`) and streams the reply into the output (`live_output`).
`-o NAME` also stores the text in a variable.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import Markdown, display
from traitlets import Bool, Enum, Float, Integer, List, Unicode, default

from codestral_engine import EngineError

from ..client.settings import CodestralSettings, from_env
from ..client.shapes import Sampling
from ..context.fix import EXPLAIN_TOKENS, FailureRecorder, clean_proposal, diff, fix_messages
from ..context.kernel_facts import facts
from ..context.kernel_history import project_roots
from ..context.teaching import HINTS_CHAT_MAX_TOKENS, NotebookPolicy, kernel_notebook_policy
from .live_output import LiveOutput
from .modes import FILL_MARKER, Notebook, choose
from .target_link import TargetLink
from .targets import Target

HELP = """%%codestral [--insert | --replace | --fill] [-o NAME] [--max-tokens N] [--temperature T]
            [--stop S] [--seed N] [--no-context]
    <instruction, or code with a <FILL> marker for --fill>

%codestral status | start | stop      where the engine runs, its model and speed
%codestral fix [--replace]            a fix for the last failed cell, as a diff (--replace:
                                      put the fixed code into this cell, to run it)
%codestral pull [--quant 4bit|8bit|bf16] [--repo ID] [--accept-license]
                                      download Codestral's weights for this machine
%codestral                            this help;  %%codestral? for every option

Settings: %config Codestral  (engine = shared | in-process | remote, model, max_tokens, ...)"""


class _PullParser(argparse.ArgumentParser):
    """`%codestral pull`'s options: a mistake is a UsageError with the usage, not an exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n{self.format_usage()}")


def _valid_options(parser: Any, line: str) -> str:
    """The options %%codestral takes, and the likely one for each unknown option in `line`."""
    import difflib

    valid = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
    hints = []
    for word in line.split():
        if word.startswith("-") and word.split("=")[0] not in parser._option_string_actions:
            close = difflib.get_close_matches(word.split("=")[0], valid, n=1)
            if close:
                hints.append(f"Did you mean {close[0]} (for {word})? ")
    return f"{''.join(hints)}Valid options: {', '.join(valid)} (%%codestral? explains each)."


@magics_class
class Codestral(Magics, CodestralSettings):
    """Settings of the %%codestral magic (`%config Codestral.<name> = value`); where the model
    runs (engine, model, url, api_key, remote_model) is shared with JupyterLab's settings."""

    engine = Enum(
        ["shared", "in-process", "remote"],
        default_value="shared",
        help="Where the model runs: this machine's shared engine server (started on first use), "
        "an engine inside this kernel, or a remote Mistral-compatible API (url, api_key).",
    ).tag(config=True)

    @default("engine")
    def _engine_from_env(self) -> str:
        return from_env(self, "engine", "shared")

    max_tokens = Integer(512, help="Most tokens per answer.").tag(config=True)
    temperature = Float(0.0, help="Sampling temperature (0: deterministic).").tag(config=True)
    history_chars = Integer(
        6000,
        help="Budget for earlier cells' code as context, in characters (0: none).",
    ).tag(config=True)
    variables_chars = Integer(1200, help="Budget for the live-variables header.").tag(config=True)
    project_context = Bool(
        True,
        help="Show the model the signatures of the project's own functions and classes the "
        "cell mentions, read from their source files (never imported) under the project's "
        "root: the nearest folder above the kernel's with .git, pyproject.toml, setup.py or "
        "setup.cfg, else the kernel's folder. With a remote engine they go to that server.",
    ).tag(config=True)
    project_dirs = List(
        Unicode(), help="More directories whose Python files the project context may read."
    ).tag(config=True)
    project_chars = Integer(2000, help="Budget for the project's definitions.").tag(config=True)
    update_interval = Float(0.25, help="Seconds between display updates.").tag(config=True)
    output = Enum(
        ["auto", "display", "print"],
        default_value="auto",
        help="'display' updates one output in place (notebooks), 'print' prints once "
        "(terminals); 'auto' picks by the shell.",
    ).tag(config=True)

    def __init__(self, shell):
        super().__init__(shell=shell)
        self.link = TargetLink(self)  # where requests run, kept between cells
        self.failures = FailureRecorder()  # the last cell that raised, for %codestral fix
        shell.events.register("post_run_cell", self.failures)

    @magic_arguments()
    @argument("--insert", action="store_true", help="write code into a new cell below")
    @argument("--replace", action="store_true", help="replace this cell with the code")
    @argument(
        "--fill", action="store_true", help=f"fill the {FILL_MARKER} marker in the cell's code"
    )
    @argument(
        "-o",
        "--output-var",
        dest="name",
        help="also store the text shown in this variable (for --fill: the code with its gap "
        "filled, ready to run)",
    )
    @argument("--max-tokens", type=int, help="most tokens to generate")
    @argument("--temperature", type=float, help="sampling temperature")
    @argument("--stop", action="append", help="stop string (repeatable)")
    @argument("--seed", type=int, help="random seed")
    @argument("--no-context", action="store_true", help="send no notebook or variable context")
    @argument("command", nargs="*", help="status | start | stop (line magic)")
    @line_cell_magic
    def codestral(self, line: str, cell: str | None = None) -> None:
        """Ask Codestral; the answer streams into the output."""
        if cell is None and line.split()[:1] == ["pull"]:
            return self._pull(line.split()[1:])
        args = self._parse(line)
        if cell is None:
            return self._command(args.command, replace=args.replace)
        if args.command:
            raise UsageError(
                f"Unexpected words after %%codestral: {' '.join(args.command)}. {HELP}"
            )
        if not cell.strip():
            raise UsageError(
                "The cell is empty: write an instruction (or code with <FILL>) below %%codestral."
            )
        if args.max_tokens is not None and args.max_tokens < 1:
            raise UsageError(f"--max-tokens must be at least 1, got {args.max_tokens}.")
        return self._generate(args, cell)

    def _parse(self, line: str) -> Any:
        try:
            return parse_argstring(self.codestral, line)
        except UsageError as exc:
            if "unrecognized arguments" not in str(exc):
                raise
            raise UsageError(f"{exc}. {_valid_options(self.codestral.parser, line)}") from None

    def _generate(self, args: Any, cell: str) -> None:
        params = Sampling(
            max_tokens=args.max_tokens or self.max_tokens,
            temperature=self.temperature if args.temperature is None else args.temperature,
            stop=args.stop,
            random_seed=args.seed,
        )
        policy = self._notebook_policy()
        mode, placement = choose(args, hints=policy.hints)
        if policy.hints:
            params = params.replace(max_tokens=min(params.max_tokens, HINTS_CHAT_MAX_TOKENS))
        ask = mode.build(cell, self._notebook(use_context=not args.no_context))
        live = self._live_output(as_code=mode.as_code, around=ask.around)

        def request(target: Target):
            if ask.fim:
                return target.fim(*ask.fim, params)
            return target.chat(ask.messages, params)

        text, interrupted = self.link.ask(request, live)
        result = ask.result(text)
        if args.name:
            self.shell.user_ns[args.name] = result
        if placement != "output":
            self.shell.set_next_input(result, replace=placement == "replace")
        if interrupted:
            raise KeyboardInterrupt

    def _live_output(self, *, as_code: bool, around: tuple[str, str]) -> LiveOutput:
        """The cell's output, showing at once that the request is on its way."""
        in_place = self.output == "display" or (
            self.output == "auto" and getattr(self.shell, "kernel", None) is not None
        )
        live = LiveOutput(
            as_code=as_code, in_place=in_place, interval=self.update_interval, around=around
        )
        live.waiting()
        return live

    def _command(self, words: list[str], replace: bool = False) -> None:
        if replace and words != ["fix"]:
            raise UsageError("--replace goes with %%codestral (a cell) or %codestral fix.")
        if not words:
            print(HELP)
        elif words == ["fix"]:
            self._fix(replace)
        elif words == ["status"]:
            print(self.link.status())
        elif words == ["start"]:
            self.link.connect()
            print(self.link.status())
        elif words == ["stop"]:
            print(self.link.stop())
        else:
            raise UsageError(f"Unknown command: %codestral {' '.join(words)}\n\n{HELP}")

    def _notebook_policy(self) -> NotebookPolicy:
        """The notebook's teaching switches; a UsageError where they turn Codestral off."""
        policy = kernel_notebook_policy()
        if refusal := policy.refusal():
            raise UsageError(refusal)
        return policy

    def _notebook(self, use_context: bool = True) -> Notebook:
        """What a request may read: the namespace, the history, the budgets and where the
        project context may read files (nowhere when it is off)."""
        roots = project_roots(os.getcwd(), tuple(self.project_dirs)) if self.project_context else ()
        return Notebook(
            self.shell.user_ns,
            self.history_chars,
            self.variables_chars,
            use_context,
            self.project_chars,
            roots,
        )

    def _fix(self, replace: bool) -> None:
        """Stream a corrected version of the last failed cell, then show it as a diff (in the
        teaching hints mode: an explanation of the error instead)."""
        explain = self._notebook_policy().hints
        failed = self.failures.last
        if failed is None:
            raise UsageError(
                "No cell has failed in this kernel yet: run the cell that raises an error, "
                "then `%codestral fix`."
            )
        live = self._live_output(as_code=not explain, around=("", ""))
        params = Sampling(
            max_tokens=EXPLAIN_TOKENS if explain else self.max_tokens, temperature=0.0
        )
        live_facts = facts(failed.names(), dict(self.shell.user_ns))
        project = self._notebook().project_header(" ".join(failed.names()))
        messages = fix_messages(failed, live_facts, project=project, explain=explain)
        text, interrupted = self.link.ask(lambda target: target.chat(messages, params), live)
        if explain:
            if interrupted:
                raise KeyboardInterrupt
            return
        proposal = clean_proposal(text)
        changes = diff(failed.source, proposal)
        if live.in_place:
            display(Markdown(f"```diff\n{changes}\n```"))
        else:
            print(changes)
        if replace and not interrupted:
            self.shell.set_next_input(proposal, replace=True)
        if interrupted:
            raise KeyboardInterrupt

    def _pull(self, words: list[str]) -> None:
        from codestral_engine import download

        parser = _PullParser(prog="%codestral pull")
        download.add_pull_arguments(parser)
        try:
            args = parser.parse_args(words)
        except SystemExit:  # --help: argparse printed it
            return
        try:
            download.pull_command(args, ask=input)  # a notebook asks in an input box
        except EngineError as exc:
            raise UsageError(str(exc)) from exc
