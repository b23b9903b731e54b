"""What `%codestral status` prints: where the model runs, its state and speed, in a few lines."""

from __future__ import annotations

from codestral_engine import is_demo_model

from ..client.status import Status

DEMO_NOTE = (
    "demo model (random weights): its output is gibberish. `%codestral pull` downloads "
    "Codestral; then `%codestral stop` and run again."
)


def describe(description: str, status: Status) -> str:
    """`status` (our engine's status route, a remote server's, or the in-process engine's) for
    the target `description` names."""
    lines = [f"Codestral: {description}"]
    if status.url:  # a remote server: what it said, or why it could not
        lines.append(f"  model {status.model}, state {status.state}")
        if status.error:
            lines.append(f"  {status.error}")
        if status.served_models:
            lines.append(f"  the server serves: {', '.join(status.served_models)}")
        if status.classroom:  # the course's JupyterHub service
            lines.append(
                f"  the course's Codestral service (JupyterHub); your mode: {status.classroom.mode}"
            )
    elif status.model is not None:
        lines.append(
            f"  model {status.model} ({status.layout or '?'} layout, "
            f"{status.backend or '?'} backend), state {status.state}"
        )
        if is_demo_model(status.model):
            lines.append(f"  {DEMO_NOTE}")
    if status.memory_bytes:
        lines.append(
            f"  memory {status.memory_bytes / 1e6:.0f} MB, queue {status.queue_length or 0}"
        )
    last = status.last_request
    if last is not None and last.time_to_first_token_s is not None:
        rate = last.decode_tokens_per_s or 0
        prompt = f"{last.prompt_tokens} prompt tokens"
        if last.cached_prompt_tokens is not None:  # only our engine reports its cache
            prompt = f"{last.cached_prompt_tokens} of {prompt} cached"
        lines.append(
            f"  last request: first token after {last.time_to_first_token_s * 1000:.0f} ms, "
            f"{rate:.1f} tokens/s, {prompt}"
        )
    return "\n".join(lines)
