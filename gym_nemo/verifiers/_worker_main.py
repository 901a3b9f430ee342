"""The verifier worker process: checks that must be bounded in time run here, one request at a time.

Started by :class:`gym_nemo.verifiers.worker.VerifierWorker` as ``python -P _worker_main.py MEMORY_MB`` (a
file path, so it imports only the standard library and, lazily, the checker it is asked for: math-verify or
reasoning-gym, never gym_nemo). It runs under an address-space limit with stdout and stderr sent to
/dev/null, so nothing a library prints can corrupt the protocol; the parent bounds every request in wall
time and kills the process when one overruns.

Protocol, one JSON object per line. First line written: ``{"ready": true}``. Requests: ``{"op": "load",
"handler": NAME}`` (import a checker, replied ``{"ok": true}``) or ``{"op": NAME, ...arguments}``; replies are
the handler's result dict, or ``{"error": "Type: message"}`` if it raised.

Values that plain JSON would change (tuples, sets) travel in :mod:`gym_nemo.verifiers.json_codec`'s tagged form.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import resource
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import Any


def _load_codec() -> ModuleType:
    """:mod:`gym_nemo.verifiers.json_codec`, loaded from its file beside this one: importing it by name would
    import the gym_nemo package (gymnasium, numpy, the env registry) into the worker."""
    path = Path(__file__).with_name("json_codec.py")
    spec = importlib.util.spec_from_file_location("gym_nemo_json_codec", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


from_json = _load_codec().from_json


# ---------------------------------------------------------------------------- handlers
def _load_math() -> Any:
    from math_verify import parse, verify
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig

    # NeMo Gym math_with_judge's configuration: LaTeX gold; expression or LaTeX prediction. math-verify's
    # own signal timeouts (5 s per parse and per comparison) are off: the parent bounds the whole request.
    gold_targets = (LatexExtractionConfig(),)
    pred_targets = (ExprExtractionConfig(), LatexExtractionConfig())

    def check(gold: str, pred: str) -> dict[str, Any]:
        golds = parse(gold, gold_targets, parsing_timeout=None)
        if not golds:
            raise ValueError("the expected answer could not be parsed")
        preds = parse(pred, pred_targets, parsing_timeout=None)
        reward = 1.0 if verify(golds, preds, timeout_seconds=None) else 0.0
        return {"reward": reward, "extracted": _describe(golds, preds)}

    return check


def _describe(golds: list, preds: list, seconds: int = 2) -> str | None:
    """The extracted prediction as text, as NeMo Gym reports it: the first whose text equals a gold's text,
    else the first. SymPy's printing can be slow for huge expressions, so it gets ``seconds`` (a signal alarm:
    this is the process's main thread) and gives ``None`` past that, without touching the reward."""

    def overrun(signum: int, frame: object) -> None:
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, overrun)
    signal.alarm(seconds)
    try:
        gold_texts, pred_texts = [str(g) for g in golds], [str(p) for p in preds]
    except TimeoutError:
        return None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return next((p for p in pred_texts if p in gold_texts), pred_texts[0] if pred_texts else None)


def _load_reasoning_gym() -> Any:
    import reasoning_gym

    scorers: dict[str, Any] = {}

    def score(dataset: str, config: Any, answer: str | None, entry: Any) -> dict[str, Any]:
        """The generator's own score for ``answer``; ``config`` None means the generator's default config."""
        key = json.dumps([dataset, config], sort_keys=True)
        if key not in scorers:
            if config is None:
                scorers[key] = reasoning_gym.get_score_answer_fn(dataset)
            else:
                scorers[key] = reasoning_gym.create_dataset(dataset, **from_json(config)).score_answer
        return {"reward": float(scorers[key](answer=answer, entry=from_json(entry)))}

    return score


LOADERS = {"math": _load_math, "reasoning_gym": _load_reasoning_gym}


def main() -> None:
    memory_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    # The protocol goes to a private copy of stdout; fd 1 and 2 go to /dev/null for everything else.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    logging.disable(logging.CRITICAL)
    handlers: dict[str, Any] = {}
    out.write(json.dumps({"ready": True}) + "\n")

    for line in sys.stdin:
        try:
            request = json.loads(line)
            op = request.pop("op")
            name = request.pop("handler") if op == "load" else op
            if name not in handlers:
                handlers[name] = LOADERS[name]()
            reply = {"ok": True} if op == "load" else handlers[name](**request)
        except BaseException as exc:  # MemoryError, RecursionError and library timeouts included
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            reply = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        out.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
