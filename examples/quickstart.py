"""Quickstart: one CodeExec episode by hand, then a batch of verified rollouts.

python examples/quickstart.py
"""

import json

import gymnasium as gym

import gym_nemo
from gym_nemo.envs.code_exec import CodeExecEnv
from gym_nemo.policies import ReferencePolicy
from gym_nemo.rollout import collect_rollouts

# One episode: a tool call, then a final answer that the hidden tests score.
env = gym.make("nemo/CodeExec-v0")
obs, info = env.reset(seed=0)
print(f"task {info['task_id']}, tools: {[t['function']['name'] for t in info['tools']]}")

call = {"name": "execute_python", "arguments": {"code": "print(6 * 7)"}}
obs, reward, terminated, truncated, info = env.step(f"<tool_call>{json.dumps(call)}</tool_call>")
print(f"tool result: {obs!r}  reward={reward}")

answer = "Here is my solution:\n" + env.unwrapped.task.reference  # the canonical solution, for the demo
obs, reward, terminated, truncated, info = env.step(answer)
print(f"{obs}  reward={reward} terminated={terminated} fraction={info['verdict']['fraction']}")
env.close()

# A batch: 4 async envs, the embedded reference policy with 30% corrupted answers.
if __name__ == "__main__":
    envs = gym_nemo.make_vec("nemo/CodeExec-v0", num_envs=4)
    policy = ReferencePolicy(CodeExecEnv.load_tasks(), corrupt_rate=0.3, seed=0)
    records, summary = collect_rollouts(envs, policy, 16, env_id="nemo/CodeExec-v0", progress=False)
    envs.close()
    print(summary.format())
