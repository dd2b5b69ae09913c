"""ROC plots, ONNX export, the printed metrics table, validation frequency and the verification callback's
error path."""

from __future__ import annotations

import json
from types import SimpleNamespace
from unittest.mock import MagicMock

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, WandbLogger

import facerec.callbacks.verification as verification_module
from facerec.callbacks import VerificationCallback
from facerec.data.verification.sets import VerificationSet
from facerec.eval.metric import VerificationResult
from facerec.eval.plots import plot_roc, save_roc
from facerec.module import FaceRecognitionModule
from facerec.run.export import check_onnx, export_onnx
from facerec.run.tables import TABLE_COLUMNS, ResultTable, report
from facerec.run.training import train
from tests.helpers import compose_config, evaluate_in_process, read_metrics


def test_plot_roc_has_a_log_far_axis_and_auc_eer_in_the_legend(tmp_path):
    far, tar = np.array([0.0, 0.0, 0.5, 1.0]), np.array([0.0, 0.5, 1.0, 1.0])
    axes = plot_roc({"lfw": (far, tar)}).axes[0]
    assert axes.get_xscale() == "log"
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["lfw (AUC 0.8750, EER 0.2500)"]
    path = save_roc(tmp_path / "sub" / "roc.png", {"lfw": (far, tar)})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_roc_rejects_bad_curves():
    with pytest.raises(ValueError, match="at least one curve"):
        plot_roc({})
    with pytest.raises(ValueError, match="curve 'lfw': \\(3,\\) FAR values for \\(2,\\) TAR values"):
        plot_roc({"lfw": (np.zeros(3), np.zeros(2))})


def tiny_set(pairs: int) -> VerificationSet:
    images = [np.zeros((4, 4, 3), np.uint8)] * (2 * pairs)
    index = np.arange(2 * pairs).reshape(pairs, 2)
    return VerificationSet("tiny", images, index, np.arange(pairs) % 2 == 0)


def test_callback_writes_the_roc_png_of_the_result_and_logs_it_only_to_wandb(tmp_path, monkeypatch):
    wandb = MagicMock(spec=WandbLogger)
    trainer = SimpleNamespace(default_root_dir=str(tmp_path), global_step=7, loggers=[CSVLogger(tmp_path), wandb])
    callback = VerificationCallback(n_folds=2)
    metric = callback.metric_for(tiny_set(4))
    metric.update(torch.randn(8, 5, generator=torch.Generator().manual_seed(0)), torch.arange(8))
    result = metric.compute()
    plotted = []

    def recording_save_roc(path, curves, title):
        plotted.append(curves)
        return save_roc(path, curves, title)

    monkeypatch.setattr(verification_module, "save_roc", recording_save_roc)
    path = callback.log_roc(trainer, "tiny", result)
    assert path == tmp_path / "roc_tiny.png" and path.is_file()
    ((far, tar),) = [curves["tiny"] for curves in plotted]
    assert far is result.roc.fpr and tar is result.roc.tpr, "the PNG draws the result's curve, not a recomputed one"
    wandb.log_image.assert_called_once_with(key="val/tiny/roc", images=[str(path)], step=7)
    assert callback.log_roc(trainer, "tiny", VerificationResult(result.metrics, None)) is None


def test_callback_names_the_set_when_it_has_fewer_pairs_than_folds():
    with pytest.raises(ValueError, match="'tiny' has 4 pairs, fewer than callbacks.verification.n_folds=10"):
        VerificationCallback(n_folds=10).metric_for(tiny_set(4))


@pytest.fixture
def smoke_model_and_data(data_dir):
    cfg = compose_config("experiment=smoke", data_dir=data_dir)
    model = instantiate(cfg.model, num_classes=4, class_names=list("abcd"), _recursive_=False)
    return model, instantiate(cfg.data, root=None)


def validate(model, datamodule, n_folds: int = 10) -> None:
    trainer = L.Trainer(
        accelerator="cpu", logger=False, callbacks=[VerificationCallback(n_folds, roc_plots=False)],
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.validate(model, datamodule=datamodule, verbose=False)


def test_embeddings_are_extracted_under_inference_mode(smoke_model_and_data, monkeypatch):
    model, datamodule = smoke_model_and_data
    modes = []
    step = model.validation_step
    monkeypatch.setattr(
        model, "validation_step", lambda *a, **k: modes.append(torch.is_inference_mode_enabled()) or step(*a, **k)
    )
    validate(model, datamodule)
    assert modes and all(modes)


def test_fewer_pairs_than_folds_reaches_the_user_through_validation(smoke_model_and_data, caplog):
    model, datamodule = smoke_model_and_data
    validate(model, datamodule, n_folds=50)  # its pairs.txt header declares 10 folds: those are used
    assert "'synthetic': scored on the 10 folds its pairs file declares" in caplog.text
    datamodule.val_sets[0].folds = None  # as an insightface .bin: no folds of its own, so n_folds applies
    with pytest.raises(ValueError, match="'synthetic' has 40 pairs, fewer than callbacks.verification.n_folds=50"):
        validate(model, datamodule, n_folds=50)


def test_onnx_export_matches_pytorch_on_another_batch_size(smoke_run, tmp_path):
    model = FaceRecognitionModule.load_from_checkpoint(smoke_run / "checkpoints" / "last.ckpt", map_location="cpu")
    path = export_onnx(model.net, tmp_path / "net.onnx", (32, 32), opset=17)
    assert check_onnx(path, model.net, torch.rand(5, 3, 32, 32) * 2 - 1) < 1e-4
    model.net.neck.features.weight.data.neg_()
    with pytest.raises(ValueError, match="differs from PyTorch by up to .* tolerance 0.0001"):
        check_onnx(path, model.net, torch.rand(3, 3, 32, 32) * 2 - 1)


def test_validation_every_n_epochs_then_after_fit_and_eval_export(data_dir, tmp_path, capsys):
    run = tmp_path / "train"
    train(
        compose_config(
            "experiment=smoke", "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2",
            "callbacks.verification.roc_plots=true", output_dir=run, data_dir=data_dir,
        )
    )  # fmt: skip
    assert (run / "roc_synthetic.png").is_file()
    evaluated = tmp_path / "eval"
    evaluate_in_process(
        "data=synthetic_mini", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        f"export.onnx={tmp_path / 'net.onnx'}", output_dir=evaluated, data_dir=data_dir,
    )  # fmt: skip
    assert read_metrics(evaluated / "metrics.json") == read_metrics(run / "metrics.json")
    assert (evaluated / "roc_synthetic.png").is_file() and (tmp_path / "net.onnx").is_file()
    assert "max abs difference to PyTorch" in capsys.readouterr().out


def test_report_prints_a_rich_table_uncut_and_writes_the_json(tmp_path, capsys):
    results = {"synthetic (raw pixels)": dict.fromkeys(TABLE_COLUMNS, 0.123456), "lfw": {"accuracy": 0.5}}
    report([ResultTable("Verification of model.ckpt", results)], str(tmp_path / "out" / "metrics.json"))
    printed = capsys.readouterr().out.splitlines()
    assert "Verification of model.ckpt" in printed[1]
    # Not a terminal: every column at full width (rich would otherwise fit 80 columns and cut cells).
    (header,) = [[cell.strip() for cell in line.split("┃")[1:-1]] for line in printed if line.startswith("┃")]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in printed if line.startswith("│")]
    assert header == ["set", *TABLE_COLUMNS]
    assert rows == [["synthetic (raw pixels)", *["0.1235"] * 7], ["lfw", "0.5000", *["nan"] * 6]]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == results
