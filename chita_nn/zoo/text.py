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


def token_segments(tokenizer, text, n_segments, length, *, skip=0):
    """``n_segments`` consecutive, non-overlapping segments of ``length`` tokens of ``text`` (after the first
    ``skip`` tokens), as a tensor ``(n_segments, length)``; a ``ValueError`` if the text is too short."""
    ids = tokenizer(text, return_tensors="pt").input_ids[0][skip:]
    need = n_segments * length
    if len(ids) < need:
        raise ValueError(f"calibration text has {len(ids)} tokens after the first {skip}, fewer than "
                         f"{n_segments} segments x {length} tokens = {need}")
    return ids[:need].reshape(n_segments, length)


def segment_batches(segments, batch_size):
    """Dict batches (``input_ids``, ``attention_mask``) of ``batch_size`` segments."""
    return [{"input_ids": chunk, "attention_mask": torch.ones_like(chunk)} for chunk in segments.split(batch_size)]
