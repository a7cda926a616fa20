"""Character (or jieba word) tokenizer: text -> display tokens -> int32 ids, saved as JSON.

One tokenizer serves training, explanation and evaluation, so that a score always lines
up with the token a reader sees. In char mode every character of the text is exactly one
token (spaces and punctuation included); in word mode a token is a jieba word.

Reserved ids: PAD=0 (post-padding), UNK=1 (unseen or rare token), MASK=2 (the "unknown
here" token that `train.py --mask-rate` teaches and `baseline="mask"` uses).
"""
import collections
import hashlib
import json
import os
import re

import numpy as np

PAD, UNK, MASK = "<pad>", "<unk>", "<mask>"
PAD_ID, UNK_ID, MASK_ID = 0, 1, 2
RESERVED = [PAD, UNK, MASK]
FORMAT_VERSION = 1


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean_text(text):
    """Drop byte-order marks (some Weibo rows carry one mid-file) and surrounding whitespace, and
    turn control characters (newlines, tabs, ESC) into spaces: a text is one line everywhere."""
    return _CONTROL.sub(" ", text.replace("\ufeff", "")).strip()


class Tokenizer:
    def __init__(self, vocab, level="char"):
        if level not in ("char", "word"):
            raise ValueError(f"unknown tokenizer level {level!r} (use 'char' or 'word')")
        if list(vocab[:len(RESERVED)]) != RESERVED:
            raise ValueError("vocabulary must start with " + ", ".join(RESERVED))
        self.vocab = list(vocab)
        self.level = level
        self.index = {token: i for i, token in enumerate(self.vocab)}

    def __len__(self):
        return len(self.vocab)

    @classmethod
    def fit(cls, texts, level="char", min_freq=2, max_vocab=None):
        """Build the vocabulary from training texts: tokens seen >= min_freq times, most frequent first."""
        tokenizer = cls(RESERVED, level)
        counts = collections.Counter(t for text in texts for t in tokenizer.tokenize(text))
        ranked = sorted((t for t, c in counts.items() if c >= min_freq and t not in RESERVED),
                        key=lambda t: (-counts[t], t))
        if max_vocab is not None:
            ranked = ranked[:max_vocab - len(RESERVED)]
        return cls(RESERVED + ranked, level)

    def tokenize(self, text):
        """Split text into display tokens; joining them gives back the cleaned text."""
        text = clean_text(text)
        if self.level == "char":
            return list(text)
        import jieba  # imported lazily: it prints and builds a cache on first use
        jieba.setLogLevel(60)
        return jieba.lcut(text, HMM=True)

    def ids(self, tokens):
        return [self.index.get(t, UNK_ID) for t in tokens]

    def encode(self, texts, maxlen):
        """Texts -> int32 array [N, maxlen], post-padded with PAD and post-truncated."""
        out = np.full((len(texts), maxlen), PAD_ID, dtype=np.int32)
        for row, text in enumerate(texts):
            token_ids = self.ids(self.tokenize(text))[:maxlen]
            out[row, :len(token_ids)] = token_ids
        return out

    def decode(self, token_ids):
        """Ids -> tokens, stopping at the first PAD."""
        return decode_ids(self.vocab, token_ids)

    def fingerprint(self):
        """sha256 of the level and the ordered vocabulary: meta.json records it, so a tokenizer file
        that was replaced or reordered is caught at load time."""
        return hashlib.sha256(json.dumps([self.level, self.vocab], ensure_ascii=False).encode("utf-8")).hexdigest()

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT_VERSION, "level": self.level, "vocab": self.vocab},
                      f, ensure_ascii=False)

    @classmethod
    def load(cls, path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
                if not isinstance(data, dict):
                    raise ValueError(f"expected a JSON object, got a JSON {type(data).__name__}")
                if data.get("format", FORMAT_VERSION) != FORMAT_VERSION:
                    raise ValueError(f"format {data.get('format')!r}, this version reads {FORMAT_VERSION}")
                return cls(data["vocab"], data.get("level", "char"))
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path} is not a tokenizer file ({e})") from None


def decode_ids(vocab, token_ids):
    """Ids -> vocab entries, stopping at the first PAD; ids outside the vocabulary become ""."""
    tokens = []
    for i in token_ids:
        if i == PAD_ID:
            break
        tokens.append(vocab[i] if 0 <= i < len(vocab) else "")
    return tokens
