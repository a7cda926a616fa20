"""Default sizes of the architectures: model.py builds with them, and the command lines show them
in --help without importing TensorFlow (train.py's ARCH_DEFAULTS override them per architecture)."""

ARCHS = ("cnn", "textcnn", "bilstm", "mean", "fasttext", "transformer")
EMBED_DIM = 128
HIDDEN = 128
DROPOUT = 0.5
