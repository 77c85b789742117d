"""Calibration text for language models: token segments from a text file or from CPython's documentation.

``pydoc_data/topics.py`` (the ``help()`` topics, English prose with code examples) ships with every Python,
so it is real text that needs no download.
"""
import re

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
