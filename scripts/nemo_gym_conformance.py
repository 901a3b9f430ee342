"""Regenerate tests/data/nemo_gym/conformance/*.jsonl: what NeMo Gym's real servers answer for variants of their rows.

Run it with a Python >= 3.12 that has ``nemo-gym`` installed (it is not gym_nemo's venv), from the repository root:

    PY=$(pyenv root)/versions/3.12.1/bin/python
    $PY -m venv /tmp/ng312 && /tmp/ng312/bin/pip install nemo-gym==0.4.0 math-verify==0.8.0 reasoning-gym scipy
    /tmp/ng312/bin/python scripts/nemo_gym_conformance.py [SERVER ...]      # all by default

For each family it takes the server's shipped rows (``resources_servers/<server>/data/example*.jsonl`` of the
installed wheel, copied to ``tests/data/nemo_gym/<server>/`` when missing there), builds variants of the
model's response (no ``\\boxed{}``, the answer spread over several output messages, doubled braces, extra
whitespace, wrong letters or values, the instruction fields under ``verifier_metadata``, ...), and posts each
row to the real server's ``/verify`` (its FastAPI app built from its class and config, no head server, no Ray;
a ``/seed_session`` first for the session cookie). code_gen's check is a Ray task: here the same function
(LiveCodeBench's ``check_correctness``) runs in a thread instead, without a Ray cluster. The answer (HTTP
status, reward, the server's extracted answer) is stored beside the row; ``tests/test_nemo_gym_conformance.py``
scores the same rows with gym_nemo.

Servers whose checkers cannot be installed offline are not run: instruction_following (its
``verifiable_instructions`` comes from a git URL), ifbench (a git clone plus a spaCy model from GitHub),
evalplus (downloads HumanEval+ at start). For those the stored example rollouts (NeMo Gym's own scores) are
the ground truth, plus rows whose answer NeMo Gym's request models decide before any checker runs (a 422).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "nemo_gym"
OUT = DATA / "conformance"
RUN = ("math_with_judge", "polymath", "mcqa", "math_with_code", "reasoning_gym", "code_gen")
SHIPPED = (*RUN, "instruction_following", "ifbench", "evalplus")


# ------------------------------------------------------------------------------------------------ rows
def servers_dir() -> Path:
    import resources_servers

    return Path(resources_servers.__path__[0])


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def shipped(server: str, name: str) -> list[dict[str, Any]]:
    """A shipped data file, copied verbatim into tests/data/nemo_gym/<server>/ when not there yet."""
    ours = DATA / server / name
    if not ours.exists():
        ours.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(servers_dir() / server / "data" / name, ours)
    return read_jsonl(ours)


def drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def key(row: dict[str, Any]) -> str:
    messages = row["responses_create_params"]["input"]
    return json.dumps([(m["role"], m["content"]) for m in messages], ensure_ascii=False)


def joined(server: str, rollouts: str = "example_rollouts.jsonl", tasks: str = "example.jsonl") -> list[dict]:
    """Rollout rows completed with their task row's fields (mcqa and code_gen rollouts lack them)."""
    by_key = {key(t): t for t in shipped(server, tasks)}
    rows = []
    for rollout in shipped(server, rollouts):
        rollout = {k: v for k, v in rollout.items() if not k.startswith("_ng_") and k != "agent_ref"}
        if key(rollout) not in by_key:
            print(f"{server}: a rollout matches no task row by prompt; kept as it is", file=sys.stderr)
        rows.append({**by_key.get(key(rollout), {}), **rollout})
    return rows


def message(text: str, index: int = 0) -> dict[str, Any]:
    return {
        "id": f"msg_{index}",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def response(*texts: str, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    output = [*(extra or []), *(message(t, i) for i, t in enumerate(texts))]
    return {
        "id": "resp_conformance",
        "object": "response",
        "created_at": 0,
        "model": "conformance",
        "status": "completed",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }


def task_fields(row: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The task row's fields only: what a verify request carries besides ``response``."""
    stored = {"response", "reward", "extracted_answer", "library_reward", "judge_evaluations", "accuracy"}
    stored |= {"follow_all_instructions", "follow_instruction_list", "result", "score", "task_name"}
    return {k: v for k, v in row.items() if k not in stored and k not in drop}


def all_text(resp: dict[str, Any]) -> str:
    return "".join(
        p.get("text", "") for o in resp["output"] if o.get("type") == "message" for p in o.get("content") or []
    )


REASONING = {"id": "rs_0", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Thinking."}]}


# ------------------------------------------------------------------------------------------------ variants
Case = tuple[str, dict[str, Any], dict[str, Any]]  # (name, row, env kwargs)


def math_cases(server: str) -> Iterator[Case]:
    rows = joined(server)  # math_with_judge's rollouts lack the question
    for n, row in enumerate(rows):
        base, text, expected = task_fields(row), all_text(row["response"]), str(row["expected_answer"])
        yield f"rollout-{n}", {**base, "response": row["response"]}, {}
        yield f"rollout-{n}/split-messages", {**base, "response": response(*split(text))}, {}
        yield f"rollout-{n}/reasoning-item", {**base, "response": response(text, extra=[REASONING])}, {}
        unboxed = re.sub(r"\\boxed\{", "{", text)
        yield f"rollout-{n}/no-boxed", {**base, "response": response(unboxed)}, {}
    for n, row in enumerate(rows[:3]):
        base, expected = task_fields(row), str(row["expected_answer"]).strip().strip("$")
        variants = {
            "boxed": f"The final answer is \\boxed{{{expected}}}.",
            "no-boxed-sentence": f"The final answer is {expected}.",
            "no-boxed-dollars": f"So the answer is ${expected}$",
            "doubled-braces": f"\\boxed{{{{{expected}}}}}",
            "whitespace": f"\n\n  \\boxed{{  {expected}  }}  \n",
            "boxed-then-text": f"\\boxed{{{expected}}} and then some more words",
            "wrong-value": "\\boxed{123456789}",
            "wrong-then-right": f"First \\boxed{{123456789}}, no: \\boxed{{{expected}}}",
            "right-then-wrong": f"First \\boxed{{{expected}}}, no: \\boxed{{123456789}}",
            "empty": "",
            "empty-boxed": "\\boxed{}",
            "unclosed-boxed": f"\\boxed{{{expected}",
        }
        for name, text in variants.items():
            yield f"row-{n}/{name}", {**base, "response": response(text)}, {}
        yield (
            f"row-{n}/answer-over-messages",
            {**base, "response": response("The final answer is \\boxed{", f"{expected}}}")},
            {},
        )


def split(text: str) -> list[str]:
    cut = len(text) // 2
    return [text[:cut], text[cut:]]


def mcqa_cases() -> Iterator[Case]:
    rows = joined("mcqa")
    for n, row in enumerate(rows):
        yield f"rollout-{n}", {**task_fields(row), "response": drop_nulls(row["response"])}, {}
    for n, row in enumerate(rows[:2]):
        base = task_fields(row)
        gold = row["expected_answer"]
        wrong = "A" if gold != "A" else "B"
        option_text = next(v for o in row["options"] for k, v in o.items() if k == gold)
        texts = {
            "boxed": f"Reasoning.\n\\boxed{{{gold}}}",
            "doubled-braces": f"\\boxed{{{{{gold}}}}}",
            "whitespace": f"\n\n  \\boxed{{ {gold} }}  \n\n",
            "parens": f"\\boxed{{({gold})}}",
            "text-wrapper": f"\\boxed{{\\text{{{gold}}}}}",
            "lowercase": f"\\boxed{{{gold.lower()}}}",
            "letter-and-text": f"\\boxed{{{gold}. {option_text}}}",
            "option-text": f"\\boxed{{{option_text}}}",
            "answer-colon": f"Answer: {gold}",
            "answer-colon-md": f"**Answer:** {gold}",
            "answer-colon-text": f"Answer: {option_text}",
            "answer-is": f"The answer is {gold}.",
            "wrong-letter": f"\\boxed{{{wrong}}}",
            "not-an-option": "\\boxed{Z}",
            "wrong-then-right": f"\\boxed{{{wrong}}} no wait \\boxed{{{gold}}}",
            "empty": "",
        }
        for mode in ("strict_single_letter_boxed", "lenient_boxed", "lenient_answer_colon"):
            for name, text in texts.items():
                yield f"row-{n}/{mode}/{name}", {**base, "grading_mode": mode, "response": response(text)}, {}
            yield (
                f"row-{n}/{mode}/split-messages",
                {**base, "grading_mode": mode, "response": response("Reasoning. The answer is", f" \\boxed{{{gold}}}")},
                {},
            )
        for name, text in texts.items():  # the server's config mode, which rows cannot name
            yield (
                f"row-{n}/config-md/{name}",
                {**base, "response": response(text)},
                {"grading_mode": "lenient_answer_colon_md"},
            )
    for n, row in enumerate(
        joined("mcqa", "example_rollouts_with_template_metadata.jsonl", "example_with_template_metadata.jsonl")
    ):
        base = task_fields(row, drop=("reward_profiles",))
        yield f"template-rollout-{n}", {**base, "response": drop_nulls(row["response"])}, {}
        gold = row["expected_answer"]
        wrong = "A" if gold != "A" else "B"
        template = row["template_metadata"]["template_prompt"]
        phrase = re.search(r"(Answer: \\boxed\{\{|Option Selected: |Answer: |ANSWER IS |Final Choice: )", template)
        lead = phrase.group(1).replace("{{", "{") if phrase else "Answer: "
        close = "}" if lead.endswith("{") else ""
        for name, text in {
            "template-right": f"Thinking.\n{lead}{gold}{close}",
            "template-wrong": f"Thinking.\n{lead}{wrong}{close}",
            "template-lowercase": f"{lead.lower()}{gold.lower()}{close}",
            "template-twice": f"{lead}{wrong}{close}\nActually {lead}{gold}{close}",
            "boxed-only": f"\\boxed{{{gold}}}",
            "not-an-option": f"{lead}Z{close}",
        }.items():
            yield f"template-{n}/{name}", {**base, "response": response(text)}, {}


def math_with_code_cases() -> Iterator[Case]:
    rows = joined("math_with_code")
    for n, row in enumerate(rows):
        yield f"rollout-{n}", {**task_fields(row), "response": drop_nulls(row["response"])}, {}
    for n, task in enumerate(shipped("math_with_code", "example.jsonl")[:3]):
        gold = str(task["expected_result"])
        tool = [
            {
                "type": "function_call",
                "call_id": "c1",
                "name": "execute_python",
                "arguments": "{}",
                "id": "fc1",
                "status": "completed",
            },
            {"type": "function_call_output", "call_id": "c1", "output": json.dumps({"stdout": f"\\boxed{{{gold}}}\n"})},
        ]
        texts = {
            "boxed": f"\\boxed{{{gold}}}",
            "doubled-braces": f"\\boxed{{{{{gold}}}}}",
            "whitespace": f"\\boxed{{  {gold}  }}",
            "dollars": f"\\boxed{{${gold}$}}",
            "text-wrapper": f"\\boxed{{\\text{{{gold}}}}}",
            "float": f"\\boxed{{{gold}.0}}",
            "no-boxed": f"The answer is {gold}.",
            "wrong": "\\boxed{123456789}",
        }
        for name, text in texts.items():
            yield f"row-{n}/{name}", {**task, "response": response(text)}, {}
        yield f"row-{n}/boxed-in-earlier-message", {**task, "response": response(f"\\boxed{{{gold}}}", "Done.")}, {}
        yield f"row-{n}/boxed-only-in-tool-output", {**task, "response": response("Done.", extra=tool)}, {}


def reasoning_gym_cases() -> Iterator[Case]:
    rows = joined("reasoning_gym")
    for n, row in enumerate(rows):
        yield f"rollout-{n}", {**task_fields(row), "response": drop_nulls(row["response"])}, {}
    for n, task in enumerate(shipped("reasoning_gym", "example.jsonl")[:3]):
        gold = str(task["answer"])
        texts = {
            "answer-tag": f"<answer>{gold}</answer>",
            "answer-tag-whitespace": f"<answer>\n  {gold}  \n</answer>",
            "boxed": f"\\boxed{{{gold}}}",
            "doubled-braces": f"\\boxed{{{{{gold}}}}}",
            "plain": gold,
            "plain-whitespace": f"\n\n {gold} \n",
            "wrong": "<answer>nobody</answer>",
        }
        for name, text in texts.items():
            yield f"row-{n}/{name}", {**task, "response": response(text)}, {}
        yield f"row-{n}/split-messages", {**task, "response": response("<answer>", f"{gold}</answer>")}, {}


def code_gen_cases() -> Iterator[Case]:
    rows = joined("code_gen")
    for n, row in enumerate(rows):
        yield f"rollout-{n}", {**task_fields(row), "response": drop_nulls(row["response"])}, {}
    solved = next(r for r in rows if r["reward"] == 1.0)
    base, text = task_fields(solved), all_text(solved["response"])
    code = re.findall(r"```(?:python)?\n(.*?)```", text, re.DOTALL)[-1]
    yield (
        "solved/split-code-then-prose",
        {**base, "response": response(f"```python\n{code}```", "That is my program.")},
        {},
    )
    yield "solved/prose-then-code-message", {**base, "response": response("Here it is:", f"```python\n{code}```")}, {}
    yield "solved/no-fence", {**base, "response": response(code)}, {}
    yield (
        "solved/two-blocks-broken-last",
        {**base, "response": response(f"```python\n{code}```\n```python\nprint(1/0)\n```")},
        {},
    )
    yield (
        "solved/main-guard",
        {
            **base,
            "response": response(
                f"```python\ndef main():\n{indent(code)}\nif __name__ == '__main__':\n    main()\n```"
            ),
        },
        {},
    )


def indent(code: str) -> str:
    return "\n".join("    " + line for line in code.splitlines())


def instruction_cases(server: str) -> Iterator[Case]:
    """Stored rollouts, derived variants (NeMo Gym reads ``output[-1].content[0].text``), and the row format
    with the instruction fields under ``verifier_metadata`` (NeMo Gym 0.4.0's request model needs them at the
    top level)."""
    for n, row in enumerate(shipped(server, "example_rollouts.jsonl")):
        row = {k: v for k, v in row.items() if not k.startswith("_ng_") and k != "agent_ref"}
        base = task_fields(row)
        text = row["response"]["output"][-1]["content"][0]["text"]
        yield f"rollout-{n}", {**base, "response": row["response"]}, {}
        yield f"rollout-{n}/earlier-messages", {**base, "response": response("Draft.", text, extra=[REASONING])}, {}
        meta = {k: base.pop(k) for k in ("instruction_id_list", "kwargs", "prompt", "id", "grading_mode") if k in base}
        yield f"rollout-{n}/verifier-metadata", {**base, "verifier_metadata": meta, "response": row["response"]}, {}


# ------------------------------------------------------------------------------------------------ servers
SERVERS: dict[str, tuple[str, str, str]] = {  # server -> (module, server class, config class)
    "math_with_judge": ("app", "LibraryJudgeMathResourcesServer", "LibraryJudgeMathResourcesServerConfig"),
    "polymath": ("app", "PolyMathResourcesServer", "PolyMathResourcesServerConfig"),
    "mcqa": ("app", "MCQAResourcesServer", "MCQAResourcesServerConfig"),
    "math_with_code": ("app", "PythonExecutorResourcesServer", "PythonExecutorResourcesServerConfig"),
    "reasoning_gym": ("app", "ReasoningGymResourcesServer", "ReasoningGymResourcesServerConfig"),
    "code_gen": ("app", "CompCodingResourcesServer", "CompCodingResourcesServerConfig"),
}


def build_client(server: str, **config_overrides: Any) -> Any:
    """The server's FastAPI app in a TestClient (real routes, middleware and request models)."""
    import yaml
    from fastapi.testclient import TestClient
    from nemo_gym.config_types import BaseServerConfig
    from nemo_gym.server_utils import ServerClient

    folder = servers_dir() / server
    sys.path.insert(0, str(folder))
    module = importlib.import_module(f"resources_servers.{server}.app")
    _, server_cls, config_cls = SERVERS[server]
    config_yaml = yaml.safe_load((folder / "configs" / f"{server}.yaml").read_text())
    fields = dict(config_yaml[server]["resources_servers"][server])
    fields.update(host="127.0.0.1", port=0, name=server, **config_overrides)
    config_type = getattr(module, config_cls)
    config = config_type.model_validate({k: v for k, v in fields.items() if k in config_type.model_fields})
    if server == "code_gen":  # its check runs as a Ray task; run the same function in a thread instead of a cluster
        module.check_correctness_remote = _Local(
            importlib.import_module("lcb_integration.compute_code_generation_metrics")
        )
    head = ServerClient.model_construct(
        head_server_config=BaseServerConfig(host="127.0.0.1", port=1), global_config_dict={}
    )
    app = getattr(module, server_cls)(config=config, server_client=head).setup_webserver()
    return TestClient(app)


class _Local:
    """``check_correctness_remote.remote(...)`` without Ray: LiveCodeBench's ``check_correctness`` in a thread."""

    def __init__(self, lcb: Any) -> None:
        self.lcb = lcb

    def remote(self, *args: Any) -> Any:
        return asyncio.get_running_loop().run_in_executor(None, self.lcb.check_correctness, *args)


def ask(client: Any, row: dict[str, Any]) -> dict[str, Any]:
    client.post("/seed_session", json={})
    reply = client.post("/verify", json=drop_nulls(row))
    if reply.status_code != 200:
        return {"status": reply.status_code}
    body = reply.json()
    kept = ("reward", "extracted_answer", "library_reward", "result", "follow_instruction_list", "score")
    return {"status": 200, **{k: body[k] for k in kept if k in body}}


CASES: dict[str, Callable[[], Iterator[Case]]] = {
    "math_with_judge": lambda: math_cases("math_with_judge"),
    "polymath": lambda: math_cases("polymath"),
    "mcqa": mcqa_cases,
    "math_with_code": math_with_code_cases,
    "reasoning_gym": reasoning_gym_cases,
    "code_gen": code_gen_cases,
    "instruction_following": lambda: instruction_cases("instruction_following"),
    "ifbench": lambda: instruction_cases("ifbench"),
}


def stored_answer(name: str, row: dict[str, Any], stored: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """For servers not run here: the stored rollout's score, carried to variants NeMo Gym reads alike."""
    base = name.split("/")[0]
    if name.endswith("/verifier-metadata"):
        return {"status": 422}  # decided by the request model: instruction_id_list, prompt, kwargs, id required
    return stored.get(base)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    versions = {d: metadata.version(d) for d in ("nemo-gym", "math-verify", "reasoning-gym")}
    for server in SHIPPED:
        shipped(server, "example.jsonl")
    only = set(sys.argv[1:]) or set(CASES)
    for server, make_cases in CASES.items():
        if server not in only:
            continue
        run = server in RUN
        clients: dict[str, Any] = {}
        lines = []
        stored = {}
        if not run:
            for n, row in enumerate(shipped(server, "example_rollouts.jsonl")):
                stored[f"rollout-{n}"] = {
                    "status": 200,
                    "reward": row["reward"],
                    "follow_instruction_list": row["follow_instruction_list"],
                }
        for name, row, env_kwargs in make_cases():
            if run:
                mode = env_kwargs.get("grading_mode", "")
                if mode not in clients:
                    clients[mode] = build_client(server, **({"grading_mode": mode} if mode else {}))
                answer = ask(clients[mode], row)
                source = f"nemo-gym {versions['nemo-gym']} /verify"
            else:
                answer = stored_answer(name, row, stored)
                source = (
                    "request model (422)"
                    if answer and answer["status"] == 422
                    else "stored rollout; NeMo Gym reads output[-1].content[0].text"
                )
            lines.append(
                {
                    "server": server,
                    "case": name,
                    "env_kwargs": env_kwargs,
                    "row": row,
                    "nemo_gym": answer,
                    "source": source,
                }
            )
        (OUT / f"{server}.jsonl").write_text(
            "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8"
        )
        print(f"{server}: {len(lines)} cases", flush=True)
    (OUT / "VERSIONS.json").write_text(json.dumps(versions, indent=1) + "\n")


if __name__ == "__main__":
    asyncio.set_event_loop(asyncio.new_event_loop())
    main()
