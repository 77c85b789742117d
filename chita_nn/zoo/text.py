"""Calibration text for language models: token segments from a text file or from CPython's documentation.

``pydoc_data/topics.py`` (the ``help()`` topics, English prose with code examples) ships with every Python,
so it is real text that needs no download.  Everyday English: the news articles of the Lee corpus (Lee,
Pincombe & Welsh, 2005; 300 Australian Broadcasting Corporation news stories) that gensim's wheel ships in
``gensim/test/test_data/lee_background.cor``, read from the installed package (``pip install gensim``; the
package is not imported) and never copied here.
"""
import importlib.util
import re
from pathlib import Path

import torch


def python_docs():
    """CPython's help topics, joined in sorted order."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return "\n\n".join(topics[key] for key in sorted(topics))


def python_docs_sentences():
    """``(first half, second half)`` of the English prose sentences of CPython's help topics (topics sorted by
    name; code, tables and fragments left out; 8 to 60 words, duplicates removed): disjoint calibration and
    evaluation sentences."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    keys = sorted(topics)
    halves = []
    for part in (keys[:len(keys) // 2], keys[len(keys) // 2:]):
        sentences = []
        for key in part:
            for paragraph in re.split(r"\n\s*\n", topics[key]):
                if paragraph.startswith(("   ", ">>>")):  # code and tables
                    continue
                for sentence in re.split(r"(?<=[.!?])\s+", " ".join(paragraph.split())):
                    words = sentence.split()
                    if 8 <= len(words) <= 60 and sentence[0].isupper() and \
                            sum(w.isalpha() for w in words) >= 0.7 * len(words):
                        sentences.append(sentence)
        halves.append(list(dict.fromkeys(sentences)))
    return halves


def lee_corpus_path():
    """The Lee corpus's file in the installed gensim (see the module); ``ModuleNotFoundError`` naming the
    install command without gensim."""
    spec = importlib.util.find_spec("gensim")
    if spec is None:
        raise ModuleNotFoundError("the news sentences are read from gensim's test data: pip install gensim")
    return Path(spec.submodule_search_locations[0]) / "test" / "test_data" / "lee_background.cor"


def news_sentences(path=None, min_words=6, max_words=40):
    """``(calibration, validation, evaluation)``: disjoint lists of the sentences of ``min_words`` to
    ``max_words`` words of a file of news stories, one a line (default: the Lee corpus, :func:`lee_corpus_path`),
    duplicates removed.  The stories are dealt in turn to the three parts (stories 0, 4, 8, ... calibration;
    1, 5, ... validation; the other half evaluation), so no story is in two parts; each part lists its stories'
    first sentences, then their second ones, and so on, so that any prefix mixes the stories."""
    path = lee_corpus_path() if path is None else Path(path)
    parts = ([], [], [])
    for index, story in enumerate(path.read_text(encoding="utf-8").splitlines()):
        sentences = re.split(r'(?<=[.!?])\s+(?=["A-Z])', " ".join(story.split()))
        parts[min(index % 4, 2)].append([s for s in sentences if min_words <= len(s.split()) <= max_words
                                         and s[0].isupper() and s[-1] in ".!?" and s.count('"') % 2 == 0])
    interleaved = []
    for stories in parts:
        rounds = max(map(len, stories), default=0)
        interleaved.append([story[i] for i in range(rounds) for story in stories if i < len(story)])
    seen = set()  # a sentence repeated across parts stays in the first only
    return tuple([s for s in part if not (s in seen or seen.add(s))] for part in interleaved)


#: Window boundaries, best first: a space between two non-space characters, where byte-level BPE (GPT-2,
#: Llama 3, SmolLM2), WordPiece and Metaspace (SentencePiece) pre-tokenizers all start a new word; the start of
#: any whitespace run after a non-space character, where byte-level BPE and WordPiece do.  Cut there, the
#: windows' token ids are those of the whole text.
_BOUNDARIES = (re.compile(r"(?<=\S) (?=\S)"), re.compile(r"(?<=\S)\s"))
#: The most characters in a window (tokenizers without a maximum length get windows of this size).
MAX_WINDOW = 1 << 16


def _windows(text, size):
    """Consecutive pieces of ``text`` of at most ``size`` characters, each cut at the last of the first kind
    of :data:`_BOUNDARIES` that it has, or after ``size`` characters where it has none."""
    start = 0
    while len(text) - start > size:
        cut = start + size
        for boundary in _BOUNDARIES:  # the lookahead of a space at start + size sees start + size + 1
            found = [m.start() for m in boundary.finditer(text, start + 1, start + size + 2)
                     if m.start() <= start + size]
            if found:
                cut = found[-1]
                break
        yield text[start:cut]
        start = cut
    yield text[start:]


def _special_ends(tokenizer):
    """``(prefix, suffix)``: the special token ids the tokenizer puts before and after a text (BOS, [CLS] /
    [SEP])."""
    plain = tokenizer("a", add_special_tokens=False).input_ids
    full = tokenizer("a").input_ids
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return full[:i], full[i + len(plain):]
    return [], []


def token_ids(tokenizer, text, limit=None):
    """The token ids of ``text`` (special tokens included), as a 1-d tensor: tokenised in windows of at most
    a quarter of the tokenizer's ``model_max_length`` characters (a token covers at least a byte, a character
    at most four: no window is longer than the model takes, and transformers does not warn), cut between words, so that the ids are those of the whole text for the
    usual tokenizers.  With ``limit``, tokenising stops once ``limit`` ids are there (the result may be
    longer)."""
    max_length = getattr(tokenizer, "model_max_length", None)
    size = max(1, min(MAX_WINDOW, (max_length - 1) // 4)) if max_length else MAX_WINDOW
    prefix, suffix = _special_ends(tokenizer)
    ids = list(prefix)
    for window in _windows(text, size):
        ids += tokenizer(window, add_special_tokens=False).input_ids
        if limit is not None and len(ids) >= limit:
            break
    else:
        ids += suffix
    return torch.tensor(ids, dtype=torch.long)


def token_segments(tokenizer, text, n_segments, length, *, skip=0):
    """``n_segments`` consecutive, non-overlapping segments of ``length`` tokens of ``text`` (after the first
    ``skip`` tokens), as a tensor ``(n_segments, length)``; a ``ValueError`` if the text is too short.  The
    text is tokenised in windows (:func:`token_ids`), only as far as needed."""
    need = n_segments * length
    ids = token_ids(tokenizer, text, limit=skip + need)[skip:]
    if len(ids) < need:
        raise ValueError(f"calibration text has {len(ids)} tokens after the first {skip}, fewer than "
                         f"{n_segments} segments x {length} tokens = {need}")
    return ids[:need].reshape(n_segments, length)


def segment_batches(segments, batch_size):
    """Dict batches (``input_ids``, ``attention_mask``) of ``batch_size`` segments."""
    return [{"input_ids": chunk, "attention_mask": torch.ones_like(chunk)} for chunk in segments.split(batch_size)]
