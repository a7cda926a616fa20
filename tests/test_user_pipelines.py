"""Pipelines as the user built them, from the command line: a keras-io-style BiLSTM trained on
pre-padded ids (keras' pad_sequences) explained with --padding pre gives the prediction of its own
pipeline; a model with a custom layer loads with --custom-objects and otherwise fails naming the
class and the flag; a --maxlen beyond a position embedding's capacity is refused before running."""
import os

import numpy as np
import pytest
import keras
from keras import layers

from test_cli import assert_clean_failure, in_process

HERE = os.path.dirname(os.path.abspath(__file__))
TEXTS = ["房间很干净服务好", "太差了不会再来", "好好好", "差差差差"]
CHARS = sorted(set("".join(TEXTS)))
VOCAB = ["[PAD]", "[UNK]"] + CHARS
L = 12


def ids_of(texts):
    index = {c: i for i, c in enumerate(VOCAB)}
    return [[index[c] for c in t] for t in texts]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    keras.utils.set_random_seed(0)
    ids_in = keras.Input((L,), dtype="int32")
    x = layers.Embedding(len(VOCAB), 8)(ids_in)
    x = layers.Bidirectional(layers.LSTM(4))(x)          # no mask: the padding side changes the output
    bilstm = keras.Model(ids_in, layers.Dense(1, activation="sigmoid")(x))
    padded = keras.utils.pad_sequences(ids_of(TEXTS * 16), maxlen=L)      # padding="pre", the default
    bilstm.compile("adam", "binary_crossentropy")
    bilstm.fit(padded, np.array([1, 0, 1, 0] * 16), epochs=5, verbose=0)
    bilstm.save(root / "bilstm.keras")

    import custom_block
    ids_in = keras.Input((None,), dtype="int32")
    x = layers.Embedding(len(VOCAB), 8)(ids_in)
    x = custom_block.TransformerBlock(8, 2)(x)
    x = layers.GlobalAveragePooling1D()(x)
    keras.Model(ids_in, layers.Dense(2, activation="softmax")(x)).save(root / "custom.keras")

    import keras_hub
    ids_in = keras.Input((None,), dtype="int32")
    x = keras_hub.layers.TokenAndPositionEmbedding(len(VOCAB), 16, 8, mask_zero=True)(ids_in)
    x = layers.GlobalAveragePooling1D()(x)
    keras.Model(ids_in, layers.Dense(2, activation="softmax")(x)).save(root / "positions.keras")
    return root, bilstm


def test_padding_pre_matches_the_models_own_pipeline(files):
    from tig.user_model import load_user_model
    from tig.ig import integrated_gradients
    root, bilstm = files
    own = np.asarray(bilstm(keras.utils.pad_sequences(ids_of(TEXTS), maxlen=L)))[:, 0]
    pre = load_user_model(str(root / "bilstm.keras"), vocab=str(root / "vocab.txt"), padding="pre")
    post = load_user_model(str(root / "bilstm.keras"), vocab=str(root / "vocab.txt"))
    ids = pre.tokenizer.encode(TEXTS, pre.maxlen)
    np.testing.assert_array_equal(ids, keras.utils.pad_sequences(ids_of(TEXTS), maxlen=L))
    ig = integrated_gradients(pre.model, ids, steps=16)
    np.testing.assert_allclose(ig.probs[:, 1], own, rtol=1e-5)
    assert np.all(ig.scores[ids == 0] == 0.0)
    post_probs = integrated_gradients(post.model, post.tokenizer.encode(TEXTS, post.maxlen), steps=4).probs[:, 1]
    assert np.abs(post_probs - own).max() > 1e-3     # the other side is another input


def test_padding_pre_keeps_the_end_of_a_long_text_as_pad_sequences_does(files):
    from tig.methods import explain_texts
    from tig.user_model import load_user_model
    root, bilstm = files
    long = "差差差差" + "房间很干净服务好" * 2          # 20 characters, L = 12
    pre = load_user_model(str(root / "bilstm.keras"), vocab=str(root / "vocab.txt"), padding="pre")
    ids = pre.tokenizer.encode([long], pre.maxlen)
    np.testing.assert_array_equal(ids, keras.utils.pad_sequences(ids_of([long]), maxlen=L))   # truncating="pre"
    result = explain_texts(pre, [long], "ig", steps=8)[0]
    assert "".join(result.tokens) == long[-L:] and result.truncated == len(long) - L
    own = float(np.asarray(bilstm(keras.utils.pad_sequences(ids_of([long]), maxlen=L)))[0, 0])
    assert result.probs[1] == pytest.approx(own, rel=1e-5)
    post = load_user_model(str(root / "bilstm.keras"), vocab=str(root / "vocab.txt"))
    assert "".join(explain_texts(post, [long], "ig", steps=8)[0].tokens) == long[:L]


def test_padding_pre_from_the_command_line(files, tmp_path, capsys):
    import visualize
    root, bilstm = files
    result = in_process(capsys, visualize.main, "--model", str(root / "bilstm.keras"), "--vocab",
                        str(root / "vocab.txt"), "--padding", "pre", "--text", TEXTS[0], "--format", "md",
                        "--out", str(tmp_path / "v"), "--steps", "8", "--classes", "neg,pos")
    assert result.returncode == 0, result.stderr
    own = float(np.asarray(bilstm(keras.utils.pad_sequences(ids_of(TEXTS[:1]), maxlen=L)))[0, 0])
    md = (tmp_path / "v" / "explanations.md").read_text(encoding="utf-8")
    predicted = "pos" if own > 0.5 else "neg"
    assert f"predicted {predicted} ({max(own, 1 - own):.1%})" in md
    assert md.count('<font color="#') == len(TEXTS[0])


def test_custom_objects_and_position_capacity(files, tmp_path, capsys):
    import visualize
    from keras.saving import get_custom_objects
    root, _ = files
    for key in [k for k in get_custom_objects() if "TransformerBlock" in k]:
        del get_custom_objects()[key]       # as in a fresh process, where nothing registered it
    common = ["--vocab", str(root / "vocab.txt"), "--text", TEXTS[0], "--format", "md", "--steps", "4"]
    assert_clean_failure(in_process(capsys, visualize.main, "--model", str(root / "custom.keras"), *common,
                                    "--out", str(tmp_path / "a")), "TransformerBlock", "--custom-objects")
    result = in_process(capsys, visualize.main, "--model", str(root / "custom.keras"), *common,
                        "--custom-objects", os.path.join(HERE, "custom_block.py"), "--out", str(tmp_path / "b"))
    assert result.returncode == 0, result.stderr
    assert_clean_failure(in_process(capsys, visualize.main, "--model", str(root / "positions.keras"), *common,
                                    "--maxlen", "64", "--out", str(tmp_path / "c")),
                         "--maxlen 64 is beyond the model's 16 positions")
    result = in_process(capsys, visualize.main, "--model", str(root / "positions.keras"), *common,
                        "--out", str(tmp_path / "d"))
    assert result.returncode == 0, result.stderr


def test_readme_own_model_section_runs_as_written(tmp_path, capsys, monkeypatch):
    """The README's "Explain your own Keras 3 model" section: its two commands make the files (here
    on 64 texts, one epoch), then its Python block runs as written and its command lines succeed
    (evaluate.py on 4 texts instead of 200)."""
    import re
    import shlex
    import evaluate
    import keras_hub_example
    import keras_io_example
    import visualize
    from conftest import ROOT, SHARED_DATA, skip_or_fail
    if not os.path.exists(os.path.join(SHARED_DATA, "ChnSentiCorp_htl_all.csv")):
        skip_or_fail("../shared/data is not present")
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme[readme.index("## Explain your own Keras 3 model"):readme.index("## Command lines")]
    blocks = re.findall(r"```(bash|python)\n(.*?)```", section, re.S)
    assert [kind for kind, _ in blocks] == ["bash", "python", "bash"]
    monkeypatch.chdir(tmp_path)
    scripts = {"examples/keras_io_example.py": keras_io_example.main, "examples/keras_hub_example.py": keras_hub_example.main,
               "visualize.py": visualize.main, "evaluate.py": evaluate.main}
    small = {"examples/keras_io_example.py": ["--limit", "64", "--epochs", "1", "--dim", "8"],
             "examples/keras_hub_example.py": ["--limit", "64", "--epochs", "1", "--dim", "8", "--layers", "1"],
             "visualize.py": ["--steps", "8", "--format", "md"], "evaluate.py": ["--steps", "8"]}

    def run_commands(block):
        for line in block.strip().splitlines():
            words = shlex.split(line.split("  #")[0])
            assert words[:1] == ["python"] and words[1] in scripts, line
            args = [SHARED_DATA if w == "DIR" else "4" if w == "200" else w for w in words[2:]] + small[words[1]]
            if words[1] == "visualize.py":
                args += ["--out", str(tmp_path / f"vis{len(os.listdir(tmp_path))}")]
            if words[1] == "evaluate.py":
                args += ["--out", str(tmp_path / "eval")]
            result = in_process(capsys, scripts[words[1]], *args)
            assert result.returncode == 0, (line, result.stderr)

    run_commands(blocks[0][1])
    exec(compile(blocks[1][1], "README.md", "exec"), {})
    run_commands(blocks[2][1])
