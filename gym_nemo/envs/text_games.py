"""Text games from packages that run offline: TextArena's single-player games and TextWorld quests.

``nemo/TextArena-v0`` (``game="Mastermind-v0", **the game's kwargs``) plays any single-player TextArena 0.7.4
game; ``nemo/TextArena-<Game>-v0`` are the ones checked to run offline (``gym_nemo.registry.TEXTARENA_GAMES``).
Each message goes to the game as it is (the game parses its own move format, e.g. ``[A C]``; its rules for
invalid moves apply, usually: one warning, then the game ends). The reward is TextArena's, paid on the step that
ends the game (1 for a win, else the game's share of completion, -1 for repeated invalid moves in some games);
other steps pay 0. Wordle, Hangman, WordLadder and WordSearch are left out: they download NLTK's ``words``
corpus (and Wordle a POS tagger) from the internet when built, and no PyPI package ships that data.

``nemo/TextWorld-v0`` (``nb_rooms``, ``nb_objects``, ``quest_length``) generates a TextWorld 1.7 quest from the
task's seed at reset (``tw-make``'s generator and Inform 7 compiler, both inside the wheel; a few seconds per new
game) and caches the compiled game on disk by its options and seed. Each message is one command (the last
``<action>`` tag, else the first line; the interpreter's own ``save``, ``restore``, ``restart``, ``quit``,
``script`` and ``undo`` are refused, not played); the observation is the game's text and the admissible commands. The
reward is TextWorld's score change on each step (1 when the quest is done).

Both games keep their randomness per env: TextArena draws from Python's global ``random``, so each env's
generator state is swapped in around its calls (under a lock), and episodes replay exactly from their seed and
actions even with several envs in one process (see ``_OwnRandom`` for numpy).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from gym_nemo.core.env import FORMAT_PENALTY
from gym_nemo.core.task import TaskSource
from gym_nemo.envs.game import GameEnv, seed_rows, split_kwargs

DEFAULT_NUM_TASKS = 100
TEXTARENA_SYSTEM_PROMPT = (
    "You are playing a single-player game. Each turn, reply with your next move in the format the game asks for."
)
TEXTWORLD_SYSTEM_PROMPT = (
    "You are playing a text adventure. Each turn, reply with one command inside <action></action> tags, "
    "e.g. <action>go north</action> or <action>take key</action>."
)
_GLOBAL_RANDOM = threading.Lock()
_ACTION_TAG = re.compile(r"<action>(.*?)</action>", re.IGNORECASE | re.DOTALL)
#: Interpreter commands that would restart, end, save or transcribe the game instead of playing it.
_META_COMMANDS = frozenset({"save", "restore", "restart", "quit", "q", "script", "unscript", "noscript", "undo"})


def hanoi_moves(disks: int, source: str = "A", spare: str = "B", target: str = "C") -> list[str]:
    """The optimal Tower of Hanoi moves in TextArena's format (``[A C]``)."""
    if disks == 0:
        return []
    return [
        *hanoi_moves(disks - 1, source, target, spare),
        f"[{source} {target}]",
        *hanoi_moves(disks - 1, spare, source, target),
    ]


class _OwnRandom:
    """A private state of Python's global ``random`` (what TextArena's games draw from), swapped in per call.

    ``active(seed=s)`` (a reset) also seeds numpy's global generator for the call and restores it after, for the
    few games that generate their puzzle with numpy (Sokoban); numpy is not swapped on every move, as swapping
    it costs ~0.4 ms a call against ~0.05 ms for ``random``."""

    def __init__(self) -> None:
        self.state: Any = None

    @contextmanager
    def active(self, seed: int | None = None) -> Iterator[None]:
        """Swap this state in for one call (under a lock: other threads' envs wait)."""
        with _GLOBAL_RANDOM:
            saved = random.getstate()
            saved_np = np.random.get_state() if seed is not None else None
            if seed is not None:
                random.seed(seed)
                np.random.seed(seed)
            else:
                random.setstate(self.state)
            try:
                yield
            finally:
                self.state = random.getstate()
                random.setstate(saved)
                if saved_np is not None:
                    np.random.set_state(saved_np)


def _textarena_reference(game: str, env: Any, game_kwargs: Mapping[str, Any]) -> list[str] | None:
    """A winning move list for a freshly reset game whose solution is known (an oracle, for the reference policy)."""
    state = env.state.game_state
    if game == "TowerOfHanoi-v0":
        return hanoi_moves(int(game_kwargs.get("num_disks", 3)))
    if game == "Mastermind-v0":
        return [f"[{' '.join(str(d) for d in state['secret_code'])}]"]
    if game == "GuessTheNumber-v0":
        return [f"[{state['game_number']}]"]
    if game == "Sudoku-v0":
        board = env.game_board
        return [f"[{r + 1} {c + 1} {env.full_grid[r][c]}]" for r in range(9) for c in range(9) if board[r][c] == 0]
    return None


class TextArenaEnv(GameEnv):
    """One single-player TextArena game; see the module docstring."""

    verifier_name = "textarena"
    verifier_version = "0.7.4"
    default_system_prompt = TEXTARENA_SYSTEM_PROMPT

    def __init__(
        self,
        game: str = "Mastermind-v0",
        *,
        num_tasks: int = DEFAULT_NUM_TASKS,
        format_penalty: float = FORMAT_PENALTY,
        **kwargs: Any,
    ) -> None:
        import textarena

        own, self.game_kwargs = split_kwargs(kwargs)
        self.game_id = game
        self.game = textarena.make(f"{game}-raw", **self.game_kwargs)
        self._random = _OwnRandom()
        if own.get("data") is None:
            own["data"] = textarena_rows(game, num_tasks, self.game_kwargs)
        super().__init__(reward_range=(-1.0, 1.0), format_penalty=format_penalty, **own)

    @classmethod
    def load_tasks(
        cls,
        data: Any = None,
        task_ids: Sequence[str] | None = None,
        *,
        game: str = "Mastermind-v0",
        num_tasks: int = DEFAULT_NUM_TASKS,
        **kwargs: Any,
    ) -> TaskSource:
        if data is None:
            data = textarena_rows(
                game, num_tasks, {k: v for k, v in split_kwargs(kwargs)[1].items() if k != "format_penalty"}
            )
        return super().load_tasks(data, task_ids)

    @classmethod
    def bundled_rows(cls) -> Sequence[Mapping[str, Any]]:
        return textarena_rows("Mastermind-v0", DEFAULT_NUM_TASKS, {})

    def _observations(self) -> str:
        _, messages = self.game.get_observation()
        return "\n".join(str(text) for sender, text, kind in messages if getattr(kind, "name", "") != "PLAYER_ACTION")

    def start(self, world_seed: int) -> str:
        with self._random.active(seed=world_seed):
            self.game.reset(num_players=1, seed=world_seed)
            return self._observations()

    def play(self, message: str, components: dict[str, float], info: dict[str, Any]) -> tuple[str, bool, bool]:
        with self._random.active():
            done, _ = self.game.step(message)
            reply = self._observations()
            components["world"] = 0.0
            if done:
                rewards, game_info = self.game.close()
                components["world"] = float((rewards or {}).get(0, 0.0))
                info["won"] = components["world"] >= 1.0
                reason = (game_info or {}).get(0, {}).get("reason")
                info["game_info"] = json.loads(json.dumps((game_info or {}).get(0, {}), default=repr))
                reply = f"{reply}\n[game over] {reason or ''} Reward {components['world']:g}.".strip()
        return reply, bool(done), False

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "world": f"textarena/{self.game_id}"}


_TEXTARENA_ROWS: dict[str, tuple[dict[str, Any], ...]] = {}


def textarena_rows(game: str, num_tasks: int, game_kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """Task rows for game seeds ``0..num_tasks-1`` (cached). Games whose solution is known once reset (Tower of
    Hanoi, Mastermind, GuessTheNumber, Sudoku) carry a winning move list as reference."""
    import textarena

    key = json.dumps([game, num_tasks, game_kwargs], sort_keys=True, default=repr)
    if key not in _TEXTARENA_ROWS:
        env = textarena.make(f"{game}-raw", **game_kwargs)
        references = []
        for seed in range(num_tasks):
            with _OwnRandom().active(seed=seed):
                env.reset(num_players=1, seed=seed)
                references.append(_textarena_reference(game, env, game_kwargs))
        meta = {"game_kwargs": json.loads(json.dumps(dict(game_kwargs), default=repr))}
        _TEXTARENA_ROWS[key] = seed_rows(f"textarena/{game}", f"TextArena game {game}.", num_tasks, meta, references)
    return _TEXTARENA_ROWS[key]


# ---------------------------------------------------------------------- TextWorld
def default_cache_dir() -> Path:
    """Where generated TextWorld games are kept: ``$GYM_NEMO_CACHE/textworld`` or ``~/.cache/gym_nemo/textworld``."""
    root = os.environ.get("GYM_NEMO_CACHE") or Path.home() / ".cache" / "gym_nemo"
    return Path(root) / "textworld"


class TextWorldEnv(GameEnv):
    """A TextWorld quest generated from the task's seed; see the module docstring."""

    verifier_name = "textworld"
    verifier_version = "1.7.0"
    default_system_prompt = TEXTWORLD_SYSTEM_PROMPT
    default_max_turns = 50

    def __init__(
        self,
        *,
        nb_rooms: int = 3,
        nb_objects: int = 5,
        quest_length: int = 3,
        num_tasks: int = DEFAULT_NUM_TASKS,
        cache_dir: str | Path | None = None,
        format_penalty: float = FORMAT_PENALTY,
        **kwargs: Any,
    ) -> None:
        own, extra = split_kwargs(kwargs)
        if extra:
            raise TypeError(f"unexpected arguments {sorted(extra)}")
        self.options = {"nb_rooms": nb_rooms, "nb_objects": nb_objects, "quest_length": quest_length}
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._game: Any = None
        self._score = 0
        if own.get("data") is None:
            own["data"] = textworld_rows(num_tasks, self.options)
        super().__init__(reward_range=(0.0, 1.0), format_penalty=format_penalty, **own)

    @classmethod
    def load_tasks(
        cls,
        data: Any = None,
        task_ids: Sequence[str] | None = None,
        *,
        nb_rooms: int = 3,
        nb_objects: int = 5,
        quest_length: int = 3,
        num_tasks: int = DEFAULT_NUM_TASKS,
        **kwargs: Any,
    ) -> TaskSource:
        if data is None:
            options = {"nb_rooms": nb_rooms, "nb_objects": nb_objects, "quest_length": quest_length}
            data = textworld_rows(num_tasks, options)
        return super().load_tasks(data, task_ids)

    @classmethod
    def bundled_rows(cls) -> Sequence[Mapping[str, Any]]:
        return textworld_rows(DEFAULT_NUM_TASKS, {"nb_rooms": 3, "nb_objects": 5, "quest_length": 3})

    def game_file(self, world_seed: int) -> Path:
        """The compiled game of this seed and these options, generated on first use (atomically, so envs in
        several processes can share the cache)."""
        key = hashlib.sha256(json.dumps({**self.options, "seed": world_seed}, sort_keys=True).encode()).hexdigest()[:16]
        folder = self.cache_dir / f"{world_seed}-{key}"
        if (folder / "game.z8").exists():
            return folder / "game.z8"
        import textworld
        from textworld.generator import compile_game, make_game

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=self.cache_dir, prefix=".building-"))
        try:
            options = textworld.GameOptions()
            options.seeds = world_seed
            options.nb_rooms, options.nb_objects, options.quest_length = (
                self.options["nb_rooms"],
                self.options["nb_objects"],
                self.options["quest_length"],
            )
            options.path = str(scratch / "game.z8")
            options.force_recompile = True
            compile_game(make_game(options), options)
            with contextlib.suppress(OSError):  # another process built it first: keep theirs
                scratch.rename(folder)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return folder / "game.z8"

    def _state_text(self, state: Any) -> str:
        commands = ", ".join(state["admissible_commands"] or [])
        feedback = "\n".join(line for line in state.feedback.splitlines() if not line.lstrip().startswith(">"))
        return f"{feedback.strip()}\n\nScore {state.score}/{state.max_score}. Admissible commands: {commands}."

    def start(self, world_seed: int) -> str:
        import textworld

        if self._game is not None:
            self._game.close()
        infos = textworld.EnvInfos(admissible_commands=True, score=True, max_score=True, won=True, lost=True)
        with warnings.catch_warnings():  # jericho warns that TextWorld's own games are "not fully supported"
            warnings.filterwarnings("ignore", message=".*is not fully supported.*")
            self._game = textworld.start(str(self.game_file(world_seed)), request_infos=infos)
            state = self._game.reset()
        self._score = int(state.score)
        return self._state_text(state)

    def play(self, message: str, components: dict[str, float], info: dict[str, Any]) -> tuple[str, bool, bool]:
        tags = _ACTION_TAG.findall(message)
        lines = (tags[-1] if tags else message).strip().splitlines()
        command = "".join(c for c in (lines[0] if lines else "") if c.isprintable())[:200].strip()
        if not command:
            components["format"] = -self.penalty
            return "[error] No command found. Reply with one command, e.g. <action>look</action>.", False, False
        if command.split()[0].lower() in _META_COMMANDS:
            components["format"] = -self.penalty
            return (
                f"[error] {command.split()[0]!r} is a command of the interpreter, not a move; it was not played.",
                False,
                False,
            )
        state, _, done = self._game.step(command)
        components["world"] = float(int(state.score) - self._score)
        self._score = int(state.score)
        info["command"] = command
        text = self._state_text(state)
        if done:
            info["won"] = bool(state["won"])
            outcome = "you won" if state["won"] else "you lost" if state["lost"] else "the game ended"
            return f"{text}\n\n[game over] {outcome}.", True, False
        return text, False, False

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "world": f"textworld/{json.dumps(self.options, sort_keys=True)}"}

    def close(self) -> None:
        if self._game is not None:
            self._game.close()
            self._game = None
        super().close()


def textworld_rows(num_tasks: int, options: Mapping[str, int]) -> tuple[dict[str, Any], ...]:
    """Task rows for quest seeds ``0..num_tasks-1`` with these generator options."""
    intro = "A TextWorld quest: explore, then do what the game asks."
    return seed_rows("textworld", intro, num_tasks, {"options": dict(options)})
