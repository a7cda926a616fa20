"""KerasHub text classifiers made from config (no preset download): the BERT-family tasks that
examples/keras_hub_example.py trains and that bench/compare_captum.py and bench/shortcuts.py explain.

The tokenizer's vocabulary is [PAD] [UNK] [CLS] [SEP] [MASK] and every character of the training texts
(WordPiece on Chinese splits into characters); the backbone is tiny; the task outputs raw logits
(KerasHub's default: no activation). Needs the `hub` extra: pip install "text-integrated-gradients[hub]".
"""
FAMILIES = ("bert", "distil_bert")
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SEQUENCE = 64
DIM = 32
LAYERS = 2
EPOCHS = 3
LEARNING_RATE = 3e-3


def vocabulary(texts):
    """SPECIALS, then every character of `texts` (sorted)."""
    return SPECIALS + sorted({c for t in texts for c in t if not c.isspace()} - set(SPECIALS))


def build(vocab, classes=2, family="bert", sequence=SEQUENCE, dim=DIM, layers=LAYERS, seed=0):
    """An untrained KerasHub text classifier of `family` with its preprocessor, from config."""
    import keras
    import keras_hub
    keras.utils.set_random_seed(seed)
    models = keras_hub.models
    kinds = {"bert": (models.BertTokenizer, models.BertTextClassifierPreprocessor, models.BertBackbone,
                      models.BertTextClassifier),
             "distil_bert": (models.DistilBertTokenizer, models.DistilBertTextClassifierPreprocessor,
                             models.DistilBertBackbone, models.DistilBertTextClassifier)}
    tokenizer_cls, preprocessor_cls, backbone_cls, task_cls = kinds[family]
    tokenizer = tokenizer_cls(vocabulary=list(vocab), lowercase=False)
    preprocessor = preprocessor_cls(tokenizer, sequence_length=sequence)
    backbone = backbone_cls(vocabulary_size=len(vocab), num_layers=layers, num_heads=2, hidden_dim=dim,
                            intermediate_dim=2 * dim, max_sequence_length=sequence)
    task = task_cls(backbone, num_classes=classes, preprocessor=preprocessor)
    task.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return task


def train(texts, labels, classes=2, epochs=EPOCHS, verbose=0, vocab_texts=(), batch_size=32, **kwargs):
    """build() on the vocabulary of texts (+ vocab_texts), fitted on (texts, labels)."""
    import numpy as np
    task = build(vocabulary(list(texts) + list(vocab_texts)), classes, **kwargs)
    task.fit(x=list(texts), y=np.asarray(labels), batch_size=batch_size, epochs=epochs, verbose=verbose)
    return task
