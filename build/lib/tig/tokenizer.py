"""Tokenizers: text -> display tokens -> int32 ids. `Tokenizer` is this project's (characters or
jieba words, saved as JSON); the others read users' models (tig/user_model.py): a vocabulary file
(VocabularyTokenizer), the model's own TextVectorization (StringInputTokenizer), a KerasHub
preprocessor (HubTokenizer).

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


# --- the tokenizers of users' models (tig/user_model.py) ----------------------------------------

UNK_NAMES = ("[UNK]", "<unk>", "<UNK>", "[unk]", "<oov>", "[OOV]")


def kept(tokens, maxlen, padding="post"):
    """The tokens a model of maxlen positions sees: the first maxlen, or with pre-padding the last
    maxlen (keras' pad_sequences pads and truncates at the start by default: it keeps a text's end)."""
    return tokens[-maxlen:] if padding == "pre" and len(tokens) > maxlen else tokens[:maxlen]


class VocabularyTokenizer:
    """A vocabulary file as a tokenizer: char level when (nearly) every token is one character,
    else words (whitespace if the text has spaces, jieba otherwise). Unknown tokens -> the
    vocabulary's UNK entry (or id 1)."""

    def __init__(self, vocab, level=None, padding="post"):
        self.vocab, self.padding = list(vocab), padding or "post"
        self.index = {}
        for i, token in enumerate(self.vocab):
            self.index.setdefault(token, i)
        body = [t for t in self.vocab[1:] if t not in UNK_NAMES]
        self.level = level or ("char" if body and sum(len(t) == 1 for t in body) >= 0.9 * len(body) else "word")
        self.unk_id = next((self.index[t] for t in UNK_NAMES if t in self.index), 1)

    def __len__(self):
        return len(self.vocab)

    def tokenize(self, text):
        text = clean_text(text)
        if self.level == "char":
            return list(text)
        if " " in text:
            return text.split()
        import jieba
        jieba.setLogLevel(60)
        return jieba.lcut(text, HMM=True)

    def encode(self, texts, maxlen):
        out = np.zeros((len(texts), maxlen), np.int32)
        for row, text in enumerate(texts):
            ids = [self.index.get(t, self.unk_id) for t in kept(self.tokenize(text), maxlen, self.padding)]
            if self.padding == "pre":      # padded at the start, as keras' pad_sequences does by default
                out[row, maxlen - len(ids):] = ids
            else:
                out[row, :len(ids)] = ids
        return out

    def decode(self, token_ids):
        return decode_ids(self.vocab, token_ids)


class StringInputTokenizer:
    """For a model that takes raw strings: its own TextVectorization layer tokenizes."""

    def __init__(self, model, vectorizer):
        self.model, self.vectorizer = model, vectorizer
        self.vocab = [str(t) for t in vectorizer.get_vocabulary()]
        self.level = "char" if vectorizer.get_config().get("split") == "character" else "word"
        try:
            self.rank = len(model.inputs[0].shape)
        except (AttributeError, IndexError, TypeError):
            self.rank = 1

    def __len__(self):
        return len(self.vocab)

    def tokenize(self, text):
        import tensorflow as tf
        ids = np.asarray(self.vectorizer(tf.constant([clean_text(text)])))[0]
        return [self.vocab[i] for i in ids if i != 0]

    def encode(self, texts, maxlen=None):
        """The model's input: a tf.string tensor of the cleaned texts shaped [N] or [N, 1] (the model
        truncates and pads; a tensor because Keras' predict refuses NumPy string arrays)."""
        import tensorflow as tf
        texts = np.asarray([clean_text(t) for t in texts], dtype=object)
        return tf.constant(texts.reshape((-1,) + (1,) * (self.rank - 1)), tf.string)

    def decode(self, token_ids):
        return VocabularyTokenizer.decode(self, token_ids)


class HubTokenizer:
    """For a KerasHub task saved with its preprocessor: the preprocessor tokenizes, pads and adds
    the special tokens; tokenize(text) gives the tokens the model sees ([CLS] ... [SEP] for BERT),
    one per position, and encode(texts) the texts themselves (the explainers preprocess them)."""

    def __init__(self, model, hub):
        self.model, self.hub = model, hub
        self.vocab = hub.vocabulary or []
        self.level = "char" if sum(len(t) == 1 for t in self.vocab) >= 0.5 * max(1, len(self.vocab)) else "word"

    def __len__(self):
        return len(self.vocab)

    def tokenize(self, text):
        ids = np.asarray(self.hub.features([clean_text(text)])["token_ids"])[0]
        real = np.flatnonzero(ids != self.hub.pad_id)
        return [self.vocab[i] if 0 <= i < len(self.vocab) else "" for i in ids[:real[-1] + 1 if len(real) else 0]]

    def encode(self, texts, maxlen=None):
        return [clean_text(t) for t in texts]

    def decode(self, token_ids):
        return VocabularyTokenizer.decode(self, token_ids)
