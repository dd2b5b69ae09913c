"""Embedding pictures: PCA, the end-of-training feature plot and the checkpoint CLI."""

from __future__ import annotations

import numpy as np

from facerec.run.training import train
from facerec.viz import feature_figure, main, pca, plot_panels, project_embeddings, robust_limits
from tests.helpers import compose_config

PNG = b"\x89PNG"


def clusters_and_outliers(per_cluster: int = 100, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """3 tight clusters (norm ≈ 5, along e0, e1, e2) and 2 embeddings of norm 500 (along e3, e4), with labels.

    The outliers point where the clusters do not differ, as a blank or broken image's embedding may:
    a PCA of the raw embeddings spends both axes on them.
    """
    rng = np.random.default_rng(seed)
    clusters = [5.0 * np.eye(dim)[k] + rng.normal(0.0, 0.05, (per_cluster, dim)) for k in range(3)]
    outliers = 500.0 * np.eye(dim)[[3, 4]]
    labels = np.concatenate([np.repeat(np.arange(3), per_cluster), [3, 4]])
    return np.concatenate([*clusters, outliers]), labels


def separation(projected: np.ndarray, labels: np.ndarray) -> float:
    """Smallest distance between the 3 cluster means over the largest RMS spread of a cluster about its mean."""
    means = [projected[labels == k].mean(axis=0) for k in range(3)]
    spread = max(np.sqrt(((projected[labels == k] - means[k]) ** 2).sum(axis=1).mean()) for k in range(3))
    gaps = [np.linalg.norm(means[i] - means[j]) for i in range(3) for j in range(i + 1, 3)]
    return min(gaps) / spread


def test_pca_finds_the_direction_of_largest_variance():
    t = np.linspace(-1.0, 1.0, 50)
    points = np.stack([3 * t, 3 * t, 0.01 * np.cos(7 * t)], axis=1) + 5.0
    projected = pca(points)
    assert projected.shape == (50, 2)
    np.testing.assert_allclose(np.abs(projected[:, 0]), np.abs(3 * np.sqrt(2) * t), atol=1e-6)


def test_projection_of_normalised_embeddings_separates_clusters_despite_large_norm_outliers():
    embeddings, labels = clusters_and_outliers()
    assert separation(pca(embeddings), labels) < 3  # raw PCA: both axes go to the outliers, the clusters merge
    projected = project_embeddings(embeddings)
    assert projected.shape == (302, 2)
    assert separation(projected, labels) > 50


def test_projection_sees_only_directions():
    embeddings, _ = clusters_and_outliers(per_cluster=20)
    scales = np.random.default_rng(1).uniform(0.01, 100.0, (len(embeddings), 1))
    reference = project_embeddings(embeddings)
    rescaled = project_embeddings(embeddings * scales)
    np.testing.assert_allclose(np.abs(rescaled), np.abs(reference), atol=1e-9)  # components up to sign
    zero = project_embeddings(np.concatenate([embeddings, np.zeros((1, embeddings.shape[1]))]))
    assert np.isfinite(zero).all()


def spread_and_outliers(seed: int = 0) -> np.ndarray:
    """The quickstart's picture in 2-d: 300 points spread over ±8 and 2 outliers at x ≈ 60 and 117."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform(-8.0, 8.0, (300, 2)), [[60.0, 1.0], [117.0, -2.0]]])


def test_robust_limits_hold_the_points_not_the_outliers():
    points = spread_and_outliers()
    limits = robust_limits(points)
    assert limits.shape == (2, 2)
    inside = ((points >= limits[:, 0]) & (points <= limits[:, 1])).all(axis=1)
    assert inside.mean() >= 0.98
    assert inside[:300].all()  # no point of the spread is cut
    assert not inside[300:].any()
    assert (limits[:, 1] - limits[:, 0] < 20.0).all()  # the ±8 spread and a margin, far short of 60 and 117
    flat = robust_limits(np.zeros((5, 2)))  # no spread: still a usable, non-empty range
    assert (flat[:, 0] < 0).all() and (flat[:, 1] > 0).all()


def test_feature_figure_draws_normalised_pca_within_robust_limits():
    embeddings, labels = clusters_and_outliers()
    points = spread_and_outliers()
    figure = feature_figure([("training", embeddings, labels), ("2-d", points, np.arange(302) % 3)], "title")
    pca_axis, raw_axis = figure.axes[:2]
    assert "PCA of L2-normalised" in pca_axis.get_title()
    for axis, most in ((pca_axis, 5.0), (raw_axis, 20.0)):  # unit vectors' PCA; the ±8 spread, not x = 117
        for low, high in (axis.get_xlim(), axis.get_ylim()):
            assert high - low < most


def test_plot_panels_writes_a_png(tmp_path):
    embeddings, labels = clusters_and_outliers(per_cluster=10)
    path = plot_panels(
        [("training", embeddings, labels), ("held-out", embeddings[:, :2], labels)], tmp_path / "a" / "f.png", "t"
    )
    assert path == tmp_path / "a" / "f.png"
    assert path.read_bytes().startswith(PNG)


def test_features2d_experiment_composes_a_2d_model_and_plot():
    cfg = compose_config("experiment=features2d", "head=arcface_center")
    assert cfg.model.embedding_size == 2
    assert cfg.callbacks.features2d._target_ == "facerec.callbacks.FeaturePlot"
    assert cfg.data.synthetic.num_identities == 10


def test_feature_plot_at_fit_end_and_viz_cli(smoke_run, data_dir, tmp_path):
    plot = tmp_path / "features.png"
    cfg = compose_config(
        "experiment=smoke", "model.embedding_size=2", "trainer.max_epochs=1",
        f"+callbacks.features2d={{_target_:facerec.callbacks.FeaturePlot,path:'{plot}'}}",
        output_dir=tmp_path, data_dir=data_dir,
    )  # fmt: skip
    train(cfg)
    assert plot.read_bytes().startswith(PNG)
    synthetic = data_dir / "synthetic_mini"
    out = tmp_path / "cli.png"
    main([str(smoke_run / "checkpoints" / "last.ckpt"), str(synthetic / "train"),
          "--heldout", str(synthetic / "heldout" / "images"), "--out", str(out)])  # fmt: skip
    assert out.read_bytes().startswith(PNG)
