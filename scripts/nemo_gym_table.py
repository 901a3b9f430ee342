"""Measure gym_nemo/nemo_gym/servers.json: start every server of the installed NeMo Gym wheel and replay its
shipped example rollouts through nemo/NeMoGym-v0; classify each by what happened (see table.py).

Usage: python scripts/nemo_gym_table.py [SERVER ... | --docs]   (after `gym-nemo nemo-gym setup offline`, or with the
requirements of the servers to measure installed; writes the table in place, keeping other servers' rows)
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

import yaml

import gym_nemo  # noqa: F401  (registers the env ids)
from gym_nemo.nemo_gym import runtime
from gym_nemo.nemo_gym.server import ServerStartError, log_path, stop_server
from gym_nemo.nemo_gym.table import STATUSES, TABLE, servers
from gym_nemo.testing.nemo_gym_coverage import RecordedJudge, replay_server, replayed_as_stored, rollout_rows

TABLE_ROWS = servers()  # the cached table the env reads: updated in place as servers are measured

UNINSTALLABLE = re.compile(r"git\+|https?://|@ |tavily|torch|nemo-skills|openenv|spacy|fhaviary|rdkit|swebench")
JUDGE = re.compile(
    r"ConfigKeyError: Missing key|get_first_server_config_dict|judge_model|policy_model|create_chat_completion"
)


def config_sections(name: str) -> list[dict[str, Any]]:
    """The top-level sections of the server's ``configs/*.yaml`` (in file order; files that do not parse skipped)."""
    sections = []
    for path in sorted((runtime.server_dir(name) / "configs").glob("*.yaml")):
        try:
            conf = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            continue
        sections += [top for top in conf.values() if isinstance(top, dict)]
    return sections


def agent_max_steps(name: str) -> int | None:
    """``max_steps`` of the NeMo Gym agent that plays the server's example dataset (its first config's agent)."""
    for top in config_sections(name):
        for agent in (top.get("responses_api_agents") or {}).values():
            if isinstance(agent, dict) and isinstance(agent.get("max_steps"), int):
                return agent["max_steps"]
    return None


def model_refs(name: str) -> list[str]:
    """The server's config fields that name a model server (an LLM judge), e.g. ``judge_model_server`` (or its
    OpenAI base URL, ``judge_base_url``); none when its config turns the judge off (math_with_judge's
    ``should_use_judge: false``)."""
    refs = []
    for top in config_sections(name):
        fields = (top.get("resources_servers") or {}).get(name) or {}
        if any("use_judge" in key and value is False for key, value in fields.items()):
            return []
        for key, value in fields.items():
            if (isinstance(value, dict) and value.get("type") == "responses_api_models") or key == "judge_base_url":
                refs.append(key)
    return sorted(set(refs))


def wrong_answer_probe(name: str) -> str | None:
    """The infra error a plainly wrong final answer gets (servers that call a judge when their rule check says
    no answer with 5xx when there is none), or None when it is scored."""
    import gymnasium as gym

    env = gym.make("nemo/NeMoGym-v0", server=name, request_timeout_s=30.0)
    try:
        env.reset(seed=0)
        *_, info = env.step("I do not know.")
        return info.get("infra_error")
    finally:
        env.close()


def judge_note(refs: list[str], results: list[dict[str, Any]]) -> str:
    """What a judge server's replay with the recorded judgments says (its ``replay`` column counts those)."""
    note = f"scores with an LLM judge ({', '.join(refs)}); replayed with the judgments NeMo Gym recorded"
    missed = [i for i, r in enumerate(results) if r["judge_missed"]]
    stale = [
        i
        for i, r in enumerate(results)
        if i not in missed and r["direct"] is not None and abs(r["direct"] - r["expected"]) > 1e-6
    ]
    if missed:
        note += f"; rollout(s) {missed} store no judgment for the prompt the server asks"
    if stale:
        note += f"; the server itself scores stored rollout(s) {stale} differently from their stored reward"
    return note


def classify(name: str) -> dict[str, Any]:
    app = (runtime.server_dir(name) / "app.py").read_text()
    kind = "gymnasium" if "GymnasiumServer" in app else "verify"
    responses = [r.get("response") for r in rollout_rows(name)]
    endings = [(r.get("output") or [{}])[-1:] if isinstance(r, dict) else [] for r in responses]
    if kind == "verify" and endings and all(e and e[0].get("type") == "function_call" for e in endings):
        kind = "non_executing"  # NeMo Gym's agent verifies the model's first tool calls without running them
    reqs = runtime.requirements(name)
    bad = [r for r in reqs if UNINSTALLABLE.search(r)]
    row: dict[str, Any] = {"kind": kind, "status": "", "note": "", "replay": "", "max_steps": agent_max_steps(name)}
    TABLE_ROWS[name] = row  # the env reads max_steps from the table while the replay runs
    if not rollout_rows(name):
        row.update(status="data", note="ships no example_rollouts.jsonl")
    refs = row["judge_refs"] = model_refs(name)
    judge = RecordedJudge() if refs else None  # a judge server is replayed with the judgments NeMo Gym recorded
    log = log_path(name)
    try:
        results = replay_server(
            name, stop_on_infra_error=judge is None, request_timeout_s=30.0, start_timeout_s=60.0, judge=judge
        )
    except ServerStartError as exc:
        text = str(exc)
        missing = re.findall(r"Python module '([^']+)'", text)
        if bad:
            note = f"needs {', '.join(bad)} (from git/URLs, a web service or CUDA-sized; not installed here)"
            return {**row, "status": "internet", "note": note}
        if missing and reqs and name not in (runtime.read_stamp().get("servers") or []):
            note = f"its requirements.txt is not installed by `setup offline` (pins that clash); misses {missing[0]}"
            return {**row, "status": "broken", "note": note}
        if missing:
            note = f"imports {missing[0]}, which its requirements.txt does not list"
            return {**row, "status": "broken", "note": note}
        first = text.splitlines()[0].split(". Log ")[0]
        if JUDGE.search(text):
            return {**row, "status": "judge", "note": "its config names an LLM judge model server it looks up at start"}
        offline = re.search(
            r"URLError|Name or service|ConnectError|ConnectionError|docker|[Ss]andbox|uv is required|api_key", text
        )
        code = " ".join(p.read_text(errors="replace") for p in runtime.server_dir(name).glob("*.py"))
        if "did not answer within" in text and re.search(r"wait_for_sandbox|sandbox_url|SANDBOX", code):
            return {**row, "status": "internet", "note": "waits at start for a code-execution sandbox service"}
        return {**row, "status": "internet" if offline else "broken", "note": first[:200]}
    except (ValueError, FileNotFoundError, OSError) as exc:
        return {**row, "status": row["status"] or "data", "note": row["note"] or str(exc)[:200]}
    finally:
        server_log = log.read_text(errors="replace") if log.exists() else ""
        stop_server(name)
    if not results:
        return row
    matched = sum(replayed_as_stored(r) for r in results)
    row["replay"] = f"{matched}/{len(rollout_rows(name))}"
    if judge is not None:
        return {**row, "status": "judge", "note": judge_note(refs, results)}
    errors = [r["infra_error"] for r in results if r["infra_error"]]
    if errors and JUDGE.search(server_log):
        return {**row, "status": "judge", "note": "its /verify calls an LLM judge model server"}
    missing_fields = re.findall(r'"type":"missing","loc":\["body","(\w+)"', " ".join(errors))
    if missing_fields:
        note = f"its shipped rollouts are for task rows it does not ship (they lack {missing_fields[0]!r})"
        return {**row, "status": "data", "note": note}
    if errors:
        cause = [line for line in server_log.splitlines() if re.match(r"^\w+(\.\w+)*(Error|Exception)\b", line)]
        note = f"{errors[0][:120]} ({cause[-1][:150]})" if cause else errors[0][:200]
        return {**row, "status": "broken" if matched == 0 else "offline", "note": note}
    probe = wrong_answer_probe(name)
    if probe:
        judge = JUDGE.search(log.read_text(errors="replace") if log.exists() else "") or model_refs(name)
        note = f"a wrong answer gets an infrastructure error: {probe[:150]}"
        return {**row, "status": "judge" if judge else "broken", "note": note}
    if matched < len(results) and model_refs(name):
        refs = ", ".join(model_refs(name))
        return {**row, "status": "judge", "note": f"scores with an LLM judge ({refs}); without one it pays 0"}
    note = ""
    if matched < len(results):
        unfaithful = [
            i for i, r in enumerate(results) if r["direct"] is not None and abs(r["reward"] - r["direct"]) > 1e-6
        ]
        stale = [
            i for i, r in enumerate(results) if r["direct"] is not None and abs(r["direct"] - r["expected"]) > 1e-6
        ]
        if stale and not unfaithful:
            note = f"the server itself scores stored rollout(s) {stale} differently from their stored reward"
        elif row["kind"] == "gymnasium":
            note = "episodes are random (unseeded draws in the server: blackjack's deal, tetris's pieces)"
        else:
            agents = " ".join(p.read_text() for p in (runtime.server_dir(name) / "configs").glob("*.yaml"))
            simulated = "tool_simulation_agent" in agents
            why = "its agent simulates tool results with an LLM" if simulated else "see the note"
            note = f"replay differs from the server's own score on rollout(s) {unfaithful}: {why}"
            return {**row, "status": "judge" if simulated else "broken", "note": note}
    return {**row, "status": "offline", "note": note}


def write_docs() -> None:
    """The coverage table of docs/nemo_gym_servers.md, between its BEGIN/END TABLE markers, from servers.json."""
    docs = TABLE.parents[2] / "docs" / "nemo_gym_servers.md"
    table = json.loads(TABLE.read_text())["servers"]
    counts = {s: sum(e["status"] == s for e in table.values()) for s in STATUSES}

    def green(status: str) -> int:
        return sum(e["status"] == status and e["replay"] and e["replay"].split("/")[0] == e["replay"].split("/")[1]
                   for e in table.values())  # fmt: skip

    lines = [
        f"{len(table)} servers: "
        + ", ".join(f"{n} {STATUSES[s]}" for s, n in counts.items() if n)
        + f"; {green('offline') + green('judge')} replay every shipped rollout to its stored reward "
        + f"({green('offline')} with no judge, {green('judge')} with the judgments NeMo Gym recorded).",
        "",
        "| server | kind | status | replay | note |",
        "|---|---|---|---|---|",
    ]
    for name, e in sorted(table.items()):
        note = e["note"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {name} | {e['kind']} | {STATUSES.get(e['status'], '?')} | {e['replay']} | {note} |")
    text = docs.read_text()
    start, end = text.index("<!-- BEGIN TABLE -->") + len("<!-- BEGIN TABLE -->"), text.index("<!-- END TABLE -->")
    docs.write_text(text[:start] + "\n" + "\n".join(lines) + "\n" + text[end:])


def main(names: list[str]) -> None:
    table = json.loads(TABLE.read_text())
    for name in names or runtime.installed_servers():
        start = time.monotonic()
        try:
            row = classify(name)
        except Exception as exc:  # one server's surprise must not stop the survey
            row = {**TABLE_ROWS.get(name, {}), "status": "broken", "note": f"{type(exc).__name__}: {exc}"[:200]}
        table["servers"][name] = row
        print(f"{name:<48} {row['status']:<9} {row['replay']:<5} {time.monotonic() - start:5.1f}s {row['note'][:90]}")
        TABLE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--docs"]:
        write_docs()
    else:
        main(sys.argv[1:])
        write_docs()
