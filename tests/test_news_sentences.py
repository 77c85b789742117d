"""The everyday-English sentence sets of benchmarks/minilm.py --text news: disjoint, deterministic, by story."""
import importlib.util

import pytest

from chita_nn.zoo.text import news_sentences


def test_stories_dealt_in_turn_and_interleaved(tmp_path):
    stories = [f"Story {i} opens with six words here. Story {i} then adds a second sentence. Too short. "
               f"Story {i} ends on the same six words." for i in range(8)]
    stories[5] = "Story 1 opens with six words here. Story five has one sentence of its own."  # a repeat of story 1
    path = tmp_path / "stories.cor"
    path.write_text("\n".join(stories) + "\n", encoding="utf-8")
    calibration, validation, evaluation = news_sentences(path)
    assert calibration == ["Story 0 opens with six words here.", "Story 4 opens with six words here.",
                           "Story 0 then adds a second sentence.", "Story 4 then adds a second sentence.",
                           "Story 0 ends on the same six words.", "Story 4 ends on the same six words."]
    assert validation[:2] == ["Story 1 opens with six words here.", "Story 1 then adds a second sentence."]
    assert "Story five has one sentence of its own." in validation
    assert {s.split()[1] for s in evaluation} == {"2", "3", "6", "7"}
    assert news_sentences(path) == (calibration, validation, evaluation)


@pytest.mark.skipif(importlib.util.find_spec("gensim") is None, reason="the Lee corpus ships with gensim")
def test_lee_corpus_sets():
    sets = news_sentences()
    assert [len(part) >= n for part, n in zip(sets, (128, 128, 512))] == [True, True, True]
    assert sum(map(len, sets)) == len(set().union(*sets))  # disjoint, no duplicates
    assert all(6 <= len(s.split()) <= 40 for part in sets for s in part)
    assert news_sentences() == sets
