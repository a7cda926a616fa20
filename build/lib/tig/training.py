"""The training recipe shared by train.py and bench/bench_train.py: its defaults, the default maxlen,
the input pipeline (with MASK token dropout), the learning-rate schedule and macro-F1.
train.py shows every default in its --help; flags always win."""
import numpy as np

EPOCHS = 10
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
MIN_FREQ = 2
MAXLEN_PERCENTILE = 95
MAXLEN_CAP = 256
MASK_RATE = 0.1      # share of characters replaced by MASK in training (baseline="mask")
PATIENCE = 2
SCHEDULE = "constant"   # learning rate: constant, or cosine (decays to 0 over all --epochs' steps)
SCHEDULES = ("constant", "cosine")
# per-architecture defaults that replace the ones above (explicit flags still win)
ARCH_DEFAULTS = {
    # fastText's own shape (mean of character, bigram and trigram vectors -> softmax), trained with
    # a cosine decay; 2 x 300k n-gram rows of 40 floats keep the weights under 100 MB, and beat
    # 2 x 120k x 100 or 2 x 400k x 30 of the same size on THUCNews; 4 epochs (early stopping keeps
    # the best) because the small tasks (hotel, reviews) are still learning after 2 (RESULTS.md)
    "fasttext": {"hidden": 0, "dropout": 0.0, "mask_rate": 0.0, "embed_dim": 40, "ngram_buckets": 300_000,
                 "schedule": "cosine", "lr": 3e-3, "ngram_lr_scale": 3.0, "batch_size": 256, "epochs": 4},
}
# per-task defaults, over the ones above and under ARCH_DEFAULTS (a flag given always wins). reviews is
# the README's quick start: the fastText-style model on the first 128 characters, best on validation of
# the five recipes tried on the deduplicated split (RESULTS.md, quick start)
TASK_DEFAULTS = {
    "reviews": {"arch": "fasttext", "maxlen": 128},
}



def learning_rate(args, steps_per_epoch):
    """--lr, or a cosine decay from it to 0 over --epochs x steps_per_epoch steps."""
    if args.schedule == "constant":
        return args.lr
    import keras
    return keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=args.epochs * steps_per_epoch, alpha=0.0)


def default_maxlen(tokenizer, texts):
    lengths = [len(tokenizer.tokenize(t)) for t in texts]
    return int(min(MAXLEN_CAP, max(8, np.percentile(lengths, MAXLEN_PERCENTILE))))


def macro_f1(y_true, y_pred, num_classes):
    f1s = []
    for c in range(num_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def make_dataset(x, y, batch_size, shuffle=False, mask_rate=0.0, seed=0):
    import tensorflow as tf
    from tig.tokenizer import MASK_ID, PAD_ID
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if mask_rate > 0:
        # token dropout to a reserved MASK id: teaches the model what "unknown here" means,
        # which is the baseline integrated gradients can then start from
        def mask_tokens(ids, labels):
            drop = tf.random.uniform(tf.shape(ids)) < mask_rate
            return tf.where(drop & (ids != PAD_ID), tf.constant(MASK_ID, ids.dtype), ids), labels
        ds = ds.map(mask_tokens, num_parallel_calls=tf.data.AUTOTUNE)
    from tig.distribute import shard_by_data
    return shard_by_data(ds.prefetch(tf.data.AUTOTUNE))
