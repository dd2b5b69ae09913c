"""``eval.py``'s task: verify a checkpoint on pair sets and ``eval_sets``, choose a threshold, export to ONNX."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from facerec.eval.metric import VerificationResult
from facerec.eval.verification import tar_at_far, threshold_at_far
from facerec.eval_sets import check_eval_sets, run_eval_sets
from facerec.inference import FaceEmbedder
from facerec.module import FaceRecognitionModule
from facerec.run.components import instantiate_all, logged_results, verification_callback
from facerec.run.eval_options import EvalOptions, check_threshold_set, impostor_pairs, parse_eval_options
from facerec.run.export import export_checked_onnx
from facerec.run.tables import ResultTable, report

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Evaluates a checkpoint on ``data.val_sets`` and ``eval_sets``; no training data is read.

    Every option is parsed, every set's files read and every output file checked before any evaluation.
    Pair sets run through ``trainer.validate`` (exact under DDP); ``eval_sets`` on process zero's device.

    Returns:
        ``{set name: metrics}``, also printed and written to ``cfg.metrics_file``.
    """
    if not cfg.ckpt_path:
        raise ValueError("eval.py needs a checkpoint: python eval.py ckpt_path=/path/to/model.ckpt")
    options = parse_eval_options(cfg)
    model, image_size, crop = load_model_to_evaluate(cfg)
    datamodule, eval_sets = evaluation_sets(cfg, image_size, crop)
    impostors = impostor_pairs(datamodule.val_sets)
    threshold_set = check_threshold_set(options, impostors) if options.far is not None else None
    trainer = instantiate(
        cfg.trainer, callbacks=instantiate_all(cfg.get("callbacks")), logger=instantiate_all(cfg.get("logger"))
    )
    results, threshold = verify_pair_sets(trainer, model, datamodule, options, threshold_set)
    tables = [ResultTable(f"Verification of {cfg.ckpt_path}", results, impostor_pairs=impostors)]
    if eval_sets and trainer.is_global_zero:
        embedder = FaceEmbedder(model.net, image_size, crop, cfg.flip_test).to(trainer.strategy.root_device)
        loading = {"batch_size": cfg.data.get("eval_batch_size", 64), "num_workers": cfg.data.get("num_workers", 0)}
        for kind, results in run_eval_sets(eval_sets, embedder, Path(cfg.paths.output_dir), **loading).items():
            tables.append(ResultTable(kind.title, results, kind.columns))
    report(tables, cfg.metrics_file)
    if threshold is not None:
        print_threshold(threshold)
    if options.onnx is not None:
        export_checked_onnx(model, datamodule, cfg.export, flip=cfg.flip_test, crop=crop, threshold=threshold)
    return {name: metrics for table in tables for name, metrics in table.results.items()}


def load_model_to_evaluate(cfg: DictConfig) -> tuple[FaceRecognitionModule, list[int], Any]:
    """The checkpoint's model (on the CPU) and the input size and crop to evaluate it at."""
    model = FaceRecognitionModule.load_embedding_net(cfg.ckpt_path, flip_test=cfg.flip_test)
    image_size, crop = evaluation_input(cfg.data, model.hparams, cfg.ckpt_path)
    return model, image_size, crop


def evaluation_input(data: DictConfig, hparams: Mapping, ckpt_path: str | Path) -> tuple[list[int], Any]:
    """The input size and face crop to evaluate at: ``data.image_size`` / ``data.crop`` if set, else the checkpoint's.

    Evaluating at another size or crop than the training one is allowed (e.g. to measure its effect);
    a warning names both.
    """
    chosen = []
    for key, trained in (("image_size", list(hparams["input_size"])), ("crop", hparams.get("input_crop"))):
        value = data.get(key)
        value = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
        if value is not None and value != trained:
            log.warning("evaluating with data.%s=%s; %s was trained with %s", key, value, ckpt_path, trained)
        chosen.append(trained if value is None else value)
    return chosen[0], chosen[1]


def evaluation_sets(cfg: DictConfig, image_size: list[int], crop: Any) -> tuple[L.LightningDataModule, dict]:
    """The pair sets (read, so their impostor pairs can be counted) and the built and loaded ``eval_sets``.

    Raises:
        ValueError: If no set is configured, or a name is both a pair set and an ``eval_sets`` entry.
    """
    datamodule = instantiate(cfg.data, root=None, image_size=image_size, crop=crop)
    eval_sets = check_eval_sets(cfg.get("eval_sets"))
    both = sorted(set(eval_sets) & set(datamodule.val_set_paths))
    if both:
        raise ValueError(f"eval_sets and data.val_sets both name {', '.join(both)}: give each set its own name")
    if not datamodule.val_set_paths and not eval_sets:
        raise ValueError(
            "no evaluation sets configured: add data.val_sets.<name>.pairs and .images, data.val_sets.<name>.bin, "
            "+eval_set@eval_sets.ijbc=ijb eval_sets.ijbc.root=DIR or +eval_set@eval_sets.search=search "
            "eval_sets.search.gallery=DIR eval_sets.search.probe=DIR"
        )
    if datamodule.val_set_paths:
        datamodule.prepare_data()
        datamodule.setup("validate")
    return datamodule, eval_sets


def verify_pair_sets(
    trainer: L.Trainer,
    model: FaceRecognitionModule,
    datamodule: L.LightningDataModule,
    options: EvalOptions,
    threshold_set: str | None,
) -> tuple[dict[str, dict[str, float]], dict[str, Any] | None]:
    """Metrics of every pair set (``trainer.validate``), and the decision threshold if one is asked for."""
    if not datamodule.val_set_paths:
        return {}, None
    callback = verification_callback(trainer)  # fails early, naming the missing callback
    logged = trainer.validate(model, datamodule=datamodule, verbose=False)
    results = logged_results(logged, [val_set.name for val_set in datamodule.val_sets])
    if threshold_set is None:
        return results, None
    threshold = decision_threshold(callback.results, options.far, threshold_set)
    results[threshold["set"]][f"threshold@far={threshold['far']:g}"] = threshold["distance"]
    return results, threshold


def decision_threshold(
    results: Mapping[str, VerificationResult], far: float, set_name: str | None = None
) -> dict[str, Any]:
    """The decision rule for a target false accept rate, chosen on one verification set's ROC.

    Args:
        results: The verification callback's results, ``{set name: VerificationResult}``.
        far: The target false accept rate.
        set_name: The set to choose on; default the first.

    Returns:
        ``{"set", "far", "distance", "cosine", "tar"}``: "same identity" iff the squared L2 distance of the
        L2-normalised embeddings is at most ``distance`` (equivalently cosine >= ``cosine``), which accepts
        the fraction ``tar`` of the set's same pairs and at most ``far`` of its different pairs.
    """
    if not 0 < far < 1:
        raise ValueError(f"threshold_at_far={far:g}: choose a false accept rate in (0, 1), e.g. 1e-3")
    set_name = set_name or next(iter(results))
    if set_name not in results:
        raise ValueError(f"threshold_set={set_name}: no such verification set; choose one of {', '.join(results)}")
    roc = results[set_name].roc
    if roc is None:
        raise ValueError(f"verification set {set_name!r} lacks same or different pairs: no threshold can be chosen")
    distance = threshold_at_far(roc, far)
    return {
        "set": set_name,
        "far": far,
        "distance": distance,
        "cosine": 1.0 - distance / 2.0,
        "tar": tar_at_far(roc.fpr, roc.tpr, far),
    }


def print_threshold(threshold: Mapping[str, Any]) -> None:
    """Prints the decision rule of :func:`decision_threshold`."""
    print(
        f"Decision threshold at FAR <= {threshold['far']:g} on {threshold['set']}: same identity iff squared L2 "
        f"distance of the L2-normalised embeddings <= {threshold['distance']:.6g} (cosine >= "
        f"{threshold['cosine']:.6g}); TAR {threshold['tar']:.4f} there"
    )
