"""What `%codestral status` prints: where the model runs, its state and speed, in a few lines."""

from __future__ import annotations

from typing import Any

from codestral_engine import is_demo_model

DEMO_NOTE = (
    "demo model (random weights): its output is gibberish. `%codestral pull` downloads "
    "Codestral; then `%codestral stop` and run again."
)


def describe(description: str, status: dict[str, Any]) -> str:
    """`status` (our engine's status route, a remote server's, or the in-process engine's) for
    the target `description` names."""
    lines = [f"Codestral: {description}"]
    if status.get("url"):  # a remote server: what it said, or why it could not
        lines.append(f"  model {status['model']}, state {status['state']}")
        if status.get("error"):
            lines.append(f"  {status['error']}")
        if status.get("served_models"):
            lines.append(f"  the server serves: {', '.join(status['served_models'])}")
        if status.get("classroom"):  # the course's JupyterHub service
            mode = status["classroom"].get("mode", "?")
            lines.append(f"  the course's Codestral service (JupyterHub); your mode: {mode}")
    elif "model" in status:
        lines.append(
            f"  model {status['model']} ({status.get('layout', '?')} layout, "
            f"{status.get('backend', '?')} backend), state {status['state']}"
        )
        if is_demo_model(str(status["model"])):
            lines.append(f"  {DEMO_NOTE}")
    if status.get("memory_bytes"):
        lines.append(
            f"  memory {status['memory_bytes'] / 1e6:.0f} MB, queue {status.get('queue_length', 0)}"
        )
    last = status.get("last_request") or {}
    if last.get("time_to_first_token_s") is not None:
        rate = last.get("decode_tokens_per_s") or 0
        prompt = f"{last.get('prompt_tokens', 0)} prompt tokens"
        if "cached_prompt_tokens" in last:  # only our engine reports its cache
            prompt = f"{last['cached_prompt_tokens']} of {prompt} cached"
        lines.append(
            f"  last request: first token after {last['time_to_first_token_s'] * 1000:.0f} ms, "
            f"{rate:.1f} tokens/s, {prompt}"
        )
    return "\n".join(lines)
