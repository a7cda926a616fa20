"""Files the commands write follow the user's umask, into folders they create."""
import os

import keras

import keras_io_example
from test_cli import in_process


def test_keras_io_example_saves_with_the_users_umask(data_dir, tmp_path, capsys, monkeypatch):
    def tiny_train(texts, labels, **kwargs):   # the tutorial's training is not what is tested here
        inputs = keras.Input(shape=(4,), dtype="int32")
        x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(10, 2)(inputs))
        return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x)), None
    monkeypatch.setattr(keras_io_example, "train", tiny_train)
    out = tmp_path / "new folder" / "m.keras"
    old = os.umask(0o022)
    try:
        result = in_process(capsys, keras_io_example.main, "--task", "hotel", "--data-dir", data_dir, "--out", str(out))
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    assert os.stat(out).st_mode & 0o777 == 0o644, oct(os.stat(out).st_mode)   # mkstemp alone gives 0600
