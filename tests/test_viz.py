"""Embedding pictures: PCA, the end-of-training feature plot and the checkpoint CLI."""

from __future__ import annotations

import numpy as np
from hydra import compose, initialize_config_dir

from facerec.tasks import train
from facerec.viz import main, pca
from tests.helpers import REPO
from tests.test_resume import compose_train

PNG = b"\x89PNG"


def test_pca_finds_the_direction_of_largest_variance():
    t = np.linspace(-1.0, 1.0, 50)
    points = np.stack([3 * t, 3 * t, 0.01 * np.cos(7 * t)], axis=1) + 5.0
    projected = pca(points)
    assert projected.shape == (50, 2)
    np.testing.assert_allclose(np.abs(projected[:, 0]), np.abs(3 * np.sqrt(2) * t), atol=1e-6)


def test_features2d_experiment_composes_a_2d_model_and_plot():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=features2d", "head=arcface_center"])
    assert cfg.model.embedding_size == 2
    assert cfg.callbacks.features2d._target_ == "facerec.callbacks.FeaturePlot"
    assert cfg.data.synthetic.num_identities == 10


def test_feature_plot_at_fit_end_and_viz_cli(smoke_run, data_dir, tmp_path):
    plot = tmp_path / "features.png"
    cfg = compose_train(
        tmp_path, data_dir, "experiment=smoke", "model.embedding_size=2", "trainer.max_epochs=1",
        f"+callbacks.features2d={{_target_:facerec.callbacks.FeaturePlot,path:'{plot}'}}",
    )  # fmt: skip
    train(cfg)
    assert plot.read_bytes().startswith(PNG)
    synthetic = data_dir / "synthetic_mini"
    out = tmp_path / "cli.png"
    main([str(smoke_run / "checkpoints" / "last.ckpt"), str(synthetic / "train"),
          "--heldout", str(synthetic / "heldout" / "images"), "--out", str(out)])  # fmt: skip
    assert out.read_bytes().startswith(PNG)
