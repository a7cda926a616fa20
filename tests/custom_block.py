"""A user's own layer, registered the Keras way: the module tests/test_user_pipelines.py gives to
--custom-objects (the keras-io transformer example's TransformerBlock, scaled down)."""
import keras
from keras import layers


@keras.saving.register_keras_serializable(package="tig_test")
class TransformerBlock(layers.Layer):
    def __init__(self, dim=8, heads=2, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.heads = dim, heads
        self.attention = layers.MultiHeadAttention(num_heads=heads, key_dim=dim)
        self.norm = layers.LayerNormalization()

    def call(self, x):
        return self.norm(x + self.attention(x, x))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "heads": self.heads}
