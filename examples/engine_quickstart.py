"""The engine from Python: stream a fill-in-the-middle completion, then reuse the prompt cache.

Run: python examples/engine_quickstart.py
Uses the model `codestral_engine.choose_model()` names: $CODESTRAL_MODEL (a directory or hub
id), else the release `codestral-engine pull` downloaded, else the built-in tiny random-weight
model, whose output is gibberish but exercises everything.
"""

import codestral_engine
from codestral_engine import TextDelta

model_dir = codestral_engine.choose_model().path()

prefix = "import pandas as pd\n\ndf = pd.read_csv('sales.csv')\n\ndef monthly_total(df):\n    "
suffix = "\n\nprint(monthly_total(df))\n"

with codestral_engine.load(model_dir) as engine:
    # Stream: text arrives token by token, as ghost text would.
    for event in engine.fim(prefix, suffix, max_tokens=32, stop=["\n\n"]):
        if isinstance(event, TextDelta):
            print(event.text, end="", flush=True)
        else:
            print(f"\n[{event.finish_reason}] {event.usage.completion_tokens} tokens")

    # The user types a few characters: only the new tokens are prefilled.
    again = engine.fim(prefix + "return df", suffix, max_tokens=8).result()
    usage = again.usage
    print(f"reused {usage.cached_prompt_tokens} of {usage.prompt_tokens} prompt tokens")

    # Cancel from any thread (here: stop after the first delta).
    with engine.fim(prefix, suffix, max_tokens=1000) as request:
        next(iter(request))
    print("cancelled a long request; the engine is ready for the next one")
