import pickle

from gym_nemo.core.spaces import UnicodeText


def test_contains_any_unicode_string_up_to_max_length() -> None:
    space = UnicodeText(20)
    for text in ["", "hello world", "a\nb\tc", "中文 😀", "\x00nul", "x" * 20]:
        assert space.contains(text), text
    assert not space.contains("x" * 21)
    assert not space.contains(b"bytes")
    assert not space.contains(3)


def test_sample_is_seeded_and_inside_the_space() -> None:
    a, b = UnicodeText(1000, seed=7), UnicodeText(1000, seed=7)
    samples = [a.sample() for _ in range(20)]
    assert samples == [b.sample() for _ in range(20)]
    assert all(a.contains(s) for s in samples)
    assert max(len(s) for s in samples) <= 256


def test_pickles_and_compares() -> None:
    space = UnicodeText(100, min_length=1)
    clone = pickle.loads(pickle.dumps(space))
    assert clone == space and clone != UnicodeText(100)
    assert clone.contains("ok")
