"""The integral alone, on analytic functions (no model, no TensorFlow graph): PAIR saliency's
style of check, y = [5x, y^2, sin z], where integrated gradients has a closed form."""
import numpy as np
import pytest

from tig.ig import RULES, integrate, quadrature, weighted_gradient_sum


def analytic(points):
    """dF/dx of F(x, y, z) = 5x + y^2 + sin z, at points [..., 3]."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return np.stack([np.full_like(x, 5.0), 2 * y, np.cos(z)], axis=-1)


def exact(point, baseline):
    """Integrated gradients of F in closed form: each term depends on one coordinate only."""
    (x, y, z), (x0, y0, z0) = point, baseline
    return np.array([5 * (x - x0), y ** 2 - y0 ** 2, np.sin(z) - np.sin(z0)])


@pytest.mark.parametrize("baseline", [np.zeros(3), np.array([-1.0, 0.5, 2.0])])
def test_gauss_legendre_is_exact_on_polynomials_and_converges_on_sin(baseline):
    point = np.array([0.7, -1.3, 2.4])
    for steps in (1, 2, 8):
        nodes, weights = quadrature("gausslegendre", steps)
        ig = integrate(weighted_gradient_sum(analytic), point, baseline, nodes, weights)
        np.testing.assert_allclose(ig[:2], exact(point, baseline)[:2], rtol=1e-12)   # linear integrands
    nodes, weights = quadrature("gausslegendre", 8)
    ig = integrate(weighted_gradient_sum(analytic), point, baseline, nodes, weights)
    np.testing.assert_allclose(ig, exact(point, baseline), rtol=1e-10)
    # completeness: the attributions add up to F(x) - F(x')
    f = lambda p: 5 * p[0] + p[1] ** 2 + np.sin(p[2])   # noqa: E731
    assert abs(ig.sum() - (f(point) - f(baseline))) < 1e-10


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_converges_to_the_closed_form(rule):
    point, baseline = np.array([1.5, 2.0, -0.8]), np.zeros(3)
    errors = []
    for steps in (8, 64):
        nodes, weights = quadrature(rule, steps)
        assert np.isclose(weights.sum(), 1.0) and np.all((0 <= nodes) & (nodes <= 1))
        ig = integrate(weighted_gradient_sum(analytic), point, baseline, nodes, weights)
        errors.append(np.abs(ig - exact(point, baseline)).max())
    if rule == "gausslegendre":      # exact for the polynomial terms, spectral for sin
        assert errors[1] < 1e-12
    else:                            # 8x the steps: first-order rules gain ~8x, second-order ~64x
        assert errors[0] / errors[1] > (7 if rule in ("left", "right") else 50), errors


def test_a_batch_is_integrated_text_by_text():
    points = np.random.default_rng(0).normal(size=(4, 6, 3))       # [texts, tokens, dims]
    baselines = np.zeros_like(points)
    nodes, weights = quadrature("gausslegendre", 16)
    ig = integrate(weighted_gradient_sum(analytic), points, baselines, nodes, weights)
    for text in range(4):
        for token in range(6):
            np.testing.assert_allclose(ig[text, token], exact(points[text, token], baselines[text, token]), rtol=1e-9)


def test_the_engine_gives_the_same_integral_as_the_plain_sum():
    """The engine's fused path graphs against one gradient call per node, on a real Keras model."""
    import tensorflow as tf

    from tig.embedding_split import split_at_embedding
    from tig.engine import ENGINE
    from tig.model import build_model
    model = build_model("cnn", 40, 3, embed_dim=8, hidden=8)
    ids = np.array([[5, 9, 17, 3, 0, 0], [4, 11, 0, 0, 0, 0]], np.int32)
    split = split_at_embedding(model)
    x, context, _ = split.lookup(ids)
    x0, target = np.zeros_like(x), np.array([0, 2], np.int32)

    def gradient(points):
        points = tf.constant(points.astype(np.float32))
        with tf.GradientTape() as tape:
            tape.watch(points)
            selected = tf.gather(split.head(points, context), target, axis=1, batch_dims=1)
        return tape.gradient(selected, points).numpy()
    nodes, weights = quadrature("gausslegendre", 7)
    fused = integrate(lambda *a: ENGINE.path_gradient(split, *a[:2], np.asarray(context), target, *a[2:]),
                      x, x0, nodes, weights)
    np.testing.assert_allclose(fused, integrate(weighted_gradient_sum(gradient), x, x0, nodes, weights), atol=1e-6)
