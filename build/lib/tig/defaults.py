"""Default sizes of the architectures: tig/model.py builds with them, and the command lines show them
in --help without importing TensorFlow (train.py's ARCH_DEFAULTS override them per architecture)."""

ARCHS = ("cnn", "textcnn", "bilstm", "mean", "fasttext", "transformer")
EMBED_DIM = 128
HIDDEN = 128
DROPOUT = 0.5

# integrated gradients' steps (Gauss-Legendre nodes): the API, evaluate.py and explain.py take a fixed
# number, so that a result is reproducible by its step count; the interactive commands (visualize.py,
# serve.py) take "auto": 16, 32, ... until |delta| <= 1% of |F(x) - F(x')| per text, 0.74x the time of
# 50 fixed steps (bench/bench_steps.py, RESULTS.md)
STEPS = 50
INTERACTIVE_STEPS = "auto"
